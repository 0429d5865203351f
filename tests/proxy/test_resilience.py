"""Fault injection through the running gateway: emulated OpenAI-compatible backends fail in every way
the emulators can (refused connection, hang, slow first byte, 5xx, 429 with and without Retry-After,
reset mid-stream, truncated SSE, malformed JSON, context length), and each test checks what the
client receives (status, body in its own format, the answering deployment), how many attempts
reached each backend, the retry/fallback metrics, and that no connection or task is left behind."""

from __future__ import annotations

import asyncio
import json
from time import perf_counter

import pytest

from adapters.anthropic_response import KIND_TO_ERROR
from adapters.errors import KINDS
from proxy import balancer as balancer_module
from proxy import breaker as breaker_module
from proxy.relay import DEPLOYMENT_HEADER
from tests.proxy.resilience_support import (
    assert_no_leaks,
    chat_body,
    closed_port_url,
    gateway_config,
    messages_body,
    metrics,
    sample,
    start_upstreams,
)

pytestmark = pytest.mark.timeout(30)

# scenario on the failing deployment -> the error kind the gateway sees
RETRYABLE_FAULTS = {
    "refused": "upstream_unavailable",
    "hang": "timeout",
    "first_byte=2": "timeout",
    "status=500": "server",
    "status=502": "upstream_unavailable",
    "status=503": "overloaded",
    "status=504": "timeout",
    "status=529": "overloaded",
    "status=429": "rate_limit",
    "status=429,retry_after=5": "rate_limit",
}


@pytest.fixture
async def gateway(aiohttp_server, gateway_client, start_proxy):
    """`await gateway(models, routing=...)` -> (client, proxy server, upstreams a and b)."""
    made = []

    async def make(models, routing=None, timeouts=None):
        ups = await start_upstreams(aiohttp_server, "a", "b")
        urls = {name: up.url for name, up in ups.items()} | {"dead": closed_port_url()}
        server = await start_proxy(gateway_config(urls, models, routing, timeouts))
        client = await gateway_client(server)
        made.append((server, ups))
        return client, server, ups

    yield make
    for server, ups in made:
        await assert_no_leaks(server, ups)


def two_deployments(fault: str, **extra) -> dict:
    first = {"backend": "dead", "model": "llama"} if fault == "refused" else {"backend": "a", "model": f"llama::{fault}"}
    return {"name": "m", "deployments": [first, {"backend": "b", "model": "llama"}], "strategy": "ordered",
            "retries": 1, **extra}


def one_deployment(fault: str, retries: int) -> dict:
    backend, model = ("dead", "llama") if fault == "refused" else ("a", f"llama::{fault}")
    return {"name": "m", "backend": backend, "model": model, "retries": retries}


@pytest.mark.parametrize("fault", list(RETRYABLE_FAULTS))
async def test_retryable_fault_is_retried_on_the_other_deployment(gateway, fault):
    client, _, ups = await gateway([two_deployments(fault)])
    before = await metrics(client)
    t0 = perf_counter()
    resp = await client.post("/v1/chat/completions", json=chat_body("m", text="hello"))
    elapsed = perf_counter() - t0
    body = await resp.json()
    assert resp.status == 200
    assert resp.headers[DEPLOYMENT_HEADER] == "b/llama"
    assert body["choices"][0]["message"]["content"] == "echo: hello"
    assert ups["a"].total == (0 if fault == "refused" else 1)
    assert ups["b"].requests == {"llama": 1}
    after = await metrics(client)
    backend = "dead" if fault == "refused" else "a"
    reason = RETRYABLE_FAULTS[fault]
    assert sample(after, "llm_proxy_retries_total", backend=backend, model="m", reason=reason) - sample(
        before, "llm_proxy_retries_total", backend=backend, model="m", reason=reason) == 1
    # Retry-After speaks for deployment a only: the retry on b does not wait for it.
    assert elapsed < 1.5


@pytest.mark.parametrize("frontend", ["openai", "anthropic"])
@pytest.mark.parametrize("fault", list(RETRYABLE_FAULTS))
async def test_every_attempt_failing_gives_the_last_error_in_the_clients_format(gateway, fault, frontend):
    client, _, ups = await gateway([one_deployment(fault, retries=2)])
    if frontend == "openai":
        resp = await client.post("/v1/chat/completions", json=chat_body("m"))
    else:
        resp = await client.post("/v1/messages", json=messages_body("m"))
    body = await resp.json()
    kind = RETRYABLE_FAULTS[fault]
    if frontend == "openai":
        assert resp.status == KINDS[kind]
        assert set(body["error"]) >= {"message", "type", "code"}
    else:
        status, etype = KIND_TO_ERROR[kind]
        assert resp.status == status
        assert body["type"] == "error" and body["error"]["type"] == etype
    assert resp.headers[DEPLOYMENT_HEADER] == ("dead/llama" if fault == "refused" else f"a/llama::{fault}")
    assert ups["a"].total == (0 if fault == "refused" else 3)
    if "retry_after" in fault:
        assert resp.headers["Retry-After"] == "5"


async def test_retry_after_is_honoured_up_to_the_cap_when_the_same_deployment_is_retried(gateway):
    client, _, ups = await gateway([one_deployment("status=429,retry_after=1", retries=1)],
                                   routing={"max_retry_after": 0.4})
    t0 = perf_counter()
    resp = await client.post("/v1/chat/completions", json=chat_body("m"))
    elapsed = perf_counter() - t0
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "1"
    assert ups["a"].total == 2
    assert 0.4 <= elapsed < 0.95  # waited the capped Retry-After, not the backend's full second


@pytest.mark.parametrize("fault", ["status=400", "status=401", "status=404", "context_length"])
async def test_client_errors_are_never_retried(gateway, fault):
    client, _, ups = await gateway([two_deployments(fault, fallbacks=["other"]),
                                    {"name": "other", "backend": "b", "model": "other"}])
    resp = await client.post("/v1/chat/completions", json=chat_body("m"))
    body = await resp.json()
    assert 400 <= resp.status < 500
    assert resp.headers[DEPLOYMENT_HEADER] == f"a/llama::{fault}"
    if fault == "context_length":
        assert body["error"]["code"] == "context_length_exceeded"
    assert ups["a"].total == 1 and ups["b"].total == 0


async def test_context_length_moves_to_context_window_fallbacks(gateway):
    models = [
        {"name": "small", "backend": "a", "model": "llama-8k::context_length", "retries": 2,
         "fallbacks": ["other"], "context_window_fallbacks": ["big"]},
        {"name": "big", "backend": "b", "model": "llama-128k"},
        {"name": "other", "backend": "b", "model": "other"},
    ]
    client, _, ups = await gateway(models)
    before = await metrics(client)
    resp = await client.post("/v1/messages", json=messages_body("small", text="long prompt"))
    body = await resp.json()
    assert resp.status == 200
    assert resp.headers[DEPLOYMENT_HEADER] == "b/llama-128k"
    assert body["type"] == "message" and body["content"][0]["text"] == "echo: long prompt"
    assert body["model"] == "small"
    assert ups["a"].total == 1 and ups["b"].requests == {"llama-128k": 1}
    after = await metrics(client)
    key = {"model": "small", "reason": "context_length"}
    assert sample(after, "llm_proxy_fallbacks_total", **key) - sample(before, "llm_proxy_fallbacks_total", **key) == 1


async def test_fallback_model_answers_when_every_deployment_failed(gateway):
    models = [
        {"name": "m", "deployments": [{"backend": "a", "model": "llama::status=503"},
                                      {"backend": "b", "model": "llama::status=503"}],
         "retries": 1, "fallbacks": ["gone", "qwen"]},
        {"name": "gone", "backend": "dead", "model": "gone"},
        {"name": "qwen", "backend": "b", "model": "qwen"},
    ]
    client, _, ups = await gateway(models)
    before = await metrics(client)
    resp = await client.post("/v1/chat/completions", json=chat_body("m"))
    assert resp.status == 200
    assert resp.headers[DEPLOYMENT_HEADER] == "b/qwen"
    assert ups["a"].total == 1 and ups["b"].requests == {"llama::status=503": 1, "qwen": 1}
    after = await metrics(client)
    for model, reason in (("m", "overloaded"), ("gone", "upstream_unavailable")):
        key = {"model": model, "reason": reason}
        assert sample(after, "llm_proxy_fallbacks_total", **key) - sample(before, "llm_proxy_fallbacks_total", **key) == 1


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    events = []
    for block in raw.decode().split("\n\n"):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


@pytest.mark.parametrize("fault", ["reset_after=2", "truncate_after=2", "error_after=2"])
async def test_mid_stream_failure_is_an_error_event_and_never_retried_openai(gateway, fault):
    fault += ",chunk_delay=0.05"
    client, _, ups = await gateway([two_deployments(fault)])
    resp = await client.post("/v1/chat/completions", json=chat_body("m", stream=True, text="hello there"))
    raw = await resp.read()
    assert resp.status == 200 and resp.headers[DEPLOYMENT_HEADER] == f"a/llama::{fault}"
    events = sse_events(raw)
    chunks = [json.loads(d) for _, d in events if d != "[DONE]"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"  # content reached the client first
    assert "error" in chunks[-1] and chunks[-1]["error"]["message"]
    assert events[-1][1] != "[DONE]"
    assert ups["a"].total == 1 and ups["b"].total == 0


@pytest.mark.parametrize("fault", ["reset_after=2", "truncate_after=2", "error_after=2"])
async def test_mid_stream_failure_is_an_error_event_and_never_retried_anthropic(gateway, fault):
    # The gap makes the first chunk reach the client (the commit point) before the failure.
    fault += ",chunk_delay=0.05"
    client, _, ups = await gateway([two_deployments(fault)])
    resp = await client.post("/v1/messages", json=messages_body("m", stream=True, text="hello there"))
    raw = await resp.read()
    assert resp.status == 200 and resp.headers[DEPLOYMENT_HEADER] == f"a/llama::{fault}"
    events = sse_events(raw)
    assert events[0][0] == "message_start"
    assert events[-1][0] == "error" and json.loads(events[-1][1])["type"] == "error"
    assert "message_stop" not in [name for name, _ in events]
    assert ups["a"].total == 1 and ups["b"].total == 0


async def test_in_band_error_before_anything_was_sent_is_retried(gateway):
    client, _, ups = await gateway([two_deployments("error_after=1")])
    resp = await client.post("/v1/messages", json=messages_body("m", stream=True, text="x"))
    events = sse_events(await resp.read())
    assert resp.headers[DEPLOYMENT_HEADER] == "b/llama"
    assert events[-1][0] == "message_stop"
    assert ups["a"].total == 1 and ups["b"].total == 1


async def test_malformed_stream_is_one_well_formed_error_and_not_retried(gateway):
    client, _, ups = await gateway([two_deployments("malformed")])
    resp = await client.post("/v1/messages", json=messages_body("m", stream=True))
    raw = await resp.read()
    if resp.status == 200:  # the first chunk was sent before the bad one arrived
        assert sse_events(raw)[-1][0] == "error"
    else:
        assert json.loads(raw)["error"]["type"] == KIND_TO_ERROR["upstream_protocol"][1]
    assert ups["a"].total == 1 and ups["b"].total == 0


async def test_malformed_json_answer_is_a_502_in_the_clients_format(gateway):
    client, _, ups = await gateway([two_deployments("malformed")])
    resp = await client.post("/v1/messages", json=messages_body("m"))
    body = await resp.json()
    status, etype = KIND_TO_ERROR["upstream_protocol"]
    assert resp.status == status and body["error"]["type"] == etype
    assert "chatcmpl" not in body["error"]["message"]  # the raw upstream body is never shown
    assert ups["a"].total == 1 and ups["b"].total == 0  # upstream_protocol is not a retryable kind


# -- circuit breaking ------------------------------------------------------------------------------


async def ready_state(client) -> dict:
    resp = await client.get("/health/ready")
    return (await resp.json())["backends"]


async def test_breaker_ejects_probes_and_readmits(gateway, monkeypatch):
    # The breaker's clock is driven by the test, so a slow machine cannot end a cooldown early.
    now = [1000.0]
    monkeypatch.setattr(breaker_module, "monotonic", lambda: now[0])
    monkeypatch.setattr(balancer_module, "monotonic", lambda: now[0])
    model = {"name": "m", "deployments": [{"backend": "a", "model": "llama"}, {"backend": "b", "model": "llama"}],
             "strategy": "ordered", "retries": 1}
    client, _, ups = await gateway([model], routing={"breaker_failures": 2, "breaker_cooldown": 0.4})
    before = await metrics(client)
    ups["a"].fail_status = 500
    for _ in range(2):
        resp = await client.post("/v1/chat/completions", json=chat_body("m"))
        assert resp.status == 200 and resp.headers[DEPLOYMENT_HEADER] == "b/llama"
    assert ups["a"].total == 2
    state = await ready_state(client)
    assert state["a"]["state"] == "open" and state["a"]["deployments"]["a/llama"]["state"] == "open"
    assert state["b"]["state"] == "closed"
    snap = await metrics(client)
    assert sample(snap, "llm_proxy_backend_up", backend="a") == 0
    assert sample(snap, "llm_proxy_backend_ejections_total", backend="a") - sample(
        before, "llm_proxy_backend_ejections_total", backend="a") == 1

    # Ejected: traffic goes straight to b, a sees nothing.
    resp = await client.post("/v1/chat/completions", json=chat_body("m"))
    assert resp.headers[DEPLOYMENT_HEADER] == "b/llama" and ups["a"].total == 2

    # After the cooldown one probe reaches a; it fails, so a is out for another cooldown.
    now[0] += 0.45
    assert (await ready_state(client))["a"]["state"] == "half-open"
    resp = await client.post("/v1/chat/completions", json=chat_body("m"))
    assert resp.headers[DEPLOYMENT_HEADER] == "b/llama" and ups["a"].total == 3
    assert (await ready_state(client))["a"]["state"] == "open"

    # a recovers: the next probe succeeds and a takes traffic again.
    ups["a"].fail_status = None
    now[0] += 0.45
    resp = await client.post("/v1/chat/completions", json=chat_body("m"))
    assert resp.headers[DEPLOYMENT_HEADER] == "a/llama" and ups["a"].total == 4
    assert (await ready_state(client))["a"]["state"] == "closed"
    assert sample(await metrics(client), "llm_proxy_backend_up", backend="a") == 1


async def test_every_deployment_ejected_gives_overloaded_with_retry_after(gateway):
    client, _, ups = await gateway([one_deployment("status=500", retries=0)],
                                   routing={"breaker_failures": 1, "breaker_cooldown": 5})
    assert (await client.post("/v1/chat/completions", json=chat_body("m"))).status == 500
    resp = await client.post("/v1/messages", json=messages_body("m"))
    body = await resp.json()
    assert resp.status == KIND_TO_ERROR["overloaded"][0] and body["error"]["type"] == "overloaded_error"
    assert 1 <= int(resp.headers["Retry-After"]) <= 5
    assert ups["a"].total == 1


# -- concurrency limits, hedging, cancellation ---------------------------------------------------------


async def test_concurrency_limit_spills_to_next_deployment_then_429(gateway):
    model = {"name": "m", "strategy": "ordered", "deployments": [
        {"backend": "a", "model": "llama::first_byte=0.3", "max_concurrency": 1},
        {"backend": "b", "model": "llama::first_byte=0.3", "max_concurrency": 1}]}
    client, _, ups = await gateway([model])
    r1, r2, r3 = await asyncio.gather(*(client.post("/v1/chat/completions", json=chat_body("m")) for _ in range(3)))
    statuses = sorted([r1.status, r2.status, r3.status])
    assert statuses == [200, 200, 429]
    answered = sorted(r.headers[DEPLOYMENT_HEADER] for r in (r1, r2, r3) if r.status == 200)
    assert answered == ["a/llama::first_byte=0.3", "b/llama::first_byte=0.3"]
    rejected = next(r for r in (r1, r2, r3) if r.status == 429)
    assert rejected.headers["Retry-After"] == "1"
    assert (await rejected.json())["error"]["code"] == "deployments_busy"
    assert ups["a"].total == 1 and ups["b"].total == 1


async def test_concurrency_queue_waits_for_a_slot(gateway):
    model = {"name": "m", "deployments": [{"backend": "a", "model": "llama::first_byte=0.2",
                                           "max_concurrency": 1, "max_queue": 2}]}
    client, _, ups = await gateway([model])
    t0 = perf_counter()
    resps = await asyncio.gather(*(client.post("/v1/chat/completions", json=chat_body("m")) for _ in range(4)))
    assert sorted(r.status for r in resps) == [200, 200, 200, 429]  # one runs, two wait, one is turned away
    assert perf_counter() - t0 >= 0.55  # the three admitted ran one after another
    assert ups["a"].total == 3


async def test_hedging_takes_the_first_answer_and_cancels_the_other(gateway):
    model = {"name": "m", "strategy": "ordered", "hedge_after": 0.1, "deployments": [
        {"backend": "a", "model": "llama::first_byte=3"}, {"backend": "b", "model": "llama"}]}
    client, _, ups = await gateway([model], timeouts={"connect": 1, "first_byte": 5, "idle": 5, "total": 10})
    t0 = perf_counter()
    resp = await client.post("/v1/chat/completions", json=chat_body("m", text="hedge"))
    assert resp.status == 200 and resp.headers[DEPLOYMENT_HEADER] == "b/llama"
    assert (await resp.json())["choices"][0]["message"]["content"] == "echo: hedge"
    assert perf_counter() - t0 < 1.0
    assert ups["a"].total == 1 and ups["b"].total == 1  # the slow attempt was cancelled (leak check below)


async def test_hedging_is_off_for_streams(gateway):
    model = {"name": "m", "strategy": "ordered", "hedge_after": 0.05, "deployments": [
        {"backend": "a", "model": "llama::first_byte=0.3"}, {"backend": "b", "model": "llama"}]}
    client, _, ups = await gateway([model])
    resp = await client.post("/v1/chat/completions", json=chat_body("m", stream=True))
    await resp.read()
    assert resp.headers[DEPLOYMENT_HEADER] == "a/llama::first_byte=0.3"
    assert ups["b"].total == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_cancels_every_upstream_attempt(gateway, stream):
    model = {"name": "m", "strategy": "ordered", "hedge_after": 0.05, "deployments": [
        {"backend": "a", "model": "llama::hang"}, {"backend": "b", "model": "llama::hang"}]}
    client, _, ups = await gateway([model], timeouts={"connect": 1, "first_byte": 30, "idle": 30, "total": 60})
    task = asyncio.ensure_future(client.post("/v1/chat/completions", json=chat_body("m", stream=stream)))
    want = 1 if stream else 2  # streams are never hedged
    for _ in range(100):
        if ups["a"].in_flight + ups["b"].in_flight == want:
            break
        await asyncio.sleep(0.01)
    assert ups["a"].in_flight + ups["b"].in_flight == want
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.close()  # the client's connection goes away: the gateway's handler is cancelled
    # The fixture's leak check then requires 0 requests in flight at both emulators.
