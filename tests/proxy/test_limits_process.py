"""Exactness under real concurrency: 50 requests at once against `rpm: 10` admit exactly 10, and
the backend sees exactly 10 -- on one worker and on `--workers 2` (SQLite file and Redis), and on
two gateway processes sharing one Redis (two replicas).  Real `llm-proxy serve` processes; the
backend is the OpenAI emulator (in this test's loop) with a request counter in front."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from loadtest.emulators import openai as openai_emulator
from tests.redis_support import free_port

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-exact-0123456789"
PROBE = "sk-probe-0123456789"  # shows which config a worker runs (its rpm follows the other key's)
N, RPM = 50, 10


@pytest.fixture
async def counting_backend(aiohttp_server):
    seen = {"chat": 0}

    @web.middleware
    async def count(request, handler):
        if request.path.endswith("/chat/completions"):
            seen["chat"] += 1
        return await handler(request)

    app = openai_emulator.create_app()
    app.middlewares.append(count)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), seen


@pytest.fixture
async def gateways(tmp_path):
    procs: list[asyncio.subprocess.Process] = []
    started: dict[int, tuple] = {}

    async def start(backend: str, state_url: str, workers: int, rpm: int = RPM) -> str:
        port = free_port()
        cfg = tmp_path / f"gw-{port}.yaml"
        cfg.write_text(yaml.safe_dump(config(backend, state_url, port, workers, rpm)))
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | {"PYTHONPATH": str(ROOT)}
        log = (tmp_path / f"gw-{port}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "proxy.cli", "serve", "--config", str(cfg),
                                                    cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=log)  # fmt: skip
        procs.append(proc)
        started[port] = (proc, cfg)
        url = f"http://127.0.0.1:{port}"
        await wait_for_workers(url, workers, proc, tmp_path / f"gw-{port}.log")
        return url

    start.started = started
    yield start
    for p in procs:
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            await asyncio.wait_for(p.wait(), 15)
        except TimeoutError:
            p.kill()
            await p.wait()


def config(backend: str, state_url: str, port: int, workers: int, rpm: int = RPM) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": port, "workers": workers, "log_level": "warning"},
        "state": {"url": state_url, "timeout": 2.0},
        "backends": {"emu": {"provider": "openai", "base_url": backend + "/v1"}},
        "models": [{"name": "m", "backend": "emu"}],
        "auth": {"keys": [{"key": KEY, "name": "exact", "rpm": rpm},
                          {"key": PROBE, "name": "probe", "rpm": 1000 + rpm}]},
    }


async def wait_for_workers(url: str, workers: int, proc, log: Path) -> None:
    """Ready, and (with several workers) every worker answering: new connections until n pids seen."""
    pids: set[int] = set()
    for _ in range(600):
        assert proc.returncode is None, log.read_text()[-3000:]
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
                async with s.get(url + "/health/live") as r:
                    pids.add((await r.json())["pid"])
        except aiohttp.ClientConnectionError:
            pass
        if len(pids) >= workers:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{workers} workers did not come up: {log.read_text()[-3000:]}")


async def burst(urls: list[str]) -> list[int]:
    """N requests at once, spread over the URLs, each on its own connection."""
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0)) as s:
        async def one(i: int) -> int:
            async with s.post(urls[i % len(urls)] + "/v1/chat/completions", json=body, headers=headers) as r:
                await r.read()
                return r.status

        return await asyncio.gather(*(one(i) for i in range(N)))


@pytest.mark.parametrize("workers", [1, 2])
async def test_fifty_against_rpm_ten_admit_exactly_ten(state_url, workers, counting_backend, gateways):
    backend, seen = counting_backend
    url = await gateways(backend, state_url, workers)
    statuses = await burst([url])
    assert statuses.count(200) == RPM and statuses.count(429) == N - RPM, statuses
    assert seen["chat"] == RPM


async def test_two_replicas_on_one_redis_admit_exactly_ten(counting_backend, gateways, redis_url):
    backend, seen = counting_backend
    a = await gateways(backend, redis_url, 1)
    b = await gateways(backend, redis_url, 1)
    statuses = await burst([a, b])
    assert statuses.count(200) == RPM and statuses.count(429) == N - RPM, statuses
    assert seen["chat"] == RPM


async def test_sighup_applies_new_limits_and_keeps_the_counters(counting_backend, gateways, tmp_path):
    backend, _ = counting_backend
    url = await gateways(backend, f"sqlite:///{tmp_path}/state.db", 2, rpm=3)
    proc, cfg_path = next(iter(gateways.started.values()))
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}

    async def ask(key: str) -> aiohttp.ClientResponse:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            async with s.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as r:
                await r.read()
                return r

    assert [(await ask(KEY)).status for _ in range(2)] == [200, 200]
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["auth"]["keys"][0]["rpm"], cfg["auth"]["keys"][1]["rpm"] = 4, 1004
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc.send_signal(signal.SIGHUP)  # the supervisor passes it to both workers
    reloaded = 0
    for _ in range(200):  # until both workers answer with the new config (new connections spread them)
        r = await ask(PROBE)
        reloaded = reloaded + 1 if r.headers["x-ratelimit-limit-requests"] == "1004" else 0
        if reloaded >= 8:
            break
        await asyncio.sleep(0.05)
    assert reloaded >= 8
    # rpm 4 now, and the two requests before the reload still count: two more, then refused
    assert [(await ask(KEY)).status for _ in range(3)] == [200, 200, 429]
