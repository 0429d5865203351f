"""Cohere v2 stream decoder: whole, byte by byte and split at every position; tool plans, thinking,
citations skipped, finish rows, in-stream ERROR, truncation.  No sockets."""

from __future__ import annotations

import pytest

from adapters import ir, jsonio
from adapters.cohere_stream import CohereStreamDecoder
from adapters.errors import ProxyError


def ev(obj) -> bytes:
    return b"event: " + obj["type"].encode() + b"\r\ndata: " + jsonio.dumps(obj) + b"\r\n\r\n"


def content(kind: str, index: int, **c) -> bytes:
    return ev({"type": kind, "index": index, "delta": {"message": {"content": c}}})


def call(kind: str, index: int, **tc) -> bytes:
    return ev({"type": kind, "index": index, "delta": {"message": {"tool_calls": tc}}})


USAGE = {"billed_units": {"input_tokens": 3, "output_tokens": 9}, "tokens": {"input_tokens": 10, "output_tokens": 9},
         "cached_tokens": 4}
STREAM = b"".join([
    ev({"type": "message-start", "id": "gen-1", "delta": {"message": {"role": "assistant"}}}),
    content("content-start", 0, type="thinking", thinking=""),
    content("content-delta", 0, thinking="Hmm é"),
    ev({"type": "content-end", "index": 0}),
    ev({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will "}}}),
    ev({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "look ✓\u2028"}}}),
    call("tool-call-start", 0, id="c1", type="function", function={"name": "f", "arguments": ""}),
    call("tool-call-delta", 0, function={"arguments": '{"city":'}),
    ev({"type": "citation-start", "index": 0, "delta": {"message": {"citations": {"start": 0, "end": 1, "text": "x"}}}}),
    ev({"type": "citation-end", "index": 0}),
    call("tool-call-delta", 0, function={"arguments": '"Paris"}'}),
    ev({"type": "tool-call-end", "index": 0}),
    call("tool-call-start", 1, id="c2", type="function", function={"name": "g", "arguments": "{}"}),
    ev({"type": "tool-call-end", "index": 1}),
    ev({"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": USAGE}}),
])
EVENTS = [
    ir.Start(id="gen-1", model="command-r"),
    ir.BlockStart(0, "reasoning", provider="cohere"), ir.ReasoningDelta(0, "Hmm é"), ir.BlockEnd(0),
    ir.BlockStart(1, "text"), ir.TextDelta(1, "I will "), ir.TextDelta(1, "look ✓\u2028"), ir.BlockEnd(1),
    ir.BlockStart(2, "tool_call", tool_call_id="c1", tool_name="f"),
    ir.ToolArgsDelta(2, '{"city":'), ir.ToolArgsDelta(2, '"Paris"}'), ir.BlockEnd(2),
    ir.BlockStart(3, "tool_call", tool_call_id="c2", tool_name="g"), ir.ToolArgsDelta(3, "{}"), ir.BlockEnd(3),
    ir.Finish(reason="tool_calls", raw="TOOL_CALL"),
    ir.UsageEvent(ir.Usage(input_tokens=10, output_tokens=9, cached_input_tokens=4)),
    ir.End(),
]


def decode(pieces) -> list[ir.Event]:
    d = CohereStreamDecoder("command-r")
    out: list[ir.Event] = []
    for p in pieces:
        out += d.feed(p)
    return out + d.close()


def test_whole():
    assert decode([STREAM]) == EVENTS


def test_bytewise():
    assert decode([STREAM[i:i + 1] for i in range(len(STREAM))]) == EVENTS


def test_every_split():
    for i in range(len(STREAM) + 1):
        assert decode([STREAM[:i], STREAM[i:]]) == EVENTS, i


def test_folds_to_plan_text_then_calls():
    resp = ir.fold_events(decode([STREAM]), model="m", id="x", created=0)
    parts = resp.choices[0].parts
    assert parts[1] == ir.Text(text="I will look ✓\u2028")
    assert parts[2] == ir.ToolCall(id="c1", name="f", arguments='{"city":"Paris"}')


def text_stream(finish: str, usage=None) -> bytes:
    end = {"finish_reason": finish, **({"usage": usage} if usage else {})}
    return b"".join([ev({"type": "message-start", "id": "g"}), content("content-start", 0, type="text", text=""),
                     content("content-delta", 0, text="hi"), ev({"type": "content-end", "index": 0}),
                     ev({"type": "message-end", "delta": end})])


@pytest.mark.parametrize("raw,reason", [("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"),
                                        ("TOOL_CALL", "stop"), ("TIMEOUT", "error"), ("SOMETHING_NEW", "stop")])
def test_finish_rows(raw, reason):
    events = decode([text_stream(raw)])
    assert events[-2:] == [ir.Finish(reason=reason, raw=raw), ir.End()]  # no usage given: no UsageEvent


def test_message_end_with_error_is_an_in_stream_error_after_the_text():
    data = text_stream("COMPLETE").replace(b'{"finish_reason":"COMPLETE"}', b'{"finish_reason":"ERROR","error":"boom"}')
    d = CohereStreamDecoder("m")
    first = d.feed(data)
    assert ir.TextDelta(0, "hi") in first
    with pytest.raises(ProxyError) as e:
        d.close()
    assert e.value.kind == "server" and e.value.message == "boom"


def test_truncated_stream():
    d = CohereStreamDecoder("m")
    d.feed(text_stream("COMPLETE").split(b"event: message-end")[0])
    with pytest.raises(ProxyError) as e:
        d.close()
    assert e.value.kind == "upstream_protocol"


def test_invalid_json_event():
    with pytest.raises(ProxyError) as e:
        decode([b"event: content-delta\ndata: {nope\n\n"])
    assert e.value.kind == "upstream_protocol"


def test_plan_without_calls_is_closed_at_the_end_and_unknown_events_skipped():
    data = b"".join([ev({"type": "message-start", "id": "g"}), ev({"type": "debug", "prompt": "p"}),
                     ev({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "plan"}}}),
                     ev({"type": "message-end", "delta": {"finish_reason": "COMPLETE"}})])
    assert decode([data])[1:] == [ir.BlockStart(0, "text"), ir.TextDelta(0, "plan"), ir.BlockEnd(0),
                                  ir.Finish(reason="stop", raw="COMPLETE"), ir.End()]


@pytest.mark.parametrize("raw, stops, named", [("STOP_SEQUENCE", ["END"], "END"), ("STOP_SEQUENCE", ["A", "B"], None),
                                               ("STOP_SEQUENCE", [], None), ("COMPLETE", ["END"], None)])
def test_the_only_stop_sequence_sent_is_named(raw, stops, named):
    d = CohereStreamDecoder("m", stops)
    events = d.feed(text_stream(raw)) + d.close()
    assert events[-2] == ir.Finish(reason="stop", raw=raw, stop_sequence=named)
