"""The Ollama frontend's output: answers, NDJSON streams, errors, /api/tags -- each checked against the
official client's response models (ollama-python `_types.py`) and decoded back by the Ollama backend."""

from datetime import datetime

import orjson
import pytest
from ollama import _types as ot

from adapters import ir
from adapters.base import ApiRoute
from adapters.errors import KINDS, ProxyError
from adapters.ollama_stream import OllamaStream
from adapters.ollama_frontend import OllamaFrontend
from adapters.sse import NDJSONParser, SSEEvent

F = OllamaFrontend()
REQ = ir.ChatRequest(model="m", stream=True)


def response(*parts, finish="stop", usage=ir.Usage(input_tokens=12, output_tokens=5)):
    return ir.ChatResponse(id="r1", model="up", created=1, usage=usage,
                           choices=[ir.Choice(parts=list(parts), finish_reason=finish)])


def lines(data: bytes) -> list[dict]:
    assert data.endswith(b"\n")
    return [orjson.loads(line) for line in data.split(b"\n")[:-1]]


def test_routes_declare_streaming_by_default_for_generation_only():
    assert (F.name, F.stream_content_type, F.stream_framing) == ("ollama", "application/x-ndjson", "ndjson")
    api = {r.path: r.target for r in F.routes() if isinstance(r, ApiRoute)}
    assert set(api) == {"/api/chat", "/api/generate", "/api/embed"}
    assert [api[p].operation.name for p in sorted(api)] == ["chat", "embed", "generate"]
    assert api["/api/chat"].stream_default is True and api["/api/generate"].stream_default is True
    assert api["/api/embed"].stream_default is False  # an embedding is one JSON answer
    assert {(type(r).__name__, r.path) for r in F.routes() if not isinstance(r, ApiRoute)} == {
        ("ModelList", "/api/tags"), ("StaticInfo", "/api/version")}


def test_passthrough_dialect_reads_only_final_counts():
    assert F.usage_from_body(b'{"done":true,"prompt_eval_count":4,"eval_count":3}') == ir.Usage(4, 3)
    assert F.usage_from_body(b'{"embeddings":[[0.1]],"prompt_eval_count":2}') == ir.Usage(input_tokens=2)
    assert F.usage_from_event(b'{"message":{"content":"x"},"done":false}') is None
    with pytest.raises(ProxyError) as exc:
        F.usage_from_event(b'{"done":tr')
    assert exc.value.kind == "upstream_protocol"
    assert F.prepare_passthrough({}, True) is False and F.is_usage_only(b"{}") is False
    assert F.is_stream_end(SSEEvent(b'{"model":"m","done":true,"done_reason":"stop"}'))
    assert F.is_stream_end(SSEEvent(b'{"error":"boom"}'))
    assert not F.is_stream_end(SSEEvent(b'{"model":"m","message":{"content":"done"},"done":false}'))


# --------------------------------------------------------------------------------------------------
# Non-streamed answers


def test_render_chat_text_thinking_and_tool_calls():
    resp = response(ir.Reasoning(text="think", signature="sig", provider="anthropic"), ir.Text("Hel"), ir.Text("lo"),
                    ir.ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
                    ir.ToolCall(id="call_b", name="bad", arguments="{not json"), finish="tool_calls")
    body = orjson.loads(F.render_chat(resp, "client-model"))
    parsed = ot.ChatResponse.model_validate(body)  # the official client accepts it
    assert parsed.model == "client-model" and parsed.done is True and parsed.done_reason == "stop"
    assert body["message"] == {
        "role": "assistant", "content": "Hello", "thinking": "think",
        "tool_calls": [{"id": "call_a", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
                       {"id": "call_b", "function": {"index": 1, "name": "bad", "arguments": {}}}],
    }
    assert parsed.message.tool_calls[0].function.arguments == {"city": "Paris"}
    assert (parsed.prompt_eval_count, parsed.eval_count) == (12, 5)
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert body[key] == 0
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None


@pytest.mark.parametrize(
    ("finish", "done_reason"),
    [("stop", "stop"), ("length", "length"), ("tool_calls", "stop"), ("content_filter", "stop"),
     ("pause", "stop"), ("error", "stop")],
)
def test_done_reason_rows(finish, done_reason):
    assert set(ir.FINISH_REASONS) >= {finish}
    resp = response(ir.Text("x"), finish=finish)
    assert orjson.loads(F.render_chat(resp, "m"))["done_reason"] == done_reason
    assert orjson.loads(F.render_completion(resp, "m"))["done_reason"] == done_reason


def test_render_chat_without_usage_or_parts():
    body = orjson.loads(F.render_chat(ir.ChatResponse(id="r", model="m", created=0), "m"))
    assert body["message"] == {"role": "assistant", "content": ""}
    assert (body["prompt_eval_count"], body["eval_count"]) == (0, 0)


def test_render_completion():
    resp = response(ir.Reasoning(text="hm"), ir.Text("Because."), ir.ToolCall(id="c", name="f", arguments="{}"))
    body = orjson.loads(F.render_completion(resp, "m"))
    parsed = ot.GenerateResponse.model_validate(body)
    assert (parsed.response, parsed.thinking, parsed.done) == ("Because.", "hm", True)
    assert (parsed.prompt_eval_count, parsed.eval_count) == (12, 5)
    assert "message" not in body and "context" not in body


def test_render_embeddings():
    resp = ir.EmbeddingResponse(model="up", data=[[0.5, -1.0], [0.25, 0.0]], usage=ir.Usage(input_tokens=4))
    body = orjson.loads(F.render_embeddings(resp, "emb", "base64"))  # Ollama has only float lists
    parsed = ot.EmbedResponse.model_validate(body)
    assert parsed.embeddings == [[0.5, -1.0], [0.25, 0.0]]
    assert (body["model"], body["prompt_eval_count"], body["total_duration"], body["load_duration"]) == ("emb", 4, 0, 0)
    assert orjson.loads(F.render_embeddings(ir.EmbeddingResponse(model="e", data=[]), "e"))["prompt_eval_count"] == 0


def test_render_models_and_version():
    body = orjson.loads(F.render_models(["llama3:8b", "claude"]))
    parsed = ot.ListResponse.model_validate(body)
    assert [m.model for m in parsed.models] == ["llama3:8b", "claude"]
    assert [m["name"] for m in body["models"]] == ["llama3:8b", "claude"]
    first = body["models"][0]
    assert len(first["digest"]) == 64 and first["digest"] != body["models"][1]["digest"]
    assert first["digest"] == orjson.loads(F.render_models(["llama3:8b"]))["models"][0]["digest"]  # stable
    assert set(first["details"]) == {"parent_model", "format", "family", "families", "parameter_size", "quantization_level"}
    assert orjson.loads(F.render_models([])) == {"models": []}
    assert "version" in orjson.loads(F.render_version())


@pytest.mark.parametrize("kind", list(KINDS))
def test_render_error_rows(kind):
    status, body = F.render_error(ProxyError(kind, f"{kind} happened"))
    assert status == KINDS[kind]
    assert orjson.loads(body) == {"error": f"{kind} happened"}
    assert str(ot.ResponseError(body.decode(), status)) == f"{kind} happened (status code: {status})"


# --------------------------------------------------------------------------------------------------
# Streams

INTERLEAVED = [
    ir.Start(id="x", model="up", created=1),
    ir.BlockStart(0, "reasoning", provider="anthropic"),
    ir.ReasoningDelta(0, "Let me "),
    ir.ReasoningSignature(0, "sig"),
    ir.ReasoningDelta(0, "think."),
    ir.BlockEnd(0),
    ir.BlockStart(1, "text"),
    ir.TextDelta(1, "Hi "),
    ir.BlockStart(2, "tool_call", tool_call_id="call_A", tool_name="a"),
    ir.BlockStart(3, "tool_call", tool_call_id="call_B", tool_name="b"),
    ir.ToolArgsDelta(3, '{"x"'),
    ir.ToolArgsDelta(2, '{"ci'),
    ir.TextDelta(1, ""),
    ir.TextDelta(1, "there"),
    ir.ToolArgsDelta(3, ":1}"),
    ir.BlockEnd(3),
    ir.ToolArgsDelta(2, 'ty":"Oslo"}'),
    ir.BlockEnd(1),
    ir.BlockEnd(2),
    ir.UsageEvent(ir.Usage(input_tokens=20, output_tokens=9)),
    ir.Finish("tool_calls"),
    ir.End(),
]


def encode(events, encoder=None) -> bytes:
    enc = encoder or F.stream_encoder(REQ, "client-model")
    return b"".join(enc.feed(ev) for ev in events)


def test_chat_stream_interleaved_text_and_tools():
    out = lines(encode(INTERLEAVED))
    for obj in out:
        ot.ChatResponse.model_validate(obj)  # every line is a valid client object
        assert obj["model"] == "client-model" and obj["message"]["role"] == "assistant"
    messages = [{k: v for k, v in o["message"].items() if k != "role"} for o in out]
    assert messages == [
        {"content": "", "thinking": "Let me "},
        {"content": "", "thinking": "think."},
        {"content": "Hi "},
        {"content": "there"},
        {"content": "", "tool_calls": [{"id": "call_B", "function": {"index": 0, "name": "b", "arguments": {"x": 1}}}]},
        {"content": "", "tool_calls": [{"id": "call_A", "function": {"index": 1, "name": "a", "arguments": {"city": "Oslo"}}}]},
        {"content": ""},
    ]
    assert [o["done"] for o in out] == [False] * 6 + [True]
    final = out[-1]
    assert (final["done_reason"], final["prompt_eval_count"], final["eval_count"]) == ("stop", 20, 9)
    assert final["load_duration"] == 0
    assert final["total_duration"] == final["prompt_eval_duration"] + final["eval_duration"]
    assert min(final["prompt_eval_duration"], final["eval_duration"]) >= 0


def test_stream_lines_frame_the_same_whole_bytewise_and_split_anywhere():
    data = encode(INTERLEAVED)
    whole = NDJSONParser().feed(data)
    assert len(whole) == 7
    p = NDJSONParser()
    assert [line for i in range(len(data)) for line in p.feed(data[i:i + 1])] + p.close() == whole
    for cut in range(len(data) + 1):
        p = NDJSONParser()
        assert p.feed(data[:cut]) + p.feed(data[cut:]) + p.close() == whole, cut


def test_stream_round_trips_through_the_ollama_decoder():
    """Our NDJSON decoded by the Ollama backend's stream decoder folds to the same answer."""
    data = encode(INTERLEAVED)
    dec = OllamaStream()
    events = [ev for i in range(len(data)) for ev in dec.feed(data[i:i + 1])] + dec.close()
    got = ir.fold_events(events, model="m", id="i", created=0)
    want = ir.fold_events(INTERLEAVED, model="m", id="i", created=0)
    simple = lambda resp: [(type(p).__name__, getattr(p, "text", None) or getattr(p, "name", None),
                            orjson.loads(p.arguments) if isinstance(p, ir.ToolCall) else None)
                           for p in resp.choices[0].parts]
    # tool calls come out in BlockEnd order (B closed before A)
    assert simple(got) == [("Reasoning", "Let me think.", None), ("Text", "Hi there", None),
                           ("ToolCall", "b", {"x": 1}), ("ToolCall", "a", {"city": "Oslo"})]
    assert sorted(simple(got), key=str) == sorted(simple(want), key=str)
    assert got.choices[0].finish_reason == "tool_calls" and got.usage == want.usage


@pytest.mark.parametrize(("finish", "done_reason"), [("stop", "stop"), ("length", "length"), ("content_filter", "stop")])
def test_stream_final_line_waits_for_end_with_finish_and_usage(finish, done_reason):
    enc = F.stream_encoder(REQ, "m")
    assert enc.feed(ir.Finish(finish)) == b""
    assert enc.feed(ir.UsageEvent(ir.Usage(input_tokens=1, output_tokens=2))) == b""
    final = lines(enc.feed(ir.End()))
    assert len(final) == 1 and final[0]["done"] is True
    assert (final[0]["done_reason"], final[0]["prompt_eval_count"], final[0]["eval_count"]) == (done_reason, 1, 2)


def test_stream_without_usage_reports_zero_counts():
    final = lines(encode([ir.Start(), ir.BlockStart(0, "text"), ir.TextDelta(0, "a"), ir.BlockEnd(0),
                          ir.Finish("stop"), ir.End()]))[-1]
    assert (final["prompt_eval_count"], final["eval_count"]) == (0, 0)


def test_stream_error_line_then_nothing():
    enc = F.stream_encoder(REQ, "m")
    assert lines(encode(INTERLEAVED[:8], enc))[-1]["message"]["content"] == "Hi "
    err = enc.error(ProxyError("upstream_unavailable", "backend 'x' reset the connection"))
    assert lines(err) == [{"error": "backend 'x' reset the connection"}]
    assert enc.feed(ir.TextDelta(1, "more")) == b"" and enc.feed(ir.End()) == b""
    assert enc.error(ProxyError("server", "again")) == b""


def test_stream_finish_error_becomes_error_line():
    enc = F.stream_encoder(REQ, "m")
    out = lines(encode([ir.Start(), ir.BlockStart(0, "text"), ir.TextDelta(0, "a"), ir.BlockEnd(0),
                        ir.Finish("error", raw="abort"), ir.UsageEvent(ir.Usage()), ir.End()], enc))
    assert out[-1] == {"error": "the upstream stopped generating (abort)"}
    assert len(out) == 2


def test_error_after_end_writes_nothing():
    enc = F.stream_encoder(REQ, "m")
    encode([ir.Start(), ir.Finish("stop"), ir.End()], enc)
    assert enc.error(ProxyError("server", "late")) == b""


def test_generate_stream():
    enc = F.completion_stream_encoder(REQ, "gen-model")
    out = lines(encode(INTERLEAVED, enc))
    for obj in out:
        ot.GenerateResponse.model_validate(obj)
        assert "message" not in obj and obj["model"] == "gen-model"
    assert [(o["response"], o.get("thinking")) for o in out] == [
        ("", "Let me "), ("", "think."), ("Hi ", None), ("there", None), ("", None)]  # no slot for tool calls
    assert out[-1]["done"] is True and out[-1]["done_reason"] == "stop" and out[-1]["eval_count"] == 9
    dec = OllamaStream()  # the backend decoder reads /api/generate lines too
    folded = ir.fold_events(dec.feed(encode(INTERLEAVED, F.completion_stream_encoder(REQ, "g"))) + dec.close(),
                            model="m", id="i", created=0)
    assert [p.text for p in folded.choices[0].parts] == ["Let me think.", "Hi there"]
