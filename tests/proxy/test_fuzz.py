"""Bounded fuzzing of every API route and client format (Hypothesis): mutated valid bodies, wrong
types, huge and deeply nested values, big integers, invalid UTF-8, duplicate keys and hostile model
names, against a gateway with a wildcard model on every emulated backend kind.  For every case: an
answer arrives on the same connection (never a dropped connection or a hang), no 5xx is the gateway's
own fault, and every error body parses in the caller's own format.  A few thousand cases, seconds."""

from __future__ import annotations

import asyncio
import http.client
import importlib
import json
import shutil
import tempfile
import threading
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.app import create_app
from proxy.config import load_config_dict
from tests.proxy.hardening_support import BACKENDS, assert_caller_error

MODELS = [f"{prefix}-m" for prefix in BACKENDS] + ["oa-../../admin?x=1", "an-%2e%2e", "ge-a:b", "nope", "oa-" + "x" * 300,
                                                  "oa-\r\nx", "", "tg-..", "hf-//x", "ol-\\"]
MSG = [{"role": "user", "content": "hi"}]

# route -> a valid body template (model filled in per case; Gemini names it in the URL)
ROUTES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"messages": MSG, "max_tokens": 8},
    "/v1/completions": {"prompt": "hi", "max_tokens": 8},
    "/v1/embeddings": {"input": ["hi"]},
    "/v1/responses": {"input": "hi", "max_output_tokens": 8},
    "/v1/messages": {"max_tokens": 8, "messages": MSG},
    "/v1/messages/count_tokens": {"messages": MSG},
    "/api/chat": {"messages": MSG, "stream": False},
    "/api/generate": {"prompt": "hi", "stream": False},
    "/api/embed": {"input": "hi"},
    "/v1beta/models/{m}:generateContent": {"contents": [{"parts": [{"text": "hi"}]}]},
    "/v1beta/models/{m}:streamGenerateContent": {"contents": [{"parts": [{"text": "hi"}]}]},
    "/v1beta/models/{m}:countTokens": {"contents": [{"parts": [{"text": "hi"}]}]},
    "/v1beta/models/{m}:embedContent": {"content": {"parts": [{"text": "hi"}]}},
}
FIELDS = ["model", "messages", "stream", "max_tokens", "temperature", "top_p", "top_k", "seed", "n", "stop",
          "tools", "tool_choice", "response_format", "system", "input", "prompt", "options", "format",
          "generationConfig", "contents", "stream_options", "metadata", "thinking", "logit_bias", "extra"]


def deep(n: int) -> Any:
    value: Any = 1
    for i in range(n):
        value = [value] if i % 2 else {"a": value}
    return value


json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False),
    st.text(max_size=30), st.sampled_from(["", "\x00", "\ud7ff", "a" * 5000, "user", "assistant", "tool"]),
)
json_value = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.sampled_from(FIELDS + ["role", "content", "type", "text", "parts", "function", "name"]), kids, max_size=4),
    max_leaves=12)
odd_value = st.one_of(json_value, st.integers(min_value=2, max_value=1200).map(deep),
                      st.sampled_from([2**64, -(2**63) - 1, 10**30, 1e308, -0.0]))


@st.composite
def case(draw) -> tuple[str, str, bytes, dict[str, str]]:
    route = draw(st.sampled_from(list(ROUTES)))
    model = draw(st.sampled_from(MODELS))
    body = dict(ROUTES[route])
    path = route
    if "{m}" in route:
        path = route.replace("{m}", model.replace("/", "%2F").replace("?", "%3F").replace("#", "%23")
                             .replace("\r", "%0D").replace("\n", "%0A").replace("\\", "%5C") or "x")
        if route.endswith("streamGenerateContent"):
            path += "?alt=sse"
    else:
        body["model"] = model
    for _ in range(draw(st.integers(0, 3))):  # mutate: set, replace or drop fields
        key = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            body[key] = draw(odd_value)
        else:
            body.pop(key, None)
    raw = json.dumps(body).encode()
    kind = draw(st.sampled_from(["json", "json", "json", "bad_utf8", "dup_keys", "truncated", "not_object", "empty"]))
    if kind == "bad_utf8":
        raw = raw.replace(b'"hi"', b'"h\xff\xfe"', 1) if b'"hi"' in raw else raw[:-1] + b',"x":"\xc3"}'
    elif kind == "dup_keys":
        raw = raw[:-1] + (b',"model":"oa-m","model":' + json.dumps(model).encode() + b"}" if len(raw) > 2 else b"}")
    elif kind == "truncated":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif kind == "not_object":
        raw = draw(st.sampled_from([b"[]", b"null", b"1", b'"x"', b"[" * 5000]))
    elif kind == "empty":
        raw = b""
    headers = {"Content-Type": "application/json"}
    if draw(st.booleans()):
        headers[draw(st.sampled_from(["anthropic-version", "anthropic-beta", "traceparent", "x-request-id"]))] = \
            draw(st.sampled_from(["2023-06-01", "x" * 200, "a b", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]))
    return "POST", path, raw, headers


class Gateway:
    """Emulators and the gateway on their own event loop thread, for a synchronous Hypothesis test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runners: list[web.AppRunner] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self._run(self._start())

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _serve(self, app: web.Application) -> int:
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        return runner.addresses[0][1]

    async def _start(self) -> int:
        backends, models = {}, []
        for prefix, (emu, provider, suffix, extra, model_keys) in BACKENDS.items():
            port = await self._serve(importlib.import_module(f"loadtest.emulators.{emu}").create_app(None))
            backends[prefix] = {"provider": provider, "base_url": f"http://127.0.0.1:{port}{suffix}", **extra,
                                "timeouts": {"first_byte": 5, "idle": 5, "total": 10}}
            models.append({"name": f"{prefix}-*", "backend": prefix, **model_keys})
        self.state_dir = tempfile.mkdtemp(prefix="llm-proxy-fuzz-")  # stored responses land here
        cfg = load_config_dict({"backends": backends, "models": models, "server": {"request_read_timeout": 5},
                                "state": {"url": f"sqlite:///{self.state_dir}/state.db"}}, env={})  # fmt: skip
        return await self._serve(create_app(cfg))

    def close(self) -> None:
        async def stop() -> None:
            for runner in reversed(self.runners):
                await runner.cleanup()

        self._run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        shutil.rmtree(self.state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def gateway():
    gw = Gateway()
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    yield conn
    conn.close()
    gw.close()


SEEN: dict[int, int] = {}  # status -> count, for the check that the cases reached every outcome


def _error_path(path: str) -> str:
    return path.split("?", 1)[0]


@settings(max_examples=1500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(c=case())
def test_no_request_crashes_drops_or_leaks(gateway, c):
    method, path, body, headers = c
    gateway.request(method, path, body=body, headers=headers)  # a dropped connection raises here
    resp = gateway.getresponse()
    data = resp.read()
    if resp.getheader("Connection", "").lower() == "close":
        gateway.close()
    status = resp.status
    SEEN[status] = SEEN.get(status, 0) + 1
    if status >= 400:
        doc = assert_caller_error(_error_path(path), status, data)
        text = json.dumps(doc)
        assert "internal error in the gateway" not in text, (path, body[:300], doc)
        assert "127.0.0.1" not in text and "Traceback" not in text
    else:
        assert status == 200, (status, data[:300])


def test_the_cases_reached_backends_and_refusals():
    """The fuzz run above must have served requests as well as refused them (a run of nothing but
    400s would check little)."""
    assert SEEN.get(200, 0) >= 50 and SEEN.get(400, 0) >= 50, SEEN
