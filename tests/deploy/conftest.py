"""The live stack for the deploy tests: an emulated OpenAI backend, the real proxy, a real Prometheus
scraping it every second, and a few seconds of bounded traffic through it.

The proxy and emulator run on an event loop in a background thread (module-scoped, so several tests
query one Prometheus without paying its start-up again); Prometheus is a subprocess on a free loopback
port with a temporary storage dir.  Everything is bounded in time and torn down, processes included,
even when a step fails.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from deploy_support import LIVE_ROUTES, free_port, load_deploy_module

import proxy.app as proxy_app
import proxy.config as proxy_config_mod
from loadtest.emulators import openai as emulator
from loadtest.emulators import server

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
KEY = "sk-deploy-test"
LOAD_SECONDS = 6.0
STACK_BUDGET = 90.0  # start-up + load + scrapes, generous for a loaded machine; under the 120 s test timeout


@dataclass
class LiveStack:
    prometheus: str  # base URL
    proxy: str  # base URL
    traffic: dict  # status -> count

    def query(self, expr: str, timeout: float = 5.0) -> list[dict]:
        qs = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.prometheus}/api/v1/query?{qs}", timeout=timeout) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]["result"]


def proxy_config(emulator_url: str) -> str:
    # Anthropic clients are routed to the OpenAI emulator too: two routes, one backend format.
    # `demo-fail` has its own backend so its circuit breaker leaves the others alone.
    return yaml.safe_dump({
        "server": {"host": "127.0.0.1", "port": 0},
        "auth": {"keys": [KEY]},
        "backends": {
            "emu": {"provider": "openai", "base_url": f"{emulator_url}/v1"},
            "emu-fail": {"provider": "openai", "base_url": f"{emulator_url}/v1"},
        },
        "models": [
            {"name": "demo", "backend": "emu", "model": "llama-3.1-8b"},
            {"name": "demo-fail", "backend": "emu-fail", "model": "llama-3.1-8b::status=500", "retries": 1},
        ],
    })  # fmt: skip


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


def _wait_for(predicate, deadline: float, what: str):
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"timed out waiting for {what}")


def _prometheus_ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
        return r.status == 200


@pytest.fixture(scope="module")
def live_stack() -> Iterator[LiveStack]:
    if shutil.which(PROMETHEUS) is None:
        pytest.skip("prometheus not installed (Debian package `prometheus`: apt-get install -y prometheus)")

    traffic = load_deploy_module("traffic")
    deadline = time.monotonic() + STACK_BUDGET
    lt = _LoopThread()
    runners = []
    prom = None
    tmp = Path(tempfile.mkdtemp(prefix="deploy-prom-"))
    try:
        emu_runner, emu_url = lt.run(server.start(emulator.create_app()), 10)
        runners.append(emu_runner)
        cfg = proxy_config_mod.load_config_text(proxy_config(emu_url), env={})
        proxy_runner, proxy_url = lt.run(server.start(proxy_app.create_app(cfg)), 10)
        runners.append(proxy_runner)

        port = free_port()
        target = urllib.parse.urlsplit(proxy_url).netloc
        (tmp / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "llm-proxy", "static_configs": [{"targets": [target]}]}],
        }))  # fmt: skip
        prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("wb"),
        )  # fmt: skip
        prom_url = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _prometheus_ready(prom_url), deadline, "Prometheus to be ready")

        counts = lt.run(
            traffic.run(proxy_url, KEY, ["demo", "demo-fail"], ["demo"], duration=LOAD_SECONDS, requests=100_000,
                        concurrency=4),
            LOAD_SECONDS + 15,
        )
        stack = LiveStack(prom_url, proxy_url, dict(counts))
        # Two scrapes after the load, so rate() over the load window sees it whole.
        # Only the routes this load drives: the metrics registry is per process, so gateway tests that
        # ran earlier in the same pytest process left series of their own routes.
        per_route = f'count by (route) (llm_proxy_added_latency_seconds_count{{route=~"{"|".join(LIVE_ROUTES)}"}})'
        _wait_for(lambda: len(stack.query(per_route)) == len(LIVE_ROUTES), deadline, "the proxy's series in Prometheus")
        time.sleep(2.5)
        yield stack
    finally:
        if prom is not None:
            prom.terminate()
            try:
                prom.wait(10)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait(5)
        for runner in reversed(runners):
            lt.run(runner.cleanup(), 10)
        lt.stop()
        shutil.rmtree(tmp, ignore_errors=True)
