"""Tracing: off by default (the caller's traceparent still reaches the backend); on, one SERVER span
per request with one CLIENT child per upstream attempt, whose context the backend receives."""

from __future__ import annotations

import aiohttp
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from proxy.app import SWITCH
from proxy.config import TracingConfig
from proxy.tracing import Tracing
from tests.conftest import proxy_url
from tests.proxy.test_passthrough import OPENAI_ANSWER, Capture

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def _gateway(aiohttp_server, start_proxy, models):
    cap = Capture(OPENAI_ANSWER)
    up = await aiohttp_server(cap.app())
    server = await start_proxy({
        "backends": {"b": {"provider": "openai", "base_url": str(up.make_url("/v1"))},
                     "dead": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "timeouts": {"connect": 1}}},
        "models": models,
    })
    return server, cap


async def _post(server, model: str) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/v1/chat/completions"), headers={"traceparent": CALLER},
                          json={"model": model, "messages": [{"role": "user", "content": "x"}]}) as r:
            return r.status


async def test_off_by_default_forwards_the_callers_trace(aiohttp_server, start_proxy):
    server, cap = await _gateway(aiohttp_server, start_proxy, [{"name": "m", "backend": "b"}])
    assert server.app[SWITCH].current.tracing.enabled is False
    assert await _post(server, "m") == 200
    headers = cap.requests[0][1]
    assert headers["traceparent"] == CALLER and headers["x-request-id"].startswith("req_")


async def test_spans_per_request_and_attempt(aiohttp_server, start_proxy):
    models = [{"name": "m", "deployments": [{"backend": "dead"}, {"backend": "b"}], "strategy": "ordered", "retries": 1}]
    server, cap = await _gateway(aiohttp_server, start_proxy, models)
    exporter = InMemorySpanExporter()
    gw = server.app[SWITCH].current
    gw.tracing = Tracing(TracingConfig(enabled=True), exporter=exporter)
    assert await _post(server, "m") == 200
    gw.tracing.provider.force_flush()
    spans = exporter.get_finished_spans()
    server_span = next(s for s in spans if s.kind == SpanKind.SERVER)
    attempts = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert server_span.context.trace_id == int(CALLER.split("-")[1], 16)  # joined the caller's trace
    assert server_span.attributes["http.response.status_code"] == 200
    assert [a.attributes["llm_proxy.backend"] for a in attempts] == ["dead", "b"]
    assert all(a.parent.span_id == server_span.context.span_id for a in attempts)
    assert attempts[0].attributes["error.type"] == "upstream_unavailable"
    sent = cap.requests[0][1]["traceparent"].split("-")
    assert int(sent[1], 16) == server_span.context.trace_id
    assert int(sent[2], 16) == attempts[1].context.span_id  # the backend sees its attempt's span
    gw.tracing.shutdown()


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_sampling_ratio_applies_to_new_traces(ratio):
    exporter = InMemorySpanExporter()
    t = Tracing(TracingConfig(enabled=True, sample_ratio=ratio), exporter=exporter)
    span = t.start_request({}, "/v1/chat/completions", "r1")
    t.end_request(span, 200, "m", None)
    t.provider.force_flush()
    assert len(exporter.get_finished_spans()) == int(ratio)
    t.shutdown()
