"""Shared pieces of the fault-injection tests: counted emulated backends, a closed port, the gateway
config they plug into, metric deltas, and the leak checks (upstream connections, proxy tasks)."""

from __future__ import annotations

import asyncio
import collections
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from loadtest.emulators import openai as openai_emulator
from proxy.app import BACKGROUND_TASK_PREFIX, SWITCH

PROXY_DIR = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "..", "proxy"))

FAST_ROUTING = {"retry_backoff": 0.01, "retry_backoff_max": 0.05, "max_retry_after": 0.3,
                "breaker_failures": 1000, "breaker_cooldown": 30.0}
TIMEOUTS = {"connect": 1.0, "first_byte": 0.5, "idle": 1.0, "total": 5.0}


class Upstream:
    """One emulated OpenAI-compatible backend that counts what reaches it.

    `requests[model]` counts requests by the backend model name; `in_flight` is the number of
    requests being handled right now (aiohttp_server cancels handlers whose client went away, so it
    drops to 0 once the gateway has closed its connections); `fail_status`, when set, makes every
    request fail with that status before the emulator sees it (a backend going down and coming back);
    `chaos`, when set, is awaited first and may answer (or break) the request itself."""

    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.in_flight = 0
        self.fail_status: int | None = None
        self.chaos: Callable[[web.Request], Awaitable[web.StreamResponse | None]] | None = None
        self.url = ""

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def app(self) -> web.Application:
        app = openai_emulator.create_app()

        @web.middleware
        async def count(request: web.Request, handler):
            body = await request.json() if request.method == "POST" else {}
            self.requests[body.get("model", "")] += 1
            self.in_flight += 1
            try:
                if self.chaos is not None:
                    answer = await self.chaos(request)
                    if answer is not None:
                        return answer
                if self.fail_status is not None:
                    return web.json_response({"error": {"message": "injected failure", "type": "server_error",
                                                        "param": None, "code": None}}, status=self.fail_status)
                return await handler(request)
            finally:
                self.in_flight -= 1

        app.middlewares.append(count)
        return app


async def start_upstreams(aiohttp_server, *names: str) -> dict[str, Upstream]:
    ups = {}
    for name in names:
        up = Upstream()
        server = await aiohttp_server(up.app(), host="127.0.0.1")
        up.url = str(server.make_url("")).rstrip("/")
        ups[name] = up
    return ups


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def gateway_config(urls: dict[str, str], models: list[dict[str, Any]], routing: dict[str, Any] | None = None,
                   timeouts: dict[str, Any] | None = None) -> dict[str, Any]:
    backends = {name: {"provider": "openai", "base_url": url + "/v1", "timeouts": timeouts or TIMEOUTS}
                for name, url in urls.items()}
    return {"routing": {**FAST_ROUTING, **(routing or {})}, "backends": backends, "models": models}


def chat_body(model: str, stream: bool = False, text: str = "hi") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}


def messages_body(model: str, stream: bool = False, text: str = "hi") -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}], "stream": stream}


async def metrics(client) -> dict[tuple[str, frozenset], float]:
    """Every sample of the gateway's /metrics, keyed by (name, labels)."""
    resp = await client.get("/metrics")
    text = await resp.text()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(snapshot: dict, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in snapshot.items() if n == name and want <= ls)


def _in_proxy(task: asyncio.Task) -> bool:
    """Is this task suspended somewhere inside proxy/ code (a handler or an upstream attempt)?"""
    coro: Any = task.get_coro()
    while coro is not None:
        code = getattr(coro, "cr_code", None) or getattr(coro, "ag_code", None)
        if code is not None and os.path.realpath(code.co_filename).startswith(PROXY_DIR):
            return True
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return False


async def assert_no_leaks(server, upstreams: dict[str, Upstream] | None = None, wait: float = 2.0) -> None:
    """Once the requests are over: no backend connection checked out of any gateway pool, no task
    suspended in proxy code, and no request still being handled at any emulator."""
    gw = server.app[SWITCH].current
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        acquired = {name: b.client.in_use() for name, b in gw.backends.items() if b.client}
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done() and _in_proxy(t)
                 and not t.get_name().startswith(BACKGROUND_TASK_PREFIX)]
        busy = {name: up.in_flight for name, up in (upstreams or {}).items() if up.in_flight}
        if not any(acquired.values()) and not tasks and not busy:
            return
        if loop.time() > deadline:
            raise AssertionError(f"leaked: connections {acquired}, proxy tasks {tasks}, emulator requests {busy}")
        await asyncio.sleep(0.02)
