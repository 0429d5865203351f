"""Ollama native backend: request mapping row by row, NDJSON decoding under every split, errors."""

import re

import pytest

from adapters import ir, jsonio
from adapters import ollama_stream as mod
from adapters.base import Target
from adapters.errors import ProxyError
from adapters.ollama_backend import OllamaBackend, Options

TARGET = Target(model="llama3.2")


@pytest.fixture
def fixed_ids(monkeypatch):
    """Deterministic synthesised ids, so event lists from different splits compare equal."""
    monkeypatch.setattr(mod, "synth_id", lambda prefix="call_", length=24: prefix + "X" * length)


def backend(**opts) -> OllamaBackend:
    return OllamaBackend("http://ollama:11434/", opts.pop("api_key", None), opts.pop("headers", {}), Options(**opts))


def user(text: str) -> ir.Message:
    return ir.Message(role="user", parts=[ir.Text(text=text)])


def chat(**kw) -> ir.ChatRequest:
    kw.setdefault("messages", [user("hi")])
    return ir.ChatRequest(model="client-model", **kw)


def body_of(req: ir.ChatRequest, target: Target = TARGET, **opts) -> dict:
    return jsonio.loads(backend(**opts).chat_request(req, target).body)


# -- request ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_url_model_and_explicit_stream(stream):
    http = backend().chat_request(chat(stream=stream), TARGET)
    body = jsonio.loads(http.body)
    assert http.url == "http://ollama:11434/api/chat"
    assert http.stream is stream
    assert body["stream"] is stream  # Ollama streams by default: the flag must always be present
    assert body["model"] == "llama3.2"
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_headers_auth_and_extra():
    http = backend(api_key="sk-1", headers={"x-team": "a"}).chat_request(chat(), TARGET)
    assert http.headers == {"content-type": "application/json", "authorization": "Bearer sk-1", "x-team": "a"}
    assert "authorization" not in backend().chat_request(chat(), TARGET).headers


@pytest.mark.parametrize(
    "field,value,option",
    [
        ("temperature", 0.2, "temperature"),
        ("top_p", 0.9, "top_p"),
        ("top_k", 40, "top_k"),
        ("min_p", 0.05, "min_p"),
        ("seed", 7, "seed"),
        ("repetition_penalty", 1.1, "repeat_penalty"),
        ("presence_penalty", 0.5, "presence_penalty"),
        ("frequency_penalty", 0.25, "frequency_penalty"),
        ("max_tokens", 64, "num_predict"),
        ("stop", ["END", "###"], "stop"),
    ],
)
def test_sampling_rows(field, value, option):
    body = body_of(chat(**{field: value}))
    assert body["options"] == {option: value}


def test_no_options_when_nothing_set():
    assert "options" not in body_of(chat())


def test_backend_options_num_ctx_keep_alive_extra():
    body = body_of(chat(temperature=0.3), num_ctx=8192, keep_alive="10m", options={"num_gpu": 1, "temperature": 1.0})
    assert body["options"] == {"num_gpu": 1, "num_ctx": 8192, "temperature": 0.3}  # the request wins
    assert body["keep_alive"] == "10m"


def test_default_max_tokens_and_target_params():
    target = Target(model="m", default_max_tokens=100, params={"options": {"num_batch": 8}, "truncate": False})
    body = body_of(chat(), target)
    assert body["options"] == {"num_predict": 100, "num_batch": 8}
    assert body["truncate"] is False


@pytest.mark.parametrize(
    "rf,expected",
    [
        (ir.ResponseFormat(type="text"), None),
        (ir.ResponseFormat(type="json_object"), "json"),
        (ir.ResponseFormat(type="json_schema", schema={"type": "object"}), {"type": "object"}),
        (ir.ResponseFormat(type="json_schema"), "json"),
    ],
)
def test_response_format_rows(rf, expected):
    assert body_of(chat(response_format=rf)).get("format") == expected


@pytest.mark.parametrize(
    "reasoning,default,expected",
    [
        (None, None, None),
        (None, True, True),
        (ir.ReasoningConfig(enabled=True), None, True),
        (ir.ReasoningConfig(enabled=False), True, False),
        (ir.ReasoningConfig(budget_tokens=1024), None, True),
        (ir.ReasoningConfig(effort="low"), None, "low"),
        (ir.ReasoningConfig(effort="medium"), None, "medium"),
        (ir.ReasoningConfig(effort="high"), None, "high"),
        (ir.ReasoningConfig(effort="minimal"), None, "low"),
        (ir.ReasoningConfig(effort="none"), True, False),
        (ir.ReasoningConfig(effort="unheard-of"), None, True),
    ],
)
def test_think_rows(reasoning, default, expected):
    assert body_of(chat(reasoning=reasoning), think=default).get("think") == expected


def test_system_first_and_mid_conversation_system_in_place():
    req = chat(
        system=[ir.Text(text="be brief"), ir.Text(text="be kind")],
        messages=[user("a"), ir.Message(role="system", parts=[ir.Text(text="now French")]), user("b")],
    )
    assert body_of(req)["messages"] == [
        {"role": "system", "content": "be brief\nbe kind"},
        {"role": "user", "content": "a"},
        {"role": "system", "content": "now French"},
        {"role": "user", "content": "b"},
    ]


def test_text_parts_joined_and_images_inlined():
    msg = ir.Message(
        role="user",
        parts=[
            ir.Text(text="what is"),
            ir.Image(url="data:image/png;base64,iVBORw0K"),
            ir.Text(text="this?"),
            ir.Image(media_type="image/jpeg", data="/9j/4AAQ"),
        ],
    )
    assert body_of(chat(messages=[msg]))["messages"] == [
        {"role": "user", "content": "what is\nthis?", "images": ["iVBORw0K", "/9j/4AAQ"]}
    ]


@pytest.mark.parametrize(
    "image,kind",
    [
        (ir.Image(url="https://example.com/cat.png"), "unsupported"),
        (ir.Image(url="data:image/png,rawbytes"), "invalid_request"),
    ],
)
def test_images_that_cannot_be_sent(image, kind):
    with pytest.raises(ProxyError) as exc:
        body_of(chat(messages=[ir.Message(role="user", parts=[image])]))
    assert exc.value.kind == kind and exc.value.status == 400
    assert "example.com" not in exc.value.message


def history() -> list[ir.Message]:
    return [
        user("weather in Paris and Rome?"),
        ir.Message(
            role="assistant",
            parts=[
                ir.Reasoning(text="two calls needed"),
                ir.Text(text="Checking."),
                ir.ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
                ir.ToolCall(id="call_b", name="get_time", arguments=""),
            ],
        ),
        ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="call_a", content=[ir.Text(text="11C")])]),
        ir.Message(
            role="tool",
            parts=[ir.ToolResult(tool_call_id="call_b", content=[ir.Text(text="boom")], is_error=True)],
        ),
    ]


def test_tool_calls_arguments_objects_and_tool_name_recovery():
    msgs = body_of(chat(messages=history()))["messages"]
    assert msgs[1] == {
        "role": "assistant",
        "content": "Checking.",
        "thinking": "two calls needed",
        "tool_calls": [
            {"id": "call_a", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"id": "call_b", "function": {"name": "get_time", "arguments": {}}},
        ],
    }
    assert msgs[2] == {"role": "tool", "content": "11C", "tool_name": "get_weather", "tool_call_id": "call_a"}
    assert msgs[3] == {"role": "tool", "content": "Error: boom", "tool_name": "get_time", "tool_call_id": "call_b"}


def test_tool_results_in_one_user_message_are_split_results_first():
    msg = ir.Message(
        role="user",
        parts=[
            ir.ToolResult(tool_call_id="call_a", content=[ir.Text(text="11C")]),
            ir.ToolResult(tool_call_id="unknown", name="explicit", content=[ir.Image(data="QUJD")]),
            ir.Text(text="thanks"),
        ],
    )
    msgs = body_of(chat(messages=[*history()[:2], msg]))["messages"][2:]
    assert msgs == [
        {"role": "tool", "content": "11C", "tool_name": "get_weather", "tool_call_id": "call_a"},
        {"role": "tool", "content": "", "tool_name": "explicit", "tool_call_id": "unknown", "images": ["QUJD"]},
        {"role": "user", "content": "thanks"},
    ]


def test_tool_result_without_known_name_omits_tool_name():
    msg = ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="zzz", content=[ir.Text(text="x")])])
    assert body_of(chat(messages=[msg]))["messages"] == [{"role": "tool", "content": "x", "tool_call_id": "zzz"}]


def test_signed_or_redacted_reasoning_is_not_forwarded():
    msg = ir.Message(
        role="assistant",
        parts=[
            ir.Reasoning(text="secret", signature="sig", provider="anthropic"),
            ir.Reasoning(redacted_data="xx", provider="anthropic"),
            ir.Text(text="ok"),
        ],
    )
    assert body_of(chat(messages=[msg]))["messages"] == [{"role": "assistant", "content": "ok"}]


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"str"'])
def test_tool_call_arguments_that_are_not_an_object_are_400(raw):
    msg = ir.Message(role="assistant", parts=[ir.ToolCall(id="c", name="f", arguments=raw)])
    with pytest.raises(ProxyError) as exc:
        body_of(chat(messages=[msg]))
    assert exc.value.kind == "invalid_request" and exc.value.status == 400


TOOLS = [
    ir.ToolDef(name="get_weather", description="Weather", parameters={"type": "object", "properties": {}}),
    ir.ToolDef(name="nodesc", strict=True),
]
OLLAMA_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather",
            "parameters": {"type": "object", "properties": {}},
        },
    },
    {"type": "function", "function": {"name": "nodesc", "parameters": {"type": "object", "properties": {}}}},
]


@pytest.mark.parametrize(
    "choice,policy,expected",
    [
        (None, "drop", OLLAMA_TOOLS),
        (ir.ToolChoice(mode="auto"), "error", OLLAMA_TOOLS),
        (ir.ToolChoice(mode="none"), "error", None),
        (ir.ToolChoice(mode="required"), "drop", OLLAMA_TOOLS),
        (ir.ToolChoice(mode="tool", name="get_weather"), "drop", OLLAMA_TOOLS),
    ],
)
def test_tool_choice_rows(choice, policy, expected):
    target = Target(model="m", unsupported_params=policy)
    assert body_of(chat(tools=TOOLS, tool_choice=choice), target).get("tools") == expected


@pytest.mark.parametrize("choice", [ir.ToolChoice(mode="required"), ir.ToolChoice(mode="tool", name="get_weather")])
def test_forced_tool_choice_under_error_policy_is_refused(choice):
    with pytest.raises(ProxyError) as exc:
        body_of(chat(tools=TOOLS, tool_choice=choice), Target(model="m", unsupported_params="error"))
    assert exc.value.kind == "unsupported" and exc.value.param == "tool_choice"


def test_legacy_prompt_goes_to_generate_raw():
    http = backend().chat_request(ir.ChatRequest(model="m", prompt="Once upon", max_tokens=5), TARGET)
    assert http.url == "http://ollama:11434/api/generate"
    assert jsonio.loads(http.body) == {
        "model": "llama3.2",
        "stream": False,
        "prompt": "Once upon",
        "raw": True,
        "options": {"num_predict": 5},
    }


def test_declared_params():
    assert "tools" in OllamaBackend.supported_params
    for name in ("logit_bias", "logprobs", "n", "parallel_tool_calls", "user"):
        assert name not in OllamaBackend.supported_params
    assert OllamaBackend.renamed_params["max_tokens"] == "options.num_predict"
    assert OllamaBackend.renamed_params["repetition_penalty"] == "options.repeat_penalty"
    assert OllamaBackend.provider == "ollama" and OllamaBackend.family == "ollama"  # Ollama clients pass through


def test_options_reject_unknown_keys():
    import msgspec

    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"keep_alive": "5m", "bogus": 1}, Options)
    assert msgspec.convert({"keep_alive": 300, "think": "high"}, Options).keep_alive == 300


# -- stream ----------------------------------------------------------------------------------------

STREAM = (
    b'{"model":"qwen3","created_at":"2025-07-07T20:43:37.688511Z","message":{"role":"assistant","content":"",'
    b'"thinking":"Let me"},"done":false}\n'
    b'{"model":"qwen3","created_at":"2025-07-07T20:43:37.7Z","message":{"role":"assistant","content":"",'
    b'"thinking":" think \xf0\x9f\xa6\x99"},"done":false}\n'
    b'{"model":"qwen3","created_at":"2025-07-07T20:43:37.8Z","message":{"role":"assistant","content":"The"},'
    b'"done":false}\r\n'
    b'{"model":"qwen3","created_at":"2025-07-07T20:43:37.9Z","message":{"role":"assistant","content":" sky\\u2028"},'
    b'"done":false}\n'
    b'{"model":"qwen3","created_at":"2025-07-07T20:43:38Z","message":{"role":"assistant","content":"","tool_calls":'
    b'[{"id":"call_x","function":{"index":0,"name":"get_weather","arguments":{"city":"Tokyo","n":[1,2]}}},'
    b'{"function":{"name":"get_time","arguments":{}}}]},"done":false}\n'
    b'{"model":"qwen3","created_at":"2025-07-07T20:43:38.1Z","message":{"role":"assistant","content":""},'
    b'"done":true,"done_reason":"stop","total_duration":890771750,"prompt_eval_count":94,"eval_count":11}\n'
)

STREAM_EVENTS = [
    ir.Start(id="chatcmpl-" + "X" * 24, model="qwen3", created=1751921017),
    ir.BlockStart(0, "reasoning"),
    ir.ReasoningDelta(0, "Let me"),
    ir.ReasoningDelta(0, " think 🦙"),
    ir.BlockEnd(0),
    ir.BlockStart(1, "text"),
    ir.TextDelta(1, "The"),
    ir.TextDelta(1, " sky\u2028"),
    ir.BlockEnd(1),
    ir.BlockStart(2, "tool_call", tool_call_id="call_x", tool_name="get_weather"),
    ir.ToolArgsDelta(2, '{"city":"Tokyo","n":[1,2]}'),
    ir.BlockEnd(2),
    ir.BlockStart(3, "tool_call", tool_call_id="call_" + "X" * 24, tool_name="get_time"),
    ir.ToolArgsDelta(3, "{}"),
    ir.BlockEnd(3),
    ir.Finish("tool_calls", raw="stop"),
    ir.UsageEvent(ir.Usage(input_tokens=94, output_tokens=11)),
    ir.End(),
]


def decode_whole(data: bytes, req: ir.ChatRequest | None = None) -> list:
    d = backend().stream_decoder(req or chat(stream=True), TARGET)
    return d.feed(data) + d.close()


def decode_bytewise(data: bytes) -> list:
    d = backend().stream_decoder(chat(stream=True), TARGET)
    out = []
    for i in range(len(data)):
        out += d.feed(data[i : i + 1])
    return out + d.close()


def decode_split(data: bytes, cut: int) -> list:
    d = backend().stream_decoder(chat(stream=True), TARGET)
    return d.feed(data[:cut]) + d.feed(data[cut:]) + d.close()


def test_stream_every_split(fixed_ids):
    assert decode_whole(STREAM) == STREAM_EVENTS
    assert decode_bytewise(STREAM) == STREAM_EVENTS
    for cut in range(len(STREAM) + 1):
        assert decode_split(STREAM, cut) == STREAM_EVENTS, cut


def test_synthesised_ids_have_the_documented_shape():
    events = decode_whole(STREAM)
    starts = [e for e in events if isinstance(e, ir.BlockStart) and e.kind == "tool_call"]
    assert starts[0].tool_call_id == "call_x"
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", starts[1].tool_call_id)


def final(**extra) -> bytes:
    line = {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True, **extra}
    return jsonio.dumps(line) + b"\n"


def text_line(text: str) -> bytes:
    return jsonio.dumps({"model": "m", "message": {"role": "assistant", "content": text}, "done": False}) + b"\n"


@pytest.mark.parametrize(
    "done_reason,with_tool,expected",
    [
        ("stop", False, "stop"),
        ("stop", True, "tool_calls"),
        ("length", False, "length"),
        ("length", True, "length"),
        ("load", False, "stop"),
        (None, False, "stop"),
    ],
)
def test_finish_reason_rows(done_reason, with_tool, expected):
    tool = {"tool_calls": [{"function": {"name": "f", "arguments": {}}}]} if with_tool else {}
    extra = {"done_reason": done_reason} if done_reason else {}
    last = jsonio.dumps({"message": {"role": "assistant", "content": "", **tool}, "done": True, **extra})
    finish = [e for e in decode_whole(last) if isinstance(e, ir.Finish)]
    assert finish == [ir.Finish(expected, raw=done_reason)]


def test_missing_metrics_count_as_zero():
    usage = [e for e in decode_whole(text_line("a") + final(eval_count=3)) if isinstance(e, ir.UsageEvent)]
    assert usage == [ir.UsageEvent(ir.Usage(input_tokens=0, output_tokens=3))]


def test_last_line_without_newline_is_still_read():
    events = decode_whole(text_line("a") + final(done_reason="stop").rstrip(b"\n"))
    assert isinstance(events[-1], ir.End)


@pytest.mark.parametrize(
    "error,kind",
    [
        ("an error was encountered while running the model", "server"),
        ("input length exceeds the context length", "context_length"),
    ],
)
def test_error_line_mid_stream_raises(error, kind):
    d = backend().stream_decoder(chat(stream=True), TARGET)
    first = d.feed(text_line("partial"))
    assert [type(e) for e in first] == [ir.Start, ir.BlockStart, ir.TextDelta]
    with pytest.raises(ProxyError) as exc:
        d.feed(jsonio.dumps({"error": error}) + b"\n")
    assert exc.value.kind == kind and exc.value.message == error


def test_close_without_done_line_is_a_protocol_error():
    d = backend().stream_decoder(chat(stream=True), TARGET)
    d.feed(text_line("cut"))
    with pytest.raises(ProxyError) as exc:
        d.close()
    assert exc.value.kind == "upstream_protocol"


def test_generate_stream_lines(fixed_ids):
    data = (
        b'{"model":"m","created_at":"2025-07-07T20:43:37Z","response":"Once","done":false}\n'
        b'{"model":"m","created_at":"2025-07-07T20:43:37Z","response":" more","done":false}\n'
        b'{"model":"m","created_at":"2025-07-07T20:43:37Z","response":"","done":true,"done_reason":"length",'
        b'"prompt_eval_count":3,"eval_count":2}\n'
    )
    req = ir.ChatRequest(model="m", prompt="x", stream=True)
    assert decode_whole(data, req)[1:] == [
        ir.BlockStart(0, "text"),
        ir.TextDelta(0, "Once"),
        ir.TextDelta(0, " more"),
        ir.BlockEnd(0),
        ir.Finish("length", raw="length"),
        ir.UsageEvent(ir.Usage(input_tokens=3, output_tokens=2)),
        ir.End(),
    ]


# -- non-streaming answer --------------------------------------------------------------------------


def test_chat_response_with_thinking_text_and_tool_call():
    body = jsonio.dumps(
        {
            "model": "qwen3",
            "created_at": "2025-07-07T20:43:37.688511Z",
            "message": {
                "role": "assistant",
                "content": "Calling.",
                "thinking": "hmm",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}],
            },
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 94,
            "eval_count": 11,
        }
    )
    resp = backend().chat_response(body, chat(), TARGET)
    choice = resp.choices[0]
    assert resp.model == "qwen3" and resp.created == 1751921017
    assert resp.id.startswith("chatcmpl-")
    assert choice.parts[:2] == [ir.Reasoning(text="hmm"), ir.Text(text="Calling.")]
    call = choice.parts[2]
    assert call.name == "get_weather" and jsonio.loads(call.arguments) == {"city": "Tokyo"}
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call.id)
    assert choice.finish_reason == "tool_calls" and choice.raw_finish_reason == "stop"
    assert resp.usage == ir.Usage(input_tokens=94, output_tokens=11)


def test_chat_response_error_body_and_incomplete_body():
    with pytest.raises(ProxyError) as exc:
        backend().chat_response(b'{"error":"model crashed"}', chat(), TARGET)
    assert exc.value.kind == "server" and exc.value.message == "model crashed"
    with pytest.raises(ProxyError) as exc:
        backend().chat_response(text_line("x"), chat(), TARGET)
    assert exc.value.kind == "upstream_protocol"


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,body,headers,kind,message",
    [
        (404, b'{"error":"model \\"nope\\" not found, try pulling it first"}', {}, "not_found",
         'model "nope" not found, try pulling it first'),
        (400, b'{"error":"input length exceeds the context length"}', {}, "context_length",
         "input length exceeds the context length"),
        (400, b'{"error":"invalid options"}', {}, "invalid_request", "invalid options"),
        (401, b'{"error":"unauthorized"}', {}, "authentication", "unauthorized"),
        (429, b'{"error":"too many requests"}', {"retry-after": "3"}, "rate_limit", "too many requests"),
        (500, b'{"error":"llama runner process has terminated"}', {}, "server", "llama runner process has terminated"),
        (502, b'{"error":"cloud model unreachable"}', {}, "upstream_unavailable", "cloud model unreachable"),
        (503, b'{"error":"server busy"}', {}, "overloaded", "server busy"),
        (500, b"<html>secret upstream page</html>", {}, "server", "upstream returned HTTP 500"),
        (500, b'["not an object"]', {}, "server", "upstream returned HTTP 500"),
    ],
)
def test_parse_error_rows(status, body, headers, kind, message):
    err = backend().parse_error(status, headers, body)
    assert (err.kind, err.message, err.upstream_status) == (kind, message, status)
    if headers:
        assert err.retry_after == 3.0


def test_not_found_code():
    assert backend().parse_error(404, {}, b'{"error":"x"}').code == "model_not_found"


# -- embeddings ------------------------------------------------------------------------------------


def test_embeddings_request_and_response():
    b = backend(keep_alive=0, num_ctx=2048)
    http = b.embeddings_request(ir.EmbeddingRequest(model="emb", input=["a", "b"], dimensions=4), Target(model="nomic"))
    assert http.url == "http://ollama:11434/api/embed"
    assert jsonio.loads(http.body) == {
        "model": "nomic",
        "input": ["a", "b"],
        "dimensions": 4,
        "keep_alive": 0,
        "options": {"num_ctx": 2048},
    }
    resp = b.embeddings_response(
        b'{"model":"nomic","embeddings":[[0.1,0.2],[0.3,0.4]],"total_duration":1,"prompt_eval_count":2}',
        ir.EmbeddingRequest(model="emb", input=["a", "b"]),
    )
    assert resp == ir.EmbeddingResponse(model="emb", data=[[0.1, 0.2], [0.3, 0.4]], usage=ir.Usage(input_tokens=2))


def test_embeddings_token_input_and_bad_body():
    with pytest.raises(ProxyError) as exc:
        backend().embeddings_request(ir.EmbeddingRequest(model="e", input=[[1, 2]]), TARGET)
    assert exc.value.kind == "unsupported"
    with pytest.raises(ProxyError) as exc:
        backend().embeddings_response(b'{"embedding":[1]}', ir.EmbeddingRequest(model="e", input=["a"]))
    assert exc.value.kind == "upstream_protocol"


def test_events_before_an_error_in_the_same_chunk_are_delivered_first():
    d = backend().stream_decoder(chat(stream=True), TARGET)
    events = d.feed(text_line("partial") + jsonio.dumps({"error": "runner died"}) + b"\n")
    assert ir.TextDelta(0, "partial") in events
    with pytest.raises(ProxyError) as exc:
        d.close()
    assert exc.value.kind == "server" and exc.value.message == "runner died"


@pytest.mark.parametrize(("source", "forwarded"), [("ollama", True), ("openai", False)])
def test_an_ollama_clients_own_fields_reach_an_ollama_backend(source, forwarded):
    extra = {"keep_alive": "5m", "suffix": "}", "options": {"num_ctx": 8192, "mirostat": 2}, "model": "x"}
    body = body_of(chat(temperature=0.3, extra=extra, source_format=source))
    assert body["model"] == "llama3.2" and body["options"]["temperature"] == 0.3
    if forwarded:
        assert body["keep_alive"] == "5m" and body["suffix"] == "}"
        assert body["options"] == {"temperature": 0.3, "num_ctx": 8192, "mirostat": 2}
    else:
        assert "keep_alive" not in body and "suffix" not in body and "num_ctx" not in body["options"]


# --------------------------------------------------------------------------------------------------
# Same-format pass-through


@pytest.mark.parametrize("op,path", [("chat", "/api/chat"), ("generate", "/api/generate"), ("embed", "/api/embed")])
def test_passthrough_keeps_the_body_bytes(op, path):
    body = b'{"model":"llama3:8b","messages":[],"stream":true}'
    http = OllamaBackend("http://h:11434", "k", {"x-extra": "1"}, Options()).passthrough_request(
        op, body, True, Target(model="llama3:8b"), {})
    assert (http.url, http.body, http.stream) == ("http://h:11434" + path, body, True)
    assert http.headers["authorization"] == "Bearer k" and http.headers["x-extra"] == "1"


def test_passthrough_adds_configured_fields_the_client_did_not_set():
    backend = OllamaBackend("http://h", None, {}, Options(keep_alive="1m", think=True, num_ctx=8192,
                                                          options={"num_gpu": 1}))
    http = backend.passthrough_request("chat", b'{"model":"m","keep_alive":0,"options":{"num_ctx":4096}}', False,
                                       Target(model="m"), {})
    assert jsonio.loads(http.body) == {"model": "m", "keep_alive": 0, "think": True,
                                       "options": {"num_gpu": 1, "num_ctx": 4096}}
    embed = jsonio.loads(backend.passthrough_request("embed", b'{"model":"m"}', False, Target(model="m"), {}).body)
    assert "think" not in embed and embed["options"] == {"num_gpu": 1, "num_ctx": 8192}


def test_passthrough_unknown_operation_is_not_found():
    with pytest.raises(ProxyError) as exc:
        OllamaBackend("http://h", None, {}, Options()).passthrough_request("tags", b"{}", False, Target(model="m"), {})
    assert exc.value.kind == "not_found"
