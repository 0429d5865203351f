"""The Replicate emulator, checked with the official `replicate` client (async API) and raw HTTP where
the client hides the wire (multi-line data, headers); then the adapter driven against it."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import httpx
import msgspec
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError

from adapters import ir
from adapters.base import HttpRequest, Target
from adapters.errors import ProxyError
from adapters.replicate_backend import Options, ReplicateBackend
from loadtest.emulators.behaviour import LatencyProfile
from loadtest.emulators.replicate import CONTEXT_MESSAGE, create_app

VERSION = "ab" * 32
LIMIT = 10  # seconds: every client call is bounded


async def bounded(coro):
    return await asyncio.wait_for(coro, LIMIT)


@pytest.fixture
async def root(aiohttp_server):
    server = await aiohttp_server(create_app())
    return f"http://{server.host}:{server.port}"


@pytest.fixture
async def make_client(root):
    clients: list[replicate.Client] = []

    def make(scenario: str | None = None, token: str | None = "r8_test") -> replicate.Client:
        headers = {"x-emulate": scenario} if scenario else {}
        client = replicate.Client(api_token=token, base_url=root, headers=headers)
        client.poll_interval = 0.01
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client._async_client.aclose()


async def collect(client: replicate.Client, ref: str, prompt: str, **kw) -> list:
    async def run():
        return [ev async for ev in await client.async_stream(ref, input={"prompt": prompt, **kw})]

    return await bounded(run())


def output_of(events) -> str:
    return "".join(ev.data for ev in events if ev.event.value == "output")


# -- happy paths ---------------------------------------------------------------------------------

async def test_async_run_official_model_waits_inline(make_client):
    out = await bounded(make_client().async_run("meta/meta-llama-3-8b-instruct", input={"prompt": "hi there"}))
    assert "".join(out) == "echo: hi there"


async def test_async_run_version_returns_iterator(make_client):
    it = await bounded(make_client().async_run(f"meta/llama-2:{VERSION}", input={"prompt": "v"}))
    assert "".join([piece async for piece in it]) == "echo: v"


async def test_polling_progresses_starting_processing_succeeded(make_client):
    client = make_client()
    pred = await bounded(client.models.predictions.async_create(model="meta/llama", input={"prompt": "abcdefgh"}))
    statuses = [pred.status]
    while pred.status not in ("succeeded", "failed", "canceled"):
        await bounded(pred.async_reload())
        statuses.append(pred.status)
    assert statuses == ["starting", "processing", "succeeded"]
    assert "".join(pred.output) == "echo: abcdefgh"
    assert pred.metrics["input_token_count"] >= 1 and pred.metrics["output_token_count"] >= 1
    assert pred.urls["get"].endswith(f"/v1/predictions/{pred.id}")


async def test_async_wait(make_client):
    client = make_client()
    pred = await bounded(client.predictions.async_create(version=VERSION, input={"prompt": "w"}))
    await bounded(pred.async_wait())
    assert pred.status == "succeeded" and "".join(pred.output) == "echo: w"


async def test_stream_with_official_client(make_client):
    events = await collect(make_client(), "meta/llama", "line one\nline two\n")
    kinds = [ev.event.value for ev in events]
    assert kinds[0] == "logs" and kinds[-1] == "done" and events[-1].data == "{}"
    assert output_of(events) == "echo: line one\nline two\n"


async def test_stream_sends_newlines_as_several_data_lines(make_client, root):
    pred = await bounded(make_client("chunks=1").models.predictions.async_create(
        model="meta/llama", input={"prompt": "a\nb"}, stream=True))
    async with aiohttp.ClientSession() as http:
        async with http.get(pred.urls["stream"], headers={"Accept": "text/event-stream"}) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            raw = await bounded(resp.read())
    assert b"event: output\nid: 1\ndata: echo: a\ndata: b\n\n" in raw
    assert raw.endswith(b"event: done\nid: 2\ndata: {}\n\n")


async def test_cancel(make_client):
    client = make_client()
    pred = await bounded(client.models.predictions.async_create(model="meta/llama", input={"prompt": "x"},
                                                                stream=True))
    await bounded(pred.async_cancel())
    assert pred.status == "canceled"
    events = [ev async for ev in pred.async_stream()]
    assert events[-1].event.value == "done" and events[-1].data == '{"reason":"canceled"}'


# -- scenarios -----------------------------------------------------------------------------------

async def test_scenario_in_model_name_both_paths(make_client):
    client = make_client()
    pred = await bounded(client.models.predictions.async_create(model=("meta", "llama::text=hi_you"),
                                                                input={"prompt": "x"}, wait=True))
    assert "".join(pred.output) == "hi you"
    out = await bounded(client.async_run("meta/llama::text=via_version", input={"prompt": "x"}))
    assert "".join([p async for p in out]) == "via version"


@pytest.mark.parametrize("status, retry_after", [(429, "2"), (500, None), (503, None)])
async def test_status_errors_are_replicate_errors(make_client, root, status, retry_after):
    scenario = f"status={status}" + (f",retry_after={retry_after}" if retry_after else "")
    with pytest.raises(ReplicateError) as err:
        await bounded(make_client(scenario).async_run("meta/llama", input={"prompt": "x"}))
    assert err.value.status == status and err.value.detail == f"emulated HTTP {status}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{root}/v1/models/meta/llama/predictions", json={"input": {"prompt": "x"}},
                             headers={"Authorization": "Bearer t", "x-emulate": scenario}) as resp:
            assert resp.headers.get("Retry-After") == retry_after
            assert resp.content_type == "application/problem+json"


async def test_missing_token_is_401(make_client, monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    with pytest.raises(ReplicateError) as err:
        await bounded(make_client(token=None).async_run("meta/llama", input={"prompt": "x"}))
    assert err.value.status == 401 and err.value.title == "Unauthenticated"


async def test_unknown_prediction_is_404(make_client):
    with pytest.raises(ReplicateError) as err:
        await bounded(make_client().predictions.async_get("nope"))
    assert err.value.status == 404


async def test_missing_prompt_is_422(make_client):
    with pytest.raises(ReplicateError) as err:
        await bounded(make_client().async_run("meta/llama", input={"max_tokens": 3}))
    assert err.value.status == 422


async def test_context_length_fails_prediction_and_stream(make_client):
    with pytest.raises(ModelError) as err:
        await bounded(make_client("context_length").async_run("meta/llama", input={"prompt": "x"}))
    assert "maximum context length" in str(err.value)
    with pytest.raises(RuntimeError) as err:  # the SDK raises on a stream `error` event
        await collect(make_client("context_length"), "meta/llama", "x")
    assert CONTEXT_MESSAGE in str(err.value)


async def test_chunks_and_text(make_client):
    events = await collect(make_client("chunks=3,text=one_two_three"), "meta/llama", "x")
    assert [ev.data for ev in events if ev.event.value == "output"] == ["one t", "wo t", "hree"]


async def test_error_after(make_client):
    seen: list = []
    with pytest.raises(RuntimeError, match="emulated error"):
        async for ev in await make_client("error_after=2").async_stream("meta/llama", input={"prompt": "hello"}):
            seen.append(ev)
    assert [ev.event.value for ev in seen] == ["logs", "output", "output"]


async def test_truncate_after_ends_without_done(make_client):
    events = await collect(make_client("truncate_after=2"), "meta/llama", "hello")
    assert [ev.event.value for ev in events] == ["logs", "output", "output"]


async def test_reset_after_drops_the_connection(make_client):
    with pytest.raises(httpx.HTTPError):
        await collect(make_client("reset_after=1"), "meta/llama", "hello")


async def test_malformed(make_client):
    with pytest.raises(ValueError):
        await bounded(make_client("malformed").async_run("meta/llama", input={"prompt": "x"}))
    events = await collect(make_client("malformed"), "meta/llama", "x")
    assert events[-1].event.value == "done" and events[-1].data == "{not json"


async def test_hang_never_answers(make_client):
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(make_client("hang").async_run("meta/llama", input={"prompt": "x"}), 0.3)


async def test_first_byte_inline_and_past_prefer_wait(make_client, root):
    started = time.monotonic()
    out = await bounded(make_client("first_byte=0.2").async_run("meta/llama", input={"prompt": "x"}))
    assert time.monotonic() - started >= 0.2 and "".join(out) == "echo: x"
    async with aiohttp.ClientSession() as http:  # Prefer: wait=0 is shorter than the delay: still starting
        async with http.post(f"{root}/v1/models/meta/llama/predictions", json={"input": {"prompt": "x"}},
                             headers={"Authorization": "Bearer t", "x-emulate": "first_byte=0.2",
                                      "Prefer": "wait=0"}) as resp:
            assert resp.status == 201 and (await resp.json())["status"] == "starting"


async def test_max_tokens_and_usage(make_client):
    pred = await bounded(make_client("max_tokens").models.predictions.async_create(
        model="meta/llama", input={"prompt": "a long prompt here", "max_tokens": 100}, wait=True))
    assert pred.metrics["output_token_count"] == 100 and "".join(pred.output) == "echo: a long"
    pred = await bounded(make_client("usage_in=11,usage_out=22").models.predictions.async_create(
        model="meta/llama", input={"prompt": "x"}, wait=True))
    assert (pred.metrics["input_token_count"], pred.metrics["output_token_count"]) == (11, 22)


async def test_stop_sequences_cut_the_reply(make_client):
    out = await bounded(make_client().async_run("meta/llama", input={"prompt": "one END two",
                                                                      "stop_sequences": "END,###"}))
    assert "".join(out) == "echo: one "


async def test_chunk_delay_and_profile_gap(aiohttp_server):
    server = await aiohttp_server(create_app(LatencyProfile(name="slow", p50=0.1, p95=0.1, tokens_per_s=20)))
    client = replicate.Client(api_token="t", base_url=f"http://{server.host}:{server.port}")
    try:
        started = time.monotonic()
        events = await collect(client, "meta/llama", "hello")
        elapsed = time.monotonic() - started
    finally:
        await client._async_client.aclose()
    assert output_of(events) == "echo: hello"
    assert elapsed >= 0.1 + 3 * 0.05 * 0.9  # first byte, then a gap between each of the 4 chunks


# -- the adapter against the emulator (the proxy's FollowUp loop, in miniature) ------------------

async def drive(root: str, req, model: str, **options):
    """chat_request -> send -> chat_response, following FollowUps; streams go through the decoder."""
    class Template:
        stop = ("<|im_end|>",)

        def render(self, r):
            return r.messages[-1].parts[0].text

    backend = ReplicateBackend(root, "r8_test", {}, msgspec.convert(options, Options))
    target = Target(model=model, chat_template=Template())
    http_req: HttpRequest = backend.chat_request(req, target)
    async with aiohttp.ClientSession() as http:
        for _ in range(20):
            async with http.request(http_req.method, http_req.url, data=http_req.body,
                                    headers=http_req.headers) as resp:
                if resp.status >= 400:
                    raise backend.parse_error(resp.status, resp.headers, await resp.read())
                if http_req.stream:
                    decoder, events = backend.stream_decoder(req, target), []
                    async for chunk in resp.content.iter_any():
                        events += decoder.feed(chunk)
                    return events + decoder.close()
                result = backend.chat_response(await resp.read(), req, target)
            if isinstance(result, ir.ChatResponse):
                return result
            await asyncio.sleep(min(result.delay, 0.01))
            http_req = result.request
    raise AssertionError("too many follow-ups")


def user(text: str, **kw) -> ir.ChatRequest:
    return ir.ChatRequest(model="m", messages=[ir.Message("user", [ir.Text(text)])], **kw)


@pytest.mark.parametrize("options", [{}, {"wait": 0}, {"prompt_mode": "simple"}])
async def test_adapter_non_stream_against_emulator(root, options):
    resp = await bounded(drive(root, user("hi\nthere", max_tokens=50), "meta/llama", **options))
    assert resp.choices[0].parts[0].text == "echo: hi\nthere"
    assert resp.choices[0].finish_reason == "stop" and resp.usage.output_tokens >= 1


async def test_adapter_stream_against_emulator(root):
    events = await bounded(drive(root, user("a\nb\n\nc", stream=True), f"meta/llama:{VERSION}::chunks=3"))
    resp = ir.fold_events(events, model="m", id="i", created=0)
    assert resp.choices[0].parts == [ir.Text("echo: a\nb\n\nc")]
    assert isinstance(events[-1], ir.End)


@pytest.mark.parametrize(
    "scenario, stream, kind",
    [("status=429,retry_after=1", False, "rate_limit"), ("context_length", False, "context_length"),
     ("context_length", True, "context_length"), ("error_after=1", True, "server"),
     ("truncate_after=1", True, "upstream_protocol"), ("malformed", False, "upstream_protocol"),
     ("malformed", True, "upstream_protocol")],
)
async def test_adapter_errors_against_emulator(root, scenario, stream, kind):
    with pytest.raises(ProxyError) as err:
        await bounded(drive(root, user("x", stream=stream), f"meta/llama::{scenario}"))
    assert err.value.kind == kind


async def test_adapter_length_against_emulator(root):
    resp = await bounded(drive(root, user("a long prompt", max_tokens=7), "meta/llama::max_tokens"))
    assert resp.choices[0].finish_reason == "length"


async def test_templated_prompt_echoes_last_user_turn(make_client):
    prompt = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nhello world<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")
    out = await bounded(make_client().async_run("meta/llama", input={
        "prompt": prompt, "prompt_template": "{prompt}", "stop_sequences": "<|eot_id|>"}))
    assert "".join(out) == "echo: hello world"
