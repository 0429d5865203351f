"""The real server process: SIGTERM drains in-flight streams (up to server.drain_timeout) and SIGHUP
reloads the config without dropping them, refusing an invalid one.  The emulated backend runs in the
test's event loop; the gateway is `python -m proxy.cli serve --config ...` in a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from proxy.relay import DEPLOYMENT_HEADER
from tests.proxy.resilience_support import chat_body, closed_port_url, start_upstreams

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, port: int, urls: dict[str, str], models: list[dict], drain: float = 10.0) -> None:
    cfg = {
        "server": {"host": "127.0.0.1", "port": port, "drain_timeout": drain, "log_level": "info"},
        "backends": {name: {"provider": "openai", "base_url": url + "/v1"} for name, url in urls.items()},
        "models": models,
    }
    path.write_text(yaml.safe_dump(cfg))


class Proxy:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log


@pytest.fixture
async def serve(tmp_path):
    procs: list[Proxy] = []

    async def start(config: Path, port: int) -> Proxy:
        log = tmp_path / "proxy.log"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=log.open("wb"), env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        p = Proxy(proc, f"http://127.0.0.1:{port}", log)
        procs.append(p)
        async with aiohttp.ClientSession() as s:
            for _ in range(200):
                try:
                    async with s.get(p.url + "/health/ready") as r:
                        if r.status == 200:
                            return p
                except aiohttp.ClientConnectionError:
                    pass
                assert proc.returncode is None, log.read_text()
                await asyncio.sleep(0.05)
        raise AssertionError("the gateway did not become ready: " + log.read_text())

    yield start
    for p in procs:
        if p.proc.returncode is None:
            p.proc.kill()
            await p.proc.wait()


def free_port() -> int:
    return int(closed_port_url().rsplit(":", 1)[1])


async def read_stream(resp: aiohttp.ClientResponse, first: asyncio.Event | None = None) -> bytes:
    data = b""
    async for chunk in resp.content.iter_any():
        data += chunk
        if first is not None:
            first.set()
    return data


async def test_sigterm_drains_in_flight_streams_then_exits(aiohttp_server, serve, tmp_path):
    ups = await start_upstreams(aiohttp_server, "a")
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, port, {"a": ups["a"].url}, [{"name": "m", "backend": "a", "model": "llama::chunks=6,chunk_delay=0.15"}])
    p = await serve(config, port)
    async with aiohttp.ClientSession() as s, s.post(p.url + "/v1/chat/completions",
                                                    json=chat_body("m", stream=True)) as resp:
        first = asyncio.Event()
        reading = asyncio.ensure_future(read_stream(resp, first))
        await asyncio.wait_for(first.wait(), 5)
        p.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        # No longer accepting: a new connection is refused while the stream goes on.
        async with aiohttp.ClientSession() as fresh:
            with pytest.raises(aiohttp.ClientConnectionError):
                await fresh.get(p.url + "/health/live")
        body = await asyncio.wait_for(reading, 10)
    assert resp.status == 200
    assert body.rstrip().endswith(b"data: [DONE]")  # the stream finished completely
    assert await asyncio.wait_for(p.proc.wait(), 10) == 0


async def test_sigterm_cuts_streams_longer_than_the_drain_timeout(aiohttp_server, serve, tmp_path):
    ups = await start_upstreams(aiohttp_server, "a")
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, port, {"a": ups["a"].url},
                 [{"name": "m", "backend": "a", "model": "llama::chunks=40,chunk_delay=0.2"}], drain=0.5)
    p = await serve(config, port)
    async with aiohttp.ClientSession() as s, s.post(p.url + "/v1/chat/completions",
                                                    json=chat_body("m", stream=True)) as resp:
        first = asyncio.Event()
        reading = asyncio.ensure_future(read_stream(resp, first))
        await asyncio.wait_for(first.wait(), 5)
        t0 = asyncio.get_running_loop().time()
        p.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(p.proc.wait(), 10) == 0
        took = asyncio.get_running_loop().time() - t0
        try:
            body = await asyncio.wait_for(reading, 5)
        except aiohttp.ClientPayloadError:
            body = b""
    assert took < 3.0  # drain_timeout (0.5 s) + cancellation, not the stream's 8 s
    assert not body.rstrip().endswith(b"data: [DONE]")
    # The cancelled stream's upstream connection was closed with the pools.
    for _ in range(100):
        if ups["a"].in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert ups["a"].in_flight == 0


async def test_sighup_reloads_without_dropping_in_flight_and_refuses_a_bad_config(aiohttp_server, serve, tmp_path):
    ups = await start_upstreams(aiohttp_server, "a", "b")
    urls = {"a": ups["a"].url, "b": ups["b"].url}
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, port, urls, [{"name": "m", "backend": "a", "model": "one::chunks=8,chunk_delay=0.15"}])
    p = await serve(config, port)
    async with aiohttp.ClientSession() as s:
        async with s.post(p.url + "/v1/chat/completions", json=chat_body("m", stream=True)) as old_stream:
            first = asyncio.Event()
            reading = asyncio.ensure_future(read_stream(old_stream, first))
            await asyncio.wait_for(first.wait(), 5)

            write_config(config, port, urls, [{"name": "m", "backend": "b", "model": "two"},
                                              {"name": "n", "backend": "b", "model": "three"}])
            p.proc.send_signal(signal.SIGHUP)
            for _ in range(100):  # until the new config serves model n
                async with s.post(p.url + "/v1/chat/completions", json=chat_body("n")) as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.05)
            assert r.status == 200 and r.headers[DEPLOYMENT_HEADER] == "b/three"
            async with s.post(p.url + "/v1/chat/completions", json=chat_body("m")) as r:
                assert r.status == 200 and r.headers[DEPLOYMENT_HEADER] == "b/two"

            body = await asyncio.wait_for(reading, 10)  # the stream begun before the reload finishes
            assert old_stream.headers[DEPLOYMENT_HEADER] == "a/one::chunks=8,chunk_delay=0.15"
            assert body.rstrip().endswith(b"data: [DONE]")

        # An invalid config is refused with a log line; the running one stays.
        config.write_text(yaml.safe_dump({"backends": {}, "models": [{"name": "m", "backend": "nowhere"}]}))
        p.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if b"config reload refused" in p.log.read_bytes():
                break
            await asyncio.sleep(0.05)
        assert b"config reload refused" in p.log.read_bytes()
        assert b"nowhere" in p.log.read_bytes()  # the log line names the problem
        async with s.post(p.url + "/v1/chat/completions", json=chat_body("n")) as r:
            assert r.status == 200 and r.headers[DEPLOYMENT_HEADER] == "b/three"
        async with s.get(p.url + "/health/ready") as r:
            assert r.status == 200 and set((await r.json())["backends"]) == {"a", "b"}
    p.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(p.proc.wait(), 10) == 0
