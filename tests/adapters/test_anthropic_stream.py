"""Anthropic streams: SSE -> IR (decoder) and IR -> SSE (encoder), checked with the SDK's accumulator."""

from __future__ import annotations

import pytest
from anthropic.lib.streaming._messages import accumulate_event

from adapters import ir, jsonio
from adapters.anthropic_backend import AnthropicBackend, AnthropicOptions
from adapters.anthropic_frontend import AnthropicFrontend
from adapters.base import Target
from adapters.errors import ProxyError
from adapters.sse import SSEParser

TARGET = Target(model="claude")
BACKEND = AnthropicBackend("https://api.example", "k", {}, AnthropicOptions())
REQ = ir.ChatRequest(model="claude", stream=True)


def sse(name: str, data: dict) -> bytes:
    return f"event: {name}\r\ndata: {jsonio.dumps_str(data)}\r\n\r\n".encode()


def delta(index: int, d: dict) -> bytes:
    return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})


def block(index: int, content_block: dict) -> bytes:
    return sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": content_block})


def stop(index: int) -> bytes:
    return sse("content_block_stop", {"type": "content_block_stop", "index": index})


START = sse("message_start", {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
    "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 2, "output_tokens": 1}}})


def end(stop_reason="tool_use", output=42, stop_sequence=None) -> bytes:
    return sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                 "usage": {"output_tokens": output}}) + sse("message_stop", {"type": "message_stop"})


FIXTURE = b"".join([
    START,
    block(0, {"type": "thinking", "thinking": "", "signature": ""}),
    sse("ping", {"type": "ping"}),
    delta(0, {"type": "thinking_delta", "thinking": "I think "}),
    delta(0, {"type": "thinking_delta", "thinking": "\u00e9\u2028 so"}),
    delta(0, {"type": "signature_delta", "signature": "SIG=="}),
    stop(0),
    block(1, {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}}),
    delta(1, {"type": "input_json_delta", "partial_json": '{"q":1}'}),
    stop(1),
    block(2, {"type": "text", "text": ""}),
    delta(2, {"type": "text_delta", "text": "Hel"}),
    delta(2, {"type": "citations_delta", "citation": {"type": "char_location"}}),
    delta(2, {"type": "text_delta", "text": "lo \U0001f600"}),
    stop(2),
    block(3, {"type": "redacted_thinking", "data": "OPAQUE"}),
    stop(3),
    block(4, {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}),
    delta(4, {"type": "input_json_delta", "partial_json": ""}),
    delta(4, {"type": "input_json_delta", "partial_json": '{"city": "Pa'}),
    delta(4, {"type": "input_json_delta", "partial_json": 'ris"}'}),
    stop(4),
    sse("unknown_future_event", {"type": "unknown_future_event"}),
    end(),
])

EXPECTED = [
    ir.Start(id="msg_1", model="claude-x"),
    ir.BlockStart(0, "reasoning", provider="anthropic"),
    ir.ReasoningDelta(0, "I think "),
    ir.ReasoningDelta(0, "\u00e9\u2028 so"),
    ir.ReasoningSignature(0, "SIG=="),
    ir.BlockEnd(0),
    ir.BlockStart(1, "text"),
    ir.TextDelta(1, "Hel"),
    ir.TextDelta(1, "lo \U0001f600"),
    ir.BlockEnd(1),
    ir.BlockStart(2, "reasoning", provider="anthropic"),
    ir.RedactedReasoning(2, "OPAQUE"),
    ir.BlockEnd(2),
    ir.BlockStart(3, "tool_call", tool_call_id="toolu_9", tool_name="get_weather"),
    ir.ToolArgsDelta(3, '{"city": "Pa'),
    ir.ToolArgsDelta(3, 'ris"}'),
    ir.BlockEnd(3),
    ir.Finish(reason="tool_calls", raw="tool_use"),
    ir.UsageEvent(ir.Usage(input_tokens=16, output_tokens=42, cached_input_tokens=4, cache_write_tokens=2)),
    ir.End(),
]


def decode(chunks, req: ir.ChatRequest = REQ) -> list[ir.Event]:
    dec = BACKEND.stream_decoder(req, TARGET)
    events: list[ir.Event] = []
    for c in chunks:
        events += dec.feed(c)
    return events + dec.close()


# ------------------------------------------------------------------------------------------------
# Decoder


def test_decoder_whole():
    assert decode([FIXTURE]) == EXPECTED


def test_decoder_byte_by_byte():
    assert decode([FIXTURE[i : i + 1] for i in range(len(FIXTURE))]) == EXPECTED


def test_decoder_every_split():
    for i in range(len(FIXTURE) + 1):
        got = decode([FIXTURE[:i], FIXTURE[i:]])
        assert ir.fold_events(got, model="m", id="x", created=0) == ir.fold_events(EXPECTED, model="m", id="x", created=0), i
        assert got == EXPECTED, i


def test_streamed_tool_arguments_equal_non_streamed():
    folded = ir.fold_events(decode([FIXTURE]), model="m", id="x", created=0)
    body = {"id": "msg_1", "model": "claude-x", "stop_reason": "tool_use", "content": [
        {"type": "thinking", "thinking": "I think \u00e9\u2028 so", "signature": "SIG=="},
        {"type": "text", "text": "Hello \U0001f600"}, {"type": "redacted_thinking", "data": "OPAQUE"},
        {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}}],
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 2, "output_tokens": 42}}
    whole = BACKEND.chat_response(jsonio.dumps(body), REQ, TARGET)
    streamed_call, whole_call = folded.choices[0].parts[3], whole.choices[0].parts[3]
    assert jsonio.loads(streamed_call.arguments) == jsonio.loads(whole_call.arguments)
    assert (streamed_call.id, streamed_call.name) == (whole_call.id, whole_call.name)
    # fold_events cannot know the reasoning's provider (IR BlockStart carries none): compare the rest.
    (r1, t1, x1), (r2, t2, x2) = folded.choices[0].parts[:3], whole.choices[0].parts[:3]
    assert (r1.text, r1.signature, t1, x1) == (r2.text, r2.signature, t2, x2)
    assert folded.usage == whole.usage and folded.choices[0].finish_reason == whole.choices[0].finish_reason


@pytest.mark.parametrize(
    ("stop_reason", "reason"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
     ("model_context_window_exceeded", "length"), ("refusal", "content_filter"), ("pause_turn", "pause")],
)
def test_decoder_stop_reasons(stop_reason, reason):
    events = decode([START, block(0, {"type": "text", "text": ""}), delta(0, {"type": "text_delta", "text": "x"}), stop(0),
                     end(stop_reason, stop_sequence="END" if stop_reason == "stop_sequence" else None)])
    fin = events[-3]
    assert fin == ir.Finish(reason=reason, raw=stop_reason, stop_sequence="END" if stop_reason == "stop_sequence" else None)


def test_decoder_tool_without_fragments_gets_empty_object_and_usage_override():
    stream = [START, block(0, {"type": "tool_use", "id": "t", "name": "f", "input": {}}), stop(0),
              sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                                    "usage": {"output_tokens": 5, "input_tokens": 99}}),
              sse("message_stop", {"type": "message_stop"})]
    events = decode(stream)
    assert ir.ToolArgsDelta(0, "{}") in events
    assert events[-2] == ir.UsageEvent(ir.Usage(input_tokens=105, output_tokens=5, cached_input_tokens=4, cache_write_tokens=2))


def test_decoder_output_tokens_replace_not_add():
    two = sse("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 5}})
    events = decode([START, two, end("end_turn", output=9)])
    assert events[-2].usage.output_tokens == 9


@pytest.mark.parametrize(
    ("etype", "kind"), [("overloaded_error", "overloaded"), ("api_error", "server"), ("rate_limit_error", "rate_limit")]
)
def test_decoder_error_event_raises(etype, kind):
    dec = BACKEND.stream_decoder(REQ, TARGET)
    dec.feed(START)
    with pytest.raises(ProxyError) as e:
        dec.feed(sse("error", {"type": "error", "error": {"type": etype, "message": "boom"}}))
    assert (e.value.kind, e.value.message) == (kind, "boom")


@pytest.mark.parametrize(("schema", "fragments", "text"), [
    ({"type": "object"}, ['{"a":', " 1}"], '{"a": 1}'),
    ({"type": "array"}, ['{"value": [1,', " 2]}"], "[1,2]"),
])
def test_decoder_schema_tool_becomes_text(schema, fragments, text):
    req = ir.ChatRequest(model="m", stream=True, response_format=ir.ResponseFormat(type="json_schema", name="ans", schema=schema))
    stream = [START, block(0, {"type": "tool_use", "id": "t", "name": "ans", "input": {}})]
    stream += [delta(0, {"type": "input_json_delta", "partial_json": f}) for f in fragments] + [stop(0), end("tool_use")]
    folded = ir.fold_events(decode(stream, req), model="m", id="x", created=0)
    assert folded.choices[0].parts == [ir.Text(text=text)] and folded.choices[0].finish_reason == "stop"


# ------------------------------------------------------------------------------------------------
# Encoder

FE = AnthropicFrontend()


def encode(events: list[ir.Event]) -> bytes:
    enc = FE.stream_encoder(REQ, "client-model")
    return b"".join(enc.feed(e) for e in events)


def parse_sse(data: bytes) -> list[tuple[str, dict]]:
    return [(e.event, jsonio.loads(e.data)) for e in SSEParser().feed(data)]


def check_well_formed(events: list[tuple[str, dict]]) -> None:
    """Anthropic's rules: names equal types, blocks sequential from 0, every start paired with a stop,
    message_delta after all blocks, message_stop last."""
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    open_index, next_index = None, 0
    for name, data in events:
        assert data["type"] == name
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index, next_index = None, next_index + 1
        elif name == "message_delta":
            assert open_index is None
    assert [n for n, _ in events].count("message_delta") == 1


def sdk_message(events: list[tuple[str, dict]]):
    """The final message as anthropic-python's own stream accumulator builds it."""
    snapshot, bufs = None, {}
    for _, data in events:
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
    return snapshot


def test_encoder_round_trip_through_the_sdk():
    out = parse_sse(encode(EXPECTED))
    check_well_formed(out)
    msg = sdk_message(out)
    assert msg.id == "msg_1" and msg.model == "client-model"
    assert [b.type for b in msg.content] == ["thinking", "text", "redacted_thinking", "tool_use"]
    assert msg.content[0].thinking == "I think \u00e9\u2028 so" and msg.content[0].signature == "SIG=="
    assert msg.content[1].text == "Hello \U0001f600"
    assert msg.content[2].data == "OPAQUE"
    assert msg.content[3].input == {"city": "Paris"} and msg.content[3].id == "toolu_9"
    assert msg.stop_reason == "tool_use"
    assert (msg.usage.input_tokens, msg.usage.output_tokens, msg.usage.cache_read_input_tokens) == (10, 42, 4)


def test_encoder_interleaved_openai_style_events():
    """An OpenAI backend interleaves text and two tool calls' fragments; Anthropic blocks may not."""
    events = [
        ir.Start(id="chatcmpl-1"),
        ir.BlockStart(0, "text"), ir.TextDelta(0, "Let me "),
        ir.BlockStart(1, "tool_call", tool_call_id="call_a", tool_name="f"),
        ir.ToolArgsDelta(1, '{"x"'),
        ir.TextDelta(0, "check. "),
        ir.BlockStart(2, "tool_call", tool_call_id="call_b", tool_name="g"),
        ir.ToolArgsDelta(2, '{"y": '),
        ir.ToolArgsDelta(1, ": 1}"),
        ir.ToolArgsDelta(2, "2}"),
        ir.BlockEnd(1),
        ir.TextDelta(0, "Done."),
        ir.BlockEnd(2), ir.BlockEnd(0),
        ir.Finish(reason="tool_calls", raw="tool_calls"),
        ir.UsageEvent(ir.Usage(input_tokens=5, output_tokens=6)),
        ir.End(),
    ]
    out = parse_sse(encode(events))
    check_well_formed(out)
    msg = sdk_message(out)
    assert msg.id == "msg_chatcmpl-1"
    texts = "".join(b.text for b in msg.content if b.type == "text")
    assert texts == "Let me check. Done."
    tools = [(b.id, b.name, b.input) for b in msg.content if b.type == "tool_use"]
    assert tools == [("call_a", "f", {"x": 1}), ("call_b", "g", {"y": 2})]
    assert msg.stop_reason == "tool_use" and msg.usage.output_tokens == 6


def test_encoder_interleaving_survives_every_order_of_two_tools():
    """Tool B's fragments all arrive before tool A's: each still ends up one complete block."""
    events = [ir.BlockStart(0, "tool_call", tool_call_id="a", tool_name="f"),
              ir.BlockStart(1, "tool_call", tool_call_id="b", tool_name="g"),
              ir.ToolArgsDelta(1, '{"b":'), ir.ToolArgsDelta(1, "2}"), ir.BlockEnd(1),
              ir.ToolArgsDelta(0, '{"a":1}'), ir.BlockEnd(0),
              ir.Finish(reason="tool_calls"), ir.End()]
    out = parse_sse(encode(events))
    check_well_formed(out)
    msg = sdk_message(out)
    assert [(b.id, b.input) for b in msg.content] == [("a", {"a": 1}), ("b", {"b": 2})]


def test_encoder_holds_finish_until_usage():
    enc = FE.stream_encoder(REQ, "m")
    enc.feed(ir.Start(id="msg_x"))
    enc.feed(ir.BlockStart(0, "text"))
    assert b"content_block_start" in enc.feed(ir.TextDelta(0, "hi"))
    assert enc.feed(ir.Finish(reason="stop", stop_sequence="END")) == b""
    out = parse_sse(enc.feed(ir.UsageEvent(ir.Usage(input_tokens=3, output_tokens=4))))
    assert [n for n, _ in out] == ["content_block_stop", "message_delta"]
    assert out[1][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    assert out[1][1]["usage"]["output_tokens"] == 4
    assert parse_sse(enc.feed(ir.End())) == [("message_stop", {"type": "message_stop"})]


def test_encoder_finish_without_usage_is_sent_at_end():
    out = parse_sse(encode([ir.Start(), ir.Finish(reason="length"), ir.End()]))
    check_well_formed(out)
    assert out[1][1]["delta"]["stop_reason"] == "max_tokens"
    assert out[0][1]["message"]["usage"] == {"input_tokens": 0, "output_tokens": 0}


@pytest.mark.parametrize(
    ("reason", "stop_reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "end_turn"), ("content_filter", "refusal"),
     ("pause", "pause_turn")],
)
def test_encoder_stop_reasons(reason, stop_reason):
    """tool_calls without any tool block becomes end_turn (consistency rule)."""
    out = parse_sse(encode([ir.Start(), ir.Finish(reason=reason), ir.UsageEvent(ir.Usage()), ir.End()]))
    assert out[1][1]["delta"]["stop_reason"] == stop_reason


def test_encoder_drops_unsigned_reasoning():
    events = [ir.Start(), ir.BlockStart(0, "reasoning"), ir.ReasoningDelta(0, "vllm thoughts"), ir.BlockEnd(0),
              ir.BlockStart(1, "text"), ir.TextDelta(1, "answer"), ir.BlockEnd(1), ir.Finish(reason="stop"), ir.End()]
    out = parse_sse(encode(events))
    check_well_formed(out)
    assert [b.type for b in sdk_message(out).content] == ["text"]


def test_encoder_error_is_terminal():
    enc = FE.stream_encoder(REQ, "m")
    enc.feed(ir.Start())
    enc.feed(ir.TextDelta(0, "partial"))
    (name, data), = parse_sse(enc.error(ProxyError("overloaded", "busy")))
    assert name == "error" and data == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    assert enc.feed(ir.End()) == b"" and enc.error(ProxyError("server", "x")) == b""


def test_encoder_without_start_event_still_opens_the_message():
    out = parse_sse(encode([ir.TextDelta(0, "x"), ir.End()]))
    check_well_formed(out)
    assert out[0][1]["message"]["id"].startswith("msg_")


def test_decoder_then_encoder_is_faithful():
    """Anthropic SSE -> IR -> Anthropic SSE keeps blocks, ids, signature, stop reason and usage."""
    out = parse_sse(encode(decode([FIXTURE])))
    check_well_formed(out)
    msg = sdk_message(out)
    assert [b.type for b in msg.content] == ["thinking", "text", "redacted_thinking", "tool_use"]
    assert msg.usage.input_tokens == 10 and msg.usage.cache_creation_input_tokens == 2


@pytest.mark.parametrize("text", ["hi", 'quote " backslash \\', "line\nbreak\r\ttab", "🦙 \u2028 \x00", "x" * 5000])
@pytest.mark.parametrize("index", [0, 7, 123])
def test_text_delta_template_is_the_generic_event_byte_for_byte(text, index):
    from adapters import anthropic_stream as s

    generic = s._sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                             "delta": {"type": "text_delta", "text": text}})  # fmt: skip
    assert s._TEXT_DELTA_HEAD % index + jsonio.dumps(text) + s._TEXT_DELTA_TAIL == generic
