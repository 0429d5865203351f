"""OpenAI streams: the client-side encoder and the upstream decoder (every split position)."""

import orjson
import pytest

from adapters import ir
from adapters.errors import ProxyError
from adapters.openai_stream import ChatStreamDecoder, ChatStreamEncoder, CompletionStreamEncoder
from adapters.sse import SSEParser


def sse(*objs) -> bytes:
    return b"".join(b"data: " + (o if isinstance(o, bytes) else orjson.dumps(o)) + b"\n\n" for o in objs)


def chunk(delta=None, finish=None, usage=None, choices=True, **top):
    c = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "up", **top}
    c["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    if usage is not None:
        c["usage"] = usage
    return c


def decode_whole(data):
    d = ChatStreamDecoder()
    return d.feed(data) + d.close()


def decode_bytewise(data):
    d = ChatStreamDecoder()
    out = []
    for i in range(len(data)):
        out += d.feed(data[i:i + 1])
    return out + d.close()


def decode_split(data, cut):
    d = ChatStreamDecoder()
    return d.feed(data[:cut]) + d.feed(data[cut:]) + d.close()


def assert_all_splits(data):
    expected = decode_whole(data)
    assert decode_bytewise(data) == expected
    for cut in range(len(data) + 1):
        assert decode_split(data, cut) == expected, cut
    return expected


INTERLEAVED = sse(
    {"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": []},  # Azure
    chunk({"role": "assistant", "reasoning_content": "th"}),
    chunk({"reasoning": "ink"}),
    chunk({"content": "Hi "}),
    chunk({"tool_calls": [{"index": 0, "id": "call_A", "type": "function",
                           "function": {"name": "a", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_B", "type": "function",
                           "function": {"name": "b", "arguments": "{\"x\""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}),
    {"id": "chatcmpl-1", "choices": [{"index": 0, "content_filter_results": {}}]},  # filter-only chunk
    chunk({"content": "there"}),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": ":1}"}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "ty\":\"P\u00e9\"}"}}]}),
    chunk(finish="stop"),
    chunk(choices=False, usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13,
                                "completion_tokens_details": {"reasoning_tokens": 2}}),
    b"[DONE]",
)


def test_interleaved_stream_every_split():
    events = assert_all_splits(INTERLEAVED)
    assert events[0] == ir.Start(id="chatcmpl-1", model="up", created=7)
    assert events[1:4] == [ir.BlockStart(0, "reasoning"), ir.ReasoningDelta(0, "th"), ir.ReasoningDelta(0, "ink")]
    assert ir.BlockEnd(0) in events[4:6]
    assert ir.BlockStart(2, "tool_call", tool_call_id="call_A", tool_name="a") in events
    assert ir.ToolArgsDelta(3, "{\"x\"") in events
    finish = [e for e in events if isinstance(e, ir.Finish)]
    assert finish == [ir.Finish("tool_calls", "stop")]  # consistency rule
    assert events[-2:] == [ir.UsageEvent(ir.Usage(9, 4, reasoning_tokens=2)), ir.End()]
    resp = ir.fold_events(events, model="m", id="x", created=0)
    parts = resp.choices[0].parts
    assert parts == [ir.Reasoning(text="think"), ir.Text("Hi there"), ir.ToolCall("call_A", "a", "{\"city\":\"P\u00e9\"}"),
                     ir.ToolCall("call_B", "b", "{\"x\":1}")]
    # every block started is ended before Finish
    starts = {e.index for e in events if isinstance(e, ir.BlockStart)}
    ends = [e.index for e in events if isinstance(e, ir.BlockEnd)]
    assert sorted(ends) == sorted(starts)
    assert events.index(finish[0]) > max(events.index(ir.BlockEnd(i)) for i in starts)


def test_tool_stream_assembles_to_nonstream_arguments():
    from adapters.openai_backend import response_to_ir
    from adapters.openai_response import response_decoder
    args = "{\"city\": \"Paris\", \"days\": [1, 2]}"
    pieces = [args[i:i + 5] for i in range(0, len(args), 5)]
    stream = sse(chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "c", "type": "function", "function": {"name": "w", "arguments": ""}}]}),
        *[chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces],
        chunk(finish="tool_calls"), b"[DONE]")
    folded = ir.fold_events(assert_all_splits(stream), model="m", id="i", created=1)
    body = orjson.dumps({"id": "i", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": args}}]}}]})
    plain = response_to_ir(response_decoder.decode(body), "m", "reasoning_content")
    assert folded.choices[0].parts == plain.choices[0].parts
    assert folded.choices[0].finish_reason == plain.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("raw,expected", [
    ("stop", "stop"), ("length", "length"), ("tool_calls", "stop"), ("function_call", "stop"),
    ("content_filter", "content_filter"), ("eos_token", "stop"), ("abort", "error"), ("error", "error"),
    ("repetition", "stop"), ("something_new", "stop"),
])
def test_finish_reason_table(raw, expected):
    # no tool call in the stream, so tool_calls / function_call downgrade to stop (consistency rule)
    events = decode_whole(sse(chunk({"content": "x"}, finish=raw), b"[DONE]"))
    assert [e for e in events if isinstance(e, ir.Finish)] == [ir.Finish(expected, raw)]


def test_vllm_stop_reason_becomes_stop_sequence():
    events = decode_whole(sse({**chunk({"content": "x"}), "choices": [
        {"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}]}, b"[DONE]"))
    assert ir.Finish("stop", "stop", "END") in events


def test_completion_chunks_decode():
    events = decode_whole(sse({"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": "ab"}]},
                              {"id": "c", "choices": [{"index": 0, "text": "", "finish_reason": "length"}]}, b"[DONE]"))
    assert ir.TextDelta(0, "ab") in events and ir.Finish("length", "length") in events


def test_tgi_object_arguments():
    events = decode_whole(sse(chunk({"tool_calls": [{"index": 0, "id": "0", "type": "function",
                                                     "function": {"name": "f", "arguments": {"a": 1}}}]}),
                              chunk(finish="tool_calls"), b"[DONE]"))
    assert ir.ToolArgsDelta(0, '{"a":1}') in events


@pytest.mark.parametrize("error,kind", [
    ({"message": "boom", "type": "server_error", "code": None}, "server"),
    ({"message": "bad", "type": "BadRequestError", "code": 400}, "invalid_request"),  # vLLM int code
    ({"message": "Input validation error", "http_status_code": 422}, "invalid_request"),  # TGI
    ({"message": "slow down", "code": 429}, "rate_limit"),
])
def test_in_band_error_raises(error, kind):
    d = ChatStreamDecoder()
    d.feed(sse(chunk({"content": "x"})))
    with pytest.raises(ProxyError) as e:
        d.feed(sse({"error": error}))
    assert e.value.kind == kind


def test_finish_without_done_is_accepted():
    events = decode_whole(sse(chunk({"content": "x"}, finish="stop")))
    assert isinstance(events[-1], ir.End) and ir.Finish("stop", "stop") in events


def test_bytes_after_done_ignored():
    events = decode_whole(sse(chunk({"content": "x"}, finish="stop"), b"[DONE]") + b"data: {garbage\n\n")
    assert isinstance(events[-1], ir.End)


# -- encoder -----------------------------------------------------------------------------------------


def encode(events, **req_kw):
    enc = ChatStreamEncoder(ir.ChatRequest(model="m", **req_kw), "client-model")
    data = b"".join(enc.feed(e) for e in events)
    parser = SSEParser()
    return [e.data for e in parser.feed(data) + parser.close()], enc


def test_encoder_interleaved_tools_and_usage_order():
    events = [ir.Start(id="up-1", created=3), ir.BlockStart(0, "text"), ir.TextDelta(0, "Hi"),
              ir.BlockStart(1, "tool_call", tool_call_id="A", tool_name="a"),
              ir.BlockStart(2, "tool_call", tool_call_id="B", tool_name="b"),
              ir.ToolArgsDelta(2, "{}"), ir.ToolArgsDelta(1, "{\"x\":1}"),
              ir.UsageEvent(ir.Usage(3, 2)),  # usage before finish: still written after it
              ir.BlockEnd(0), ir.BlockEnd(1), ir.BlockEnd(2), ir.Finish("stop"), ir.End()]
    datas, _ = encode(events, include_usage=True, stream=True)
    assert datas[-1] == b"[DONE]"
    chunks = [orjson.loads(d) for d in datas[:-1]]
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {("up-1", 3, "client-model")}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2]["tool_calls"][0] == {"index": 0, "id": "A", "type": "function",
                                          "function": {"name": "a", "arguments": ""}}
    assert deltas[3]["tool_calls"][0]["index"] == 1
    assert deltas[4]["tool_calls"][0] == {"index": 1, "function": {"arguments": "{}"}}
    assert deltas[5]["tool_calls"][0] == {"index": 0, "function": {"arguments": "{\"x\":1}"}}
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5


def test_encoder_reasoning_and_no_usage_without_include_usage():
    events = [ir.Start(), ir.BlockStart(0, "reasoning"), ir.ReasoningDelta(0, "hm"), ir.ReasoningSignature(0, "s"),
              ir.BlockEnd(0), ir.Finish("pause"), ir.UsageEvent(ir.Usage(1, 1)), ir.End()]
    datas, _ = encode(events)
    chunks = [orjson.loads(d) for d in datas[:-1]]
    assert chunks[1]["choices"][0]["delta"] == {"reasoning_content": "hm"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)


def test_encoder_error_has_no_done_and_stops_output():
    enc = ChatStreamEncoder(ir.ChatRequest(model="m"), "m")
    enc.feed(ir.Start())
    out = enc.error(ProxyError("overloaded", "busy"))
    assert orjson.loads(out[len(b"data: "):]) == {"error": {"message": "busy", "type": "server_error",
                                                            "param": None, "code": None}}
    assert enc.feed(ir.End()) == b"" and b"[DONE]" not in out


def test_encoder_finish_error_becomes_error_event():
    datas, _ = encode([ir.Start(), ir.Finish("error", raw="abort"), ir.End()])
    assert b"[DONE]" not in datas and "error" in orjson.loads(datas[-1])


def test_completion_encoder():
    enc = CompletionStreamEncoder(ir.ChatRequest(model="m", prompt="p", include_usage=True), "m")
    data = b"".join(enc.feed(e) for e in [ir.Start(), ir.BlockStart(0, "text"), ir.TextDelta(0, "ab"),
                                          ir.BlockEnd(0), ir.Finish("length"), ir.UsageEvent(ir.Usage(1, 2)), ir.End()])
    parser = SSEParser()
    datas = [e.data for e in parser.feed(data)]
    chunks = [orjson.loads(d) for d in datas[:-1]]
    assert chunks[0]["object"] == "text_completion" and chunks[0]["choices"][0]["text"] == "ab"
    assert chunks[1]["choices"][0]["finish_reason"] == "length"
    assert chunks[2]["usage"]["completion_tokens"] == 2 and datas[-1] == b"[DONE]"


def test_roundtrip_decoder_to_encoder():
    events = decode_whole(INTERLEAVED)
    enc = ChatStreamEncoder(ir.ChatRequest(model="m", include_usage=True), "m")
    out = b"".join(enc.feed(e) for e in events)
    again = ChatStreamDecoder()
    folded = ir.fold_events(again.feed(out) + again.close(), model="m", id="x", created=0)
    assert folded.choices[0].parts == ir.fold_events(events, model="m", id="x", created=0).choices[0].parts


TEXTS = ["hi", "", 'quote " backslash \\ slash /', "line\nbreak\r\ttab", "🦙 ünï \u2028 \x00", "x" * 5000]


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("key", ["content", "reasoning_content"])
def test_text_delta_frame_is_the_generic_chunk_byte_for_byte(include_usage, key):
    """Text deltas are written around their text with an envelope encoded once per stream: the bytes
    must be those of the generic chunk (after Start adopted the upstream id and created)."""
    enc = ChatStreamEncoder(ir.ChatRequest(model="m", include_usage=include_usage), 'model "quoted" 🦙')
    enc.feed(ir.Start(id="chatcmpl-up", created=1700000000))
    for text in TEXTS:
        assert enc._text_delta(key, text) == enc._delta({key: text})


# Gemini: a thought with its signature, then the signature that sat on the first of two calls.
GEMINI = [ir.Start(), ir.BlockStart(0, "reasoning", provider="gemini"), ir.ReasoningDelta(0, "**Plan**"),
          ir.ReasoningSignature(0, "dGhvdWdodA=="), ir.BlockEnd(0), ir.BlockStart(1, "reasoning", provider="gemini"),
          ir.ReasoningSignature(1, "Y2Fs"), ir.ReasoningSignature(1, "bA=="), ir.BlockEnd(1),
          ir.BlockStart(2, "tool_call", tool_call_id="A", tool_name="a"), ir.ToolArgsDelta(2, "{}"), ir.BlockEnd(2),
          ir.BlockStart(3, "tool_call", tool_call_id="B", tool_name="b"), ir.ToolArgsDelta(3, "{}"), ir.BlockEnd(3),
          ir.Finish("tool_calls"), ir.End()]


def test_encoder_puts_a_gemini_call_signature_on_the_calls_first_delta():
    datas, _ = encode(GEMINI)
    deltas = [orjson.loads(d)["choices"][0]["delta"] for d in datas[:-1]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d and "id" in d["tool_calls"][0]]
    assert calls[0]["extra_content"] == {"google": {"thought_signature": "Y2FsbA=="}}
    assert "extra_content" not in calls[1]
    assert [d.get("reasoning_content") for d in deltas if "reasoning_content" in d] == ["**Plan**"]


def test_encoder_signature_on_text_or_from_anthropic_has_no_slot():
    for events in ([ir.Start(), ir.BlockStart(0, "reasoning", provider="gemini"), ir.ReasoningSignature(0, "s"),
                    ir.BlockEnd(0), ir.BlockStart(1, "text"), ir.TextDelta(1, "x"), ir.BlockEnd(1),
                    ir.BlockStart(2, "tool_call", tool_call_id="A", tool_name="a"), ir.BlockEnd(2)],
                   [ir.Start(), ir.BlockStart(0, "reasoning", provider="anthropic"), ir.ReasoningSignature(0, "s"),
                    ir.BlockEnd(0), ir.BlockStart(1, "tool_call", tool_call_id="A", tool_name="a"), ir.BlockEnd(1)]):
        datas, _ = encode(events + [ir.Finish("tool_calls"), ir.End()])
        assert all(b"extra_content" not in d for d in datas)


def test_encoded_signature_stream_decodes_the_same_whole_bytewise_and_split():
    enc = ChatStreamEncoder(ir.ChatRequest(model="m"), "client-model")
    data = b"".join(enc.feed(e) for e in GEMINI)
    events = assert_all_splits(data)
    assert [e for e in events if isinstance(e, ir.BlockStart) and e.kind == "tool_call"][0].tool_name == "a"


ANTHROPIC = [ir.Start(), ir.BlockStart(0, "reasoning", provider="anthropic"), ir.ReasoningDelta(0, "I should "),
             ir.ReasoningDelta(0, "call a."), ir.ReasoningSignature(0, "EqQB"), ir.BlockEnd(0),
             ir.BlockStart(1, "reasoning", provider="anthropic"), ir.RedactedReasoning(1, "EmwK"), ir.BlockEnd(1),
             ir.BlockStart(2, "tool_call", tool_call_id="A", tool_name="a"), ir.ToolArgsDelta(2, "{}"), ir.BlockEnd(2),
             ir.Finish("tool_calls"), ir.End()]


def test_encoder_writes_anthropic_thinking_as_one_reasoning_details_entry_per_block():
    datas, _ = encode(ANTHROPIC)
    deltas = [orjson.loads(d)["choices"][0]["delta"] for d in datas[:-1]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "I should call a."
    details = [e for d in deltas for e in d.get("reasoning_details", [])]
    assert details == [
        {"type": "reasoning.text", "text": "I should call a.", "signature": "EqQB", "format": "anthropic-claude-v1",
         "index": 0},
        {"type": "reasoning.encrypted", "data": "EmwK", "format": "anthropic-claude-v1", "index": 1}]
    first_call = next(i for i, d in enumerate(deltas) if "tool_calls" in d)
    assert max(i for i, d in enumerate(deltas) if "reasoning_details" in d) < first_call


def test_encoded_anthropic_stream_decodes_the_same_whole_bytewise_and_split():
    enc = ChatStreamEncoder(ir.ChatRequest(model="m"), "client-model")
    assert_all_splits(b"".join(enc.feed(e) for e in ANTHROPIC))
