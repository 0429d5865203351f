"""The `llm-proxy` command: the demo serves every emulated backend, `serve --workers 2` shares the
port between two processes whose metrics add up, and SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
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
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
