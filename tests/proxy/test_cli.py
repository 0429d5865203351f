"""The `llm-proxy` command: the demo serves every emulated backend, `serve --workers 2` shares the
port between two processes whose metrics add up, and SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import anthropic
import openai
import pytest

from proxy.demo import DEMO_MODELS, banner, start_demo


async def test_demo_serves_every_model_in_both_formats():
    runners, url, models = await start_demo("127.0.0.1", 0)
    try:
        assert set(models) == set(DEMO_MODELS)
        oai = openai.AsyncOpenAI(base_url=url + "/v1", api_key="demo", max_retries=0)
        ant = anthropic.AsyncAnthropic(base_url=url, api_key="demo", max_retries=0)
        for model in models:
            r = await oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi demo"}])
            assert "hi demo" in r.choices[0].message.content, model
            m = await ant.messages.create(model=model, max_tokens=32, messages=[{"role": "user", "content": "hi demo"}])
            assert "hi demo" in m.content[0].text, model
        await oai.close()
        await ant.close()
        text = banner(url, models)
        assert url in text and "demo-ollama" in text
    finally:
        for r in runners:
            await r.cleanup()


async def test_demo_stores_responses_in_its_throwaway_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runners, url, _ = await start_demo("127.0.0.1", 0)
    try:
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="demo", max_retries=0) as c:
            r1 = await c.responses.create(model="demo-openai", input="one")
            r2 = await c.responses.create(model="demo-anthropic", input="two", previous_response_id=r1.id)
            assert (await c.responses.retrieve(r2.id)).previous_response_id == r1.id
    finally:
        for r in runners:
            await r.cleanup()
    assert list(tmp_path.iterdir()) == []  # nothing left in the working directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, deadline: float) -> None:
    import urllib.request

    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the gateway did not become ready in time")


def wait_workers(url: str, n: int, deadline: float) -> None:
    """Until `n` workers answer: each urlopen is a new connection, which the kernel hands to one of
    the workers listening (a worker spawned late under load may start listening seconds after the
    first is ready)."""
    import urllib.request

    pids = set()
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "/health/live", timeout=1) as r:
            pids.add(json.load(r)["pid"])
        if len(pids) == n:
            return
        time.sleep(0.05)
    raise AssertionError(f"only workers {pids} answered in time")


def stop(proc: subprocess.Popen, sig: int) -> None:
    """Signal, wait up to 20 s, and kill what is still running (so no test leaves a process behind)."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def emulator_process():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "emulate", "openai", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


async def test_two_workers_share_the_port_and_metrics_add_up(tmp_path, emulator_process):
    port = free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"server: {{port: {port}, workers: 2}}\n"
        f"backends: {{emu: {{provider: openai, base_url: '{emulator_process}/v1'}}}}\n"
        "models: [{name: m, backend: emu}]\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(cfg)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_ready, url, time.monotonic() + 30)
        await asyncio.to_thread(wait_workers, url, 2, time.monotonic() + 30)
        pids, n = set(), 60
        for _ in range(n):  # a new connection per request: the kernel spreads them over both workers
            async with aiohttp.ClientSession() as s:
                async with s.post(url + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}) as r:
                    assert r.status == 200
                async with s.get(url + "/health/live") as r:
                    pids.add((await r.json())["pid"])
        assert len(pids) == 2, pids
        async with aiohttp.ClientSession() as s:
            async with s.get(url + "/metrics") as r:
                text = await r.text()
        counted = sum(
            float(v) for v in re.findall(r'^llm_proxy_requests_total\{[^}]*status="200"[^}]*\} (\S+)$', text, re.M)
        )
        assert counted == n
        rss = re.search(r"^llm_proxy_process_resident_memory_bytes (\S+)$", text, re.M)
        # Summed over both workers (each samples its own), though the scrape reached only one.
        largest = max(int(open(f"/proc/{pid}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") for pid in pids)
        assert rss and float(rss.group(1)) > 1.5 * largest
    finally:
        stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]


def test_listening_commands_default_to_llm_proxy_host_and_port():
    from proxy.cli import build_parser

    env = {"LLM_PROXY_HOST": "0.0.0.0", "LLM_PROXY_PORT": "4100"}
    demo = build_parser(env).parse_args(["demo"])
    emu = build_parser(env).parse_args(["emulate", "openai"])
    serve = build_parser(env).parse_args(["serve", "--config", "c.yaml"])
    assert (demo.host, demo.port) == ("0.0.0.0", 4100)
    assert (emu.host, emu.port) == ("0.0.0.0", 8000)  # an emulator keeps its own port
    assert (serve.host, serve.port) == ("0.0.0.0", 4100)
    bare = build_parser({})
    assert (bare.parse_args(["demo"]).host, bare.parse_args(["demo"]).port) == ("127.0.0.1", 4000)
    assert bare.parse_args(["emulate", "openai"]).host == "127.0.0.1"
    serve = bare.parse_args(["serve", "--config", "c.yaml"])
    assert (serve.host, serve.port) == (None, None)  # the config's server section decides
    assert bare.parse_args(["demo", "--host", "::1"]).host == "::1"


@pytest.mark.parametrize("bad", [{"LLM_PROXY_PORT": "http"}, {}])
def test_bad_port_or_workers_is_a_usage_error(bad, capsys):
    from proxy.cli import build_parser

    argv = ["demo"] if bad else ["serve", "--config", "c.yaml", "--workers", "0"]
    with pytest.raises(SystemExit) as exc:
        build_parser(bad).parse_args(argv)
    assert exc.value.code == 2
    assert ("--port" if bad else "--workers") in capsys.readouterr().err


def test_workers_auto_is_the_usable_cpu_count(monkeypatch):
    import proxy.cpus
    from proxy.cli import build_parser

    monkeypatch.setattr(proxy.cpus, "usable_cpus", lambda: 3)
    assert build_parser({}).parse_args(["serve", "--config", "c.yaml", "--workers", "auto"]).workers == 3
    assert build_parser({}).parse_args(["serve", "--config", "c.yaml", "--workers", "5"]).workers == 5


def test_one_worker_still_empties_the_metrics_dir(tmp_path, monkeypatch):
    # A restarted container keeps /tmp: a previous run's counters must not come back.
    import proxy.cli

    mp = tmp_path / "metrics"
    mp.mkdir()
    (mp / "counter_1.db").write_bytes(b"stale")
    (mp / "keep.txt").write_text("not ours")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backends: {emu: {provider: openai, base_url: 'http://127.0.0.1:9/v1'}}\nmodels: [{name: m, backend: emu}]\n")
    started = []
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(mp))
    monkeypatch.setattr(proxy.cli, "run_worker", lambda *a, **kw: started.append(sorted(os.listdir(mp))))
    proxy.cli.serve(str(cfg), None, None, 1)
    assert started == [["keep.txt"]]


def test_demo_creates_the_metrics_dir_it_is_given(tmp_path):
    # The image sets PROMETHEUS_MULTIPROC_DIR for every command; `demo` used to crash on the missing dir.
    port = free_port()
    mp = tmp_path / "not-yet" / "metrics"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp), "LLM_PROXY_HOST": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "demo", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, time.monotonic() + 30)
        import urllib.request

        req = urllib.request.Request(url + "/v1/chat/completions", method="POST", headers={"content-type": "application/json"},
                                     data=b'{"model": "demo-openai", "messages": [{"role": "user", "content": "hi"}]}')  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
            assert re.search(rb'^llm_proxy_requests_total\{[^}]*status="200"[^}]*\} 1\.0$', r.read(), re.M)
        assert any(p.suffix == ".db" for p in mp.iterdir())
    finally:
        stop(proc, signal.SIGINT)
    assert b"Traceback" not in proc.stderr.read()


async def test_serve_cuts_connections_that_trickle_their_headers(tmp_path):
    """The header half of slowloris: `llm-proxy serve` closes a connection that has not sent a whole
    request within `server.request_read_timeout`."""
    port = free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"server: {{port: {port}, request_read_timeout: 1}}\n"
                   "backends: {b: {provider: openai, base_url: 'http://127.0.0.1:9/v1'}}\nmodels: [{name: m, backend: b}]\n")
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}", time.monotonic() + 30)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for i in range(40):  # one header line every 0.25 s, never the blank line that ends them
            try:
                writer.write(f"x-h{i}: y\r\n".encode())
                await writer.drain()
                if await asyncio.wait_for(reader.read(1 << 16), 0.25) == b"":
                    closed = True
                    break
            except asyncio.TimeoutError:
                continue
            except ConnectionError:
                closed = True
                break
        assert closed and time.monotonic() - t0 < 5
        writer.close()
    finally:
        stop(proc, signal.SIGTERM)
