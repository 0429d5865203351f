"""Every frontend's stream encoder against the same IR event sequences: its output is framed as its
declared content type says (SSE events or NDJSON lines, each payload JSON), and read back by the
stream decoder of the backend family that speaks its format it gives the same answer (text, tool
call, finish reason, usage).  An error after the stream started is one more frame in that framing."""

from __future__ import annotations

import json

import pytest

from adapters import ir, registry
from adapters.base import ApiRoute, ChatOp, InBody, InUrl, Target
from adapters.errors import ProxyError
from adapters.sse import NDJSONParser, SSEParser
from tests.conformance.rows import FRONTENDS, TEXT
from tests.conformance.test_backends import summary

NAMES = sorted(registry.FRONTENDS)
USAGE = ir.Usage(input_tokens=9, output_tokens=5)

SEQUENCES: dict[str, list[ir.Event]] = {
    "text": [
        ir.Start(id="r1", model="up", created=1), ir.BlockStart(0, "text"),
        *[ir.TextDelta(0, w) for w in ("Hello ", "brave", " new ", "world")], ir.BlockEnd(0),
        ir.Finish("stop"), ir.UsageEvent(USAGE), ir.End(),
    ],
    "tool": [
        ir.Start(id="r1", model="up", created=1), ir.BlockStart(0, "tool_call", "call_1", "get_weather"),
        ir.ToolArgsDelta(0, '{"city":'), ir.ToolArgsDelta(0, ' "Paris"}'), ir.BlockEnd(0),
        ir.Finish("tool_calls"), ir.UsageEvent(USAGE), ir.End(),
    ],
    "length": [
        ir.Start(id="r1", model="up", created=1), ir.BlockStart(0, "text"), ir.TextDelta(0, "Hello"),
        ir.BlockEnd(0), ir.Finish("length"), ir.UsageEvent(USAGE), ir.End(),
    ],
}
EXPECTED = {
    "text": (TEXT, [], "stop"),
    "tool": ("", [("get_weather", {"city": "Paris"})], "tool_calls"),
    "length": ("Hello", [], "length"),
}


def test_every_frontend_has_a_row():
    missing = [n for n in NAMES if n not in FRONTENDS]
    assert not missing, "\n".join(
        f"frontend {n!r} is not in the conformance suite: add `{n!r}: FrontendRow()` to FRONTENDS in "
        f"tests/conformance/rows.py (with `decoded_by=None` and a reason if no backend family speaks it)"
        for n in missing)


def chat_ops(name: str) -> list[ChatOp]:
    """The generation operations a frontend's routes declare (chat, completions, generate, ...)."""
    ops: list[ChatOp] = []
    for route in registry.frontend(name).routes():
        if isinstance(route, ApiRoute):
            where = route.target
            candidates = [where.operation] if isinstance(where, InBody) else list(where.operations.values())
            ops += [op for op in candidates if isinstance(op, ChatOp) and op not in ops]
    return ops


def frames(name: str, data: bytes) -> list[bytes]:
    """The payloads of an encoder's output, checking its framing."""
    frontend = registry.frontend(name)
    if frontend.stream_content_type == "application/x-ndjson":
        assert data.endswith(b"\n")
        parser = NDJSONParser()
        out = parser.feed(data) + parser.close()
    else:
        assert frontend.stream_content_type == "text/event-stream" and data.endswith(b"\n\n")
        parser = SSEParser()
        out = [ev.data for ev in parser.feed(data) + parser.close()]
        assert not parser.unterminated
    for payload in out:
        if payload != b"[DONE]":
            json.loads(payload)
    return out


def encode(op: ChatOp, events: list[ir.Event]) -> bytes:
    # include_usage: an OpenAI client sends usage only when it asked for it (stream_options)
    enc = op.stream_encoder(ir.ChatRequest(model="client-model", stream=True, include_usage=True), "client-model")
    return b"".join(enc.feed(ev) for ev in events)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sequence", list(SEQUENCES))
def test_encoder_framing_and_round_trip(name, sequence):
    row = FRONTENDS[name]
    ops = chat_ops(name)
    assert ops, f"frontend {name!r} declares no generation operation"
    for op in ops:
        if op.name in row.text_only and sequence == "tool":
            continue
        data = encode(op, SEQUENCES[sequence])
        assert frames(name, data)
        if row.decoded_by is None:
            continue
        backend = registry.provider_class(row.decoded_by)("http://127.0.0.1:9", None, {},
                                                             registry.provider_class(row.decoded_by).Options())
        dec = backend.stream_decoder(ir.ChatRequest(model="m", stream=True), Target(model="m"))
        text, calls, finish, usage = summary(dec.feed(data) + dec.close())
        assert (text, calls, finish) == EXPECTED[sequence], op.name
        assert usage is not None and (usage.input_tokens, usage.output_tokens) == (9, 5), op.name


@pytest.mark.parametrize("name", NAMES)
def test_error_after_the_stream_started_is_one_more_frame(name):
    for op in chat_ops(name):
        enc = op.stream_encoder(ir.ChatRequest(model="client-model", stream=True), "client-model")
        head = b"".join(enc.feed(ev) for ev in SEQUENCES["text"][:3])
        tail = enc.error(ProxyError("overloaded", "the backend is overloaded"))
        payloads = frames(name, head + tail)
        assert b"overloaded" in payloads[-1], payloads[-1]
        row = FRONTENDS[name]
        if row.decoded_by is not None:  # the decoder of the format sees an in-band error, not an answer
            backend = registry.provider_class(row.decoded_by)("http://127.0.0.1:9", None, {},
                                                                 registry.provider_class(row.decoded_by).Options())
            dec = backend.stream_decoder(ir.ChatRequest(model="m", stream=True), Target(model="m"))
            with pytest.raises(ProxyError):
                dec.feed(head + tail)
                dec.close()


def test_url_addressed_frontends_declare_their_operations():
    for name in NAMES:
        for route in registry.frontend(name).routes():
            if isinstance(route, ApiRoute) and isinstance(route.target, InUrl):
                assert "{target}" in route.path and route.target.operations
