"""Gemini streams: the backend decoder (whole, byte by byte, split at every position; faults) and the
client-side encoder (chunks, whole tool calls, signatures, finish/usage, errors).  No sockets."""

from __future__ import annotations

import pytest

from adapters import gemini_stream, ir, jsonio
from adapters.errors import ProxyError
from adapters.gemini_stream import GeminiStreamDecoder, GeminiStreamEncoder
from adapters.sse import SSEParser


@pytest.fixture(autouse=True)
def fixed_ids(monkeypatch):
    monkeypatch.setattr(gemini_stream, "synth_id", lambda prefix="call_", length=24: prefix + "X" * length)


def data(obj) -> bytes:
    return b"data: " + jsonio.dumps(obj) + b"\r\n\r\n"


def chunk(parts, finish=None, usage=None):
    cand = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    out = {"candidates": [cand], "modelVersion": "gemini-2.5-flash", "responseId": "rid"}
    if usage:
        out["usageMetadata"] = usage
    return data(out)


STREAM = b"".join([
    chunk([{"text": "Let me ", "thought": True}], usage={"promptTokenCount": 5, "totalTokenCount": 5}),
    chunk([{"text": "think. é ✓", "thought": True, "thoughtSignature": "U0lH"}]),
    chunk([{"text": "Hello"}]),
    chunk([{"text": " wörld\u2028"}, {"functionCall": {"name": "f", "args": {"city": "Paris"}}, "thoughtSignature": "U0lI"}]),
    chunk([{"functionCall": {"name": "g", "id": "given"}}], finish="STOP",
          usage={"promptTokenCount": 5, "candidatesTokenCount": 7, "thoughtsTokenCount": 3, "totalTokenCount": 15}),
])

EVENTS = [
    ir.Start(id="rid", model="gemini-2.5-flash"),
    ir.BlockStart(0, "reasoning", provider="gemini"), ir.ReasoningDelta(0, "Let me "), ir.ReasoningDelta(0, "think. é ✓"),
    ir.ReasoningSignature(0, "U0lH"), ir.BlockEnd(0),
    ir.BlockStart(1, "text"), ir.TextDelta(1, "Hello"), ir.TextDelta(1, " wörld\u2028"), ir.BlockEnd(1),
    ir.BlockStart(2, "reasoning", provider="gemini"), ir.ReasoningSignature(2, "U0lI"), ir.BlockEnd(2),
    ir.BlockStart(3, "tool_call", tool_call_id="call_" + "X" * 24, tool_name="f"), ir.ToolArgsDelta(3, '{"city":"Paris"}'), ir.BlockEnd(3),
    ir.BlockStart(4, "tool_call", tool_call_id="given", tool_name="g"), ir.ToolArgsDelta(4, "{}"), ir.BlockEnd(4),
    ir.Finish(reason="tool_calls", raw="STOP"),
    ir.UsageEvent(ir.Usage(input_tokens=5, output_tokens=10, reasoning_tokens=3)),
    ir.End(),
]


def decode_pieces(pieces) -> list[ir.Event]:
    d = GeminiStreamDecoder()
    out: list[ir.Event] = []
    for p in pieces:
        out += d.feed(p)
    return out + d.close()


def test_decoder_whole():
    assert decode_pieces([STREAM]) == EVENTS


def test_decoder_bytewise():
    assert decode_pieces([STREAM[i:i + 1] for i in range(len(STREAM))]) == EVENTS


def test_decoder_every_split():
    for i in range(len(STREAM) + 1):
        assert decode_pieces([STREAM[:i], STREAM[i:]]) == EVENTS, i


def test_decoder_folds_to_the_parts_a_client_sends_back():
    resp = ir.fold_events(decode_pieces([STREAM]), model="m", id="x", created=0)
    assert resp.choices[0].parts[:3] == [ir.Reasoning(text="Let me think. é ✓", signature="U0lH", provider="gemini"),
                                         ir.Text(text="Hello wörld\u2028"), ir.Reasoning(signature="U0lI", provider="gemini")]


@pytest.mark.parametrize("raw,reason", [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
                                        ("MALFORMED_FUNCTION_CALL", "error"), ("OTHER", "stop")])
def test_decoder_finish_rows(raw, reason):
    events = decode_pieces([chunk([{"text": "x"}]), chunk([], finish=raw)])
    assert ir.Finish(reason=reason, raw=raw) in events and events[-1] == ir.End()


def test_decoder_keeps_the_last_cumulative_usage():
    events = decode_pieces([chunk([{"text": "a"}], usage={"promptTokenCount": 2, "candidatesTokenCount": 1}),
                            chunk([{"text": "b"}], finish="STOP", usage={"promptTokenCount": 2, "candidatesTokenCount": 2})])
    assert [e for e in events if isinstance(e, ir.UsageEvent)] == [ir.UsageEvent(ir.Usage(input_tokens=2, output_tokens=2))]


def test_decoder_blocked_prompt():
    events = decode_pieces([data({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}})])
    assert events[1:] == [ir.Finish(reason="content_filter", raw="SAFETY"), ir.UsageEvent(ir.Usage(input_tokens=3)), ir.End()]


def test_decoder_ignores_chunks_after_the_finish():
    events = decode_pieces([chunk([{"text": "a"}], finish="STOP"), chunk([{"text": "late"}])])
    assert ir.TextDelta(0, "late") not in events


def test_decoder_in_band_error_after_events_is_raised_next():
    d = GeminiStreamDecoder()
    first = d.feed(chunk([{"text": "a"}]) + data({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}))
    assert ir.TextDelta(0, "a") in first
    with pytest.raises(ProxyError) as e:
        d.close()
    assert e.value.kind == "rate_limit" and e.value.message == "slow down"


# -- encoder ------------------------------------------------------------------------------------------


def encode(events, req=None) -> tuple[list[dict], bytes]:
    enc = GeminiStreamEncoder(req or ir.ChatRequest(model="m"), "client-model")
    raw = b"".join(enc.feed(e) for e in events)
    parser = SSEParser()
    return [jsonio.loads(ev.data) for ev in parser.feed(raw) + parser.close()], raw


def parts_of(chunks):
    return [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]


def test_encoder_round_trips_the_decoded_stream():
    chunks, _ = encode(EVENTS)
    assert all(c["responseId"] == "rid" and c["modelVersion"] == "client-model" for c in chunks)
    assert parts_of(chunks) == [
        {"text": "Let me ", "thought": True}, {"text": "think. é ✓", "thought": True},
        {"text": "", "thought": True, "thoughtSignature": "U0lH"},
        {"text": "Hello"}, {"text": " wörld\u2028"},
        {"functionCall": {"name": "f", "args": {"city": "Paris"}, "id": "call_" + "X" * 24}, "thoughtSignature": "U0lI"},
        {"functionCall": {"name": "g", "args": {}, "id": "given"}},
    ]
    last = chunks[-1]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["usageMetadata"] == {"promptTokenCount": 5, "candidatesTokenCount": 7, "thoughtsTokenCount": 3, "totalTokenCount": 15}
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])


def test_encoder_interleaved_tool_fragments_are_sent_whole():
    events = [ir.Start(id="x"), ir.BlockStart(0, "tool_call", tool_call_id="a", tool_name="fa"),
              ir.BlockStart(1, "tool_call", tool_call_id="b", tool_name="fb"),
              ir.ToolArgsDelta(0, '{"x":'), ir.ToolArgsDelta(1, '{"y":2}'), ir.ToolArgsDelta(0, "1}"),
              ir.BlockEnd(1), ir.BlockEnd(0), ir.Finish(reason="tool_calls"), ir.End()]
    chunks, _ = encode(events)
    assert parts_of(chunks) == [{"functionCall": {"name": "fb", "args": {"y": 2}, "id": "b"}},
                                {"functionCall": {"name": "fa", "args": {"x": 1}, "id": "a"}}]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_encoder_foreign_signatures_are_not_shown_and_held_signature_lands_on_last_chunk():
    events = [ir.BlockStart(0, "reasoning", provider="anthropic"), ir.ReasoningDelta(0, "t"), ir.ReasoningSignature(0, "ant"),
              ir.BlockEnd(0), ir.BlockStart(1, "reasoning", provider="gemini"), ir.ReasoningSignature(1, "U0lH"), ir.BlockEnd(1),
              ir.Finish(reason="length"), ir.UsageEvent(ir.Usage(input_tokens=1, output_tokens=2)), ir.End()]
    chunks, _ = encode(events)
    assert parts_of(chunks) == [{"text": "t", "thought": True}, {"text": "", "thoughtSignature": "U0lH"}]
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_encoder_error_finish_becomes_an_error_event_and_nothing_follows():
    chunks, raw = encode([ir.BlockStart(0, "text"), ir.TextDelta(0, "a"), ir.Finish(reason="error", raw="MALFORMED_FUNCTION_CALL"),
                          ir.UsageEvent(ir.Usage()), ir.End()])
    assert chunks[-1] == {"error": {"code": 500, "message": chunks[-1]["error"]["message"], "status": "INTERNAL"}}
    assert "MALFORMED_FUNCTION_CALL" in chunks[-1]["error"]["message"] and len(chunks) == 2


def test_encoder_error_method():
    enc = GeminiStreamEncoder(ir.ChatRequest(model="m"), "m")
    enc.feed(ir.Start())
    out = enc.error(ProxyError("overloaded", "busy"))
    assert out.startswith(b"data: ") and out.endswith(b"\n\n")
    assert jsonio.loads(out[6:]) == {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}
    assert enc.error(ProxyError("server", "again")) == b"" and enc.feed(ir.End()) == b""


def test_encoder_empty_stream_still_finishes():
    chunks, _ = encode([ir.Start(), ir.End()])
    assert chunks == [{"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "STOP", "index": 0}],
                       "modelVersion": "client-model", "responseId": chunks[0]["responseId"]}]


def test_text_chunk_template_is_the_generic_chunk_byte_for_byte():
    """Text deltas are written around the text; the bytes must be those of the generic chunk, also
    after the response id changes."""
    from adapters.gemini_stream import GeminiStreamEncoder

    enc = GeminiStreamEncoder(ir.ChatRequest(model="m"), 'gemini "quoted" 🦙')
    for start_id in (None, "resp-1", "resp-2"):
        if start_id:
            enc.feed(ir.Start(id=start_id))
        for text in ("hi", 'quote " backslash \\', "line\nbreak\r\ttab", "🦙 \u2028 \x00", "x" * 5000):
            assert enc._text(text) == enc._chunk([{"text": text}])
