"""What reaches the client on the wire, not what a tolerant SDK reassembles: content types, stream
framing and terminal events per client format, and the per-attempt decisions (pass-through, token
estimate, translation) when a request fails over to a deployment of another family.

One gateway with an emulator of every native backend kind serves every test (`wire` fixture)."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.conftest import proxy_url

KINDS = ("openai", "anthropic", "gemini", "ollama")


@pytest.fixture
async def wire(emulated_gateway):
    """The gateway with one model per backend kind (`m-<kind>`), an Anthropic model that always fails
    over (`m-anthropic-down` -> `m-openai`), and a raw HTTP session (no SDK smoothing anything over)."""
    models: dict[str, tuple] = {f"m-{kind}": (kind, "wire-model") for kind in KINDS}
    models["m-anthropic-down"] = ("anthropic", "claude::status=503", {"fallbacks": ["m-openai"]})
    server = await emulated_gateway(models)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield server, session


async def post(wire, path: str, body: dict, **headers) -> tuple[aiohttp.ClientResponse, bytes]:
    server, session = wire
    async with session.post(proxy_url(server, path), json=body, headers=headers) as r:
        return r, await r.read()


def sse_data(raw: bytes) -> list[bytes]:
    """The `data:` payloads of an SSE body, checking the framing: events end with a blank line."""
    assert raw.endswith(b"\n\n"), raw[-40:]
    events = [e for e in raw.split(b"\n\n") if e]
    out = []
    for event in events:
        lines = event.split(b"\n")
        assert all(line.startswith((b"data: ", b"event: ")) for line in lines), event
        out += [line[len(b"data: "):] for line in lines if line.startswith(b"data: ")]
    return out


# -- count_tokens: forwarded or estimated per attempt -------------------------------------------------


async def test_count_tokens_failing_over_from_anthropic_is_still_a_token_count(wire):
    """Regression: the decision used to be taken once from the first deployment (Anthropic: forward),
    so the fallback to an OpenAI backend ran a generation and answered a Message."""
    body = {"model": "m-anthropic-down", "messages": [{"role": "user", "content": "count these words please"}]}
    r, raw = await post(wire, "/v1/messages/count_tokens", body, **{"anthropic-version": "2023-06-01"})
    assert r.status == 200, raw
    assert json.loads(raw).keys() == {"input_tokens"} and json.loads(raw)["input_tokens"] > 0
    assert r.headers["x-llm-proxy-token-count"] == "estimate"
    assert r.headers["x-llm-proxy-deployment"].startswith("openai")


async def test_count_tokens_on_anthropic_is_forwarded(wire):
    body = {"model": "m-anthropic", "messages": [{"role": "user", "content": "count these words please"}]}
    r, raw = await post(wire, "/v1/messages/count_tokens", body, **{"anthropic-version": "2023-06-01"})
    assert r.status == 200 and "x-llm-proxy-token-count" not in r.headers
    assert json.loads(raw)["input_tokens"] > 0


async def test_gemini_count_tokens_estimated_on_other_families(wire):
    for model in ("m-openai", "m-ollama", "m-anthropic"):
        r, raw = await post(wire, f"/v1beta/models/{model}:countTokens",
                            {"contents": [{"role": "user", "parts": [{"text": "one two three four"}]}]})
        assert r.status == 200 and r.headers["x-llm-proxy-token-count"] == "estimate", (model, raw)
        assert json.loads(raw) == {"totalTokens": 5}


# -- Gemini streams on translated backends ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama", "gemini"])
async def test_gemini_stream_generate_content_is_sse_on_every_backend(wire, kind):
    """Regression: the URL's stream flag reached the context but not the parsed request, so translated
    backends were asked for one answer and the client got one JSON body as application/json."""
    r, raw = await post(wire, f"/v1beta/models/m-{kind}:streamGenerateContent?alt=sse",
                        {"contents": [{"role": "user", "parts": [{"text": "tell me a story"}]}]})
    assert r.status == 200, raw
    assert r.headers["Content-Type"].startswith("text/event-stream")
    chunks = [json.loads(d) for d in sse_data(raw)]
    assert len(chunks) >= 2  # really streamed: text arrives in several chunks
    assert "finishReason" in chunks[-1]["candidates"][0]  # the terminal chunk (Gemini has no [DONE])
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1] if c.get("candidates"))
    assert "".join(p.get("text", "") for c in chunks for p in c["candidates"][0].get("content", {}).get("parts", []))


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama", "gemini"])
async def test_gemini_generate_content_is_one_json_answer(wire, kind):
    r, raw = await post(wire, f"/v1beta/models/m-{kind}:generateContent",
                        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/json"), raw
    assert json.loads(raw)["candidates"][0]["finishReason"] == "STOP"


# -- every client format's stream on every backend kind ----------------------------------------------


def sse_events(raw: bytes) -> list[tuple[str | None, bytes]]:
    """(event name, data) per SSE event, checking the framing: `field: value` lines, a blank line after
    every event."""
    assert raw.endswith(b"\n\n"), raw[-60:]
    out = []
    for event in (e for e in raw.split(b"\n\n") if e):
        name, data = None, []
        for line in event.split(b"\n"):
            field, sep, value = line.partition(b": ")
            assert sep and field in (b"event", b"data"), line
            if field == b"event":
                name = value.decode()
            else:
                data.append(value)
        out.append((name, b"\n".join(data)))
    return out


def check_openai(r, raw):
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(raw)
    assert events[-1] == (None, b"[DONE]")
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def check_responses(r, raw):
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(raw)
    names = [n for n, _ in events]
    assert names[0] == "response.created" and names[-1] == "response.completed", names
    assert all(json.loads(d)["type"] == n for n, d in events)  # the event line names the payload's type
    return "".join(json.loads(d)["delta"] for n, d in events if n == "response.output_text.delta")


def check_anthropic(r, raw):
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(raw)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"], names
    assert all(json.loads(d)["type"] == n for n, d in events)
    assert json.loads(events[-2][1])["delta"]["stop_reason"] == "end_turn"
    return "".join(json.loads(d)["delta"].get("text", "") for n, d in events if n == "content_block_delta")


def check_ollama(r, raw):
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    assert raw.endswith(b"\n")
    lines = [json.loads(line) for line in raw.split(b"\n")[:-1]]
    assert [x["done"] for x in lines] == [False] * (len(lines) - 1) + [True]
    assert lines[-1]["done_reason"] == "stop" and lines[-1]["eval_count"] > 0
    return "".join(x["message"]["content"] for x in lines)


CLIENTS = {  # client format -> (path, body for model m, extra headers, check(response, bytes) -> text)
    "openai": ("/v1/chat/completions", lambda m: {"model": m, "stream": True,
                                                  "messages": [{"role": "user", "content": "tell me a story"}]},
               {}, check_openai),
    "responses": ("/v1/responses", lambda m: {"model": m, "stream": True, "input": "tell me a story"}, {},
                  check_responses),
    "anthropic": ("/v1/messages", lambda m: {"model": m, "max_tokens": 64, "stream": True,
                                             "messages": [{"role": "user", "content": "tell me a story"}]},
                  {"anthropic-version": "2023-06-01"}, check_anthropic),
    "ollama": ("/api/chat", lambda m: {"model": m, "messages": [{"role": "user", "content": "tell me a story"}]},
               {}, check_ollama),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("client", list(CLIENTS))
async def test_stream_wire_format_of_every_client_on_every_backend(wire, client, kind):
    """The bytes each client format receives, translated or passed through: its content type, its
    framing, its terminal event, and the text (the emulators echo the prompt)."""
    path, body, headers, check = CLIENTS[client]
    r, raw = await post(wire, path, body(f"m-{kind}"), **headers)
    assert r.status == 200, raw[:300]
    assert "story" in check(r, raw)
