"""Cohere v2 backend: the request mapping row by row, answers, finish rows, usage, errors and
embeddings.  No sockets."""

from __future__ import annotations

import pytest

from adapters import ir, jsonio
from adapters.base import Target
from adapters.cohere_backend import CohereBackend, CohereOptions
from adapters.errors import ProxyError

TARGET = Target(model="command-r-plus")
TOOL = ir.ToolDef(name="f", description="F", parameters={"type": "object", "properties": {}}, strict=True)


def backend(**options) -> CohereBackend:
    return CohereBackend("", "co-key", {"x-extra": "1"}, CohereOptions(**options))


def user(text: str = "hi") -> ir.Message:
    return ir.Message(role="user", parts=[ir.Text(text=text)])


def body_of(**kw) -> dict:
    req = ir.ChatRequest(model="m", messages=kw.pop("messages", [user()]), **kw)
    http = backend().chat_request(req, kw.pop("target", TARGET))
    return jsonio.loads(http.body)


def test_request_url_headers_and_defaults():
    req = ir.ChatRequest(model="m", messages=[user()], stream=True)
    http = backend().chat_request(req, TARGET)
    assert http.url == "https://api.cohere.com/v2/chat" and http.stream
    assert http.headers["authorization"] == "Bearer co-key" and http.headers["x-extra"] == "1"
    assert jsonio.loads(http.body) == {"model": "command-r-plus", "stream": True,
                                       "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("field,value,key,expected", [
    ("temperature", 0.2, "temperature", 0.2),
    ("top_p", 0.9, "p", 0.9),
    ("top_k", 40, "k", 40),
    ("presence_penalty", 0.1, "presence_penalty", 0.1),
    ("frequency_penalty", 0.3, "frequency_penalty", 0.3),
    ("seed", 7, "seed", 7),
    ("max_tokens", 99, "max_tokens", 99),
    ("stop", ["END"], "stop_sequences", ["END"]),
    ("response_format", ir.ResponseFormat(type="json_object"), "response_format", {"type": "json_object"}),
    ("response_format", ir.ResponseFormat(type="json_schema", name="x", schema={"type": "object"}, strict=True),
     "response_format", {"type": "json_object", "json_schema": {"type": "object"}}),
    ("reasoning", ir.ReasoningConfig(enabled=True, budget_tokens=500), "thinking", {"type": "enabled", "token_budget": 500}),
    ("reasoning", ir.ReasoningConfig(effort="high"), "thinking", {"type": "enabled"}),
    ("reasoning", ir.ReasoningConfig(enabled=False), "thinking", {"type": "disabled"}),
])
def test_parameter_rows(field, value, key, expected):
    assert body_of(**{field: value})[key] == expected


def test_text_response_format_sends_nothing():
    assert "response_format" not in body_of(response_format=ir.ResponseFormat(type="text"))


def test_default_max_tokens_from_the_model_entry():
    req = ir.ChatRequest(model="m", messages=[user()])
    assert jsonio.loads(backend().chat_request(req, Target(model="c", default_max_tokens=12)).body)["max_tokens"] == 12


def test_tools_drop_strict():
    assert body_of(tools=[TOOL])["tools"] == [{"type": "function", "function": {
        "name": "f", "description": "F", "parameters": {"type": "object", "properties": {}}}}]


@pytest.mark.parametrize("choice,tools,expected", [
    (ir.ToolChoice(mode="auto"), ["f", "g"], None),
    (ir.ToolChoice(mode="none"), ["f", "g"], "NONE"),
    (ir.ToolChoice(mode="required"), ["f", "g"], "REQUIRED"),
    (ir.ToolChoice(mode="tool", name="g"), ["g"], "REQUIRED"),
])
def test_tool_choice_rows(choice, tools, expected):
    body = body_of(tools=[TOOL, ir.ToolDef(name="g")], tool_choice=choice)
    assert [t["function"]["name"] for t in body["tools"]] == tools
    assert body.get("tool_choice") == expected


def test_named_tool_choice_must_name_a_tool():
    with pytest.raises(ProxyError) as e:
        body_of(tools=[TOOL], tool_choice=ir.ToolChoice(mode="tool", name="nope"))
    assert e.value.kind == "invalid_request" and e.value.param == "tool_choice"


def test_message_mapping():
    messages = [
        ir.Message(role="system", parts=[ir.Text(text="sys2")]),
        ir.Message(role="user", parts=[ir.Text(text="look"), ir.Image(media_type="image/png", data="QUJD", detail="low")]),
        ir.Message(role="assistant", parts=[ir.Reasoning(text="theirs", provider="anthropic", signature="s"),
                                            ir.Reasoning(text="mine", provider="cohere"),
                                            ir.Text(text="plan"), ir.ToolCall(id="c1", name="f", arguments="")]),
        ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="c1", content=[ir.Text(text="out")], is_error=True)]),
        ir.Message(role="assistant", parts=[ir.Text(text="done")]),
        ir.Message(role="assistant", parts=[]),
    ]
    body = body_of(messages=messages, system=[ir.Text(text="a"), ir.Text(text="b")])
    assert body["messages"] == [
        {"role": "system", "content": "a\n\nb"},
        {"role": "system", "content": "sys2"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD", "detail": "low"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "mine"}], "tool_plan": "plan",
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "out"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "done"}]},
    ]


def test_image_tool_results_and_raw_prompts_are_unsupported():
    msg = ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="c", content=[ir.Image(url="http://x/i.png")])])
    with pytest.raises(ProxyError) as e:
        body_of(messages=[msg])
    assert e.value.kind == "unsupported"
    with pytest.raises(ProxyError) as e:
        backend().chat_request(ir.ChatRequest(model="m", prompt="raw"), TARGET)
    assert e.value.kind == "unsupported"


def test_fixed_params_are_merged():
    req = ir.ChatRequest(model="m", messages=[user()])
    body = jsonio.loads(backend().chat_request(req, Target(model="c", params={"safety_mode": "OFF"})).body)
    assert body["safety_mode"] == "OFF"


def test_response_with_thinking_plan_and_calls():
    raw = {"id": "r1", "finish_reason": "TOOL_CALL", "message": {
        "role": "assistant", "content": [{"type": "thinking", "thinking": "t"}], "tool_plan": "plan",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
        "citations": [{"start": 0}]},
        "usage": {"billed_units": {"input_tokens": 1, "output_tokens": 2}, "tokens": {"input_tokens": 5, "output_tokens": 2}}}
    resp = backend().chat_response(jsonio.dumps(raw), ir.ChatRequest(model="m"), TARGET)
    choice = resp.choices[0]
    assert choice.parts == [ir.Reasoning(text="t", provider="cohere"), ir.Text(text="plan"),
                            ir.ToolCall(id="c", name="f", arguments='{"a":1}')]
    assert choice.finish_reason == "tool_calls" and choice.raw_finish_reason == "TOOL_CALL"
    assert resp.usage == ir.Usage(input_tokens=5, output_tokens=2) and resp.id == "r1"


@pytest.mark.parametrize("raw,reason", [("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"),
                                        ("TIMEOUT", "error")])
def test_response_finish_rows(raw, reason):
    body = jsonio.dumps({"id": "r", "finish_reason": raw, "message": {"role": "assistant",
                                                                       "content": [{"type": "text", "text": "x"}]}})
    assert backend().chat_response(body, ir.ChatRequest(model="m"), TARGET).choices[0].finish_reason == reason


def test_response_error_finish_and_garbage():
    body = jsonio.dumps({"id": "r", "finish_reason": "ERROR", "message": {"role": "assistant"}})
    with pytest.raises(ProxyError) as e:
        backend().chat_response(body, ir.ChatRequest(model="m"), TARGET)
    assert e.value.kind == "server"
    with pytest.raises(ProxyError) as e:
        backend().chat_response(b"[1", ir.ChatRequest(model="m"), TARGET)
    assert e.value.kind == "upstream_protocol"


@pytest.mark.parametrize("status,message,kind", [
    (400, "invalid request: foo", "invalid_request"),
    (400, "too many tokens: size limit exceeded by 10 tokens", "context_length"),
    (401, "invalid api token", "authentication"),
    (422, "invalid request: unknown field: parameter strict is not a valid field", "invalid_request"),
    (429, "trial key rate limit", "rate_limit"),
    (498, "invalid token", "authentication"),
    (500, "internal", "server"),
    (503, "unavailable", "overloaded"),
])
def test_error_rows(status, message, kind):
    err = backend().parse_error(status, {"retry-after": "2"}, jsonio.dumps({"id": "x", "message": message}))
    assert err.kind == kind and err.message == message and err.upstream_status == status
    if status == 429:
        assert err.retry_after == 2


def test_error_without_cohere_body_uses_the_status():
    err = backend().parse_error(502, {}, b"<html>bad gateway</html>")
    assert err.kind == "upstream_unavailable" and "html" not in err.message


def test_embeddings_request_and_response():
    b = backend(embed_input_type="search_query")
    http = b.embeddings_request(ir.EmbeddingRequest(model="e", input=["a", "b"], dimensions=8), Target(model="embed-v4.0"))
    assert http.url == "https://api.cohere.com/v2/embed"
    assert jsonio.loads(http.body) == {"model": "embed-v4.0", "texts": ["a", "b"], "input_type": "search_query",
                                       "embedding_types": ["float"], "output_dimension": 8}
    answer = {"id": "e", "embeddings": {"float": [[0.1], [0.2]]}, "meta": {"billed_units": {"input_tokens": 3}}}
    resp = b.embeddings_response(jsonio.dumps(answer), ir.EmbeddingRequest(model="e", input=["a", "b"]))
    assert resp.data == [[0.1], [0.2]] and resp.usage == ir.Usage(input_tokens=3)
    with pytest.raises(ProxyError) as e:
        b.embeddings_request(ir.EmbeddingRequest(model="e", input=[[1, 2]]), TARGET)
    assert e.value.kind == "unsupported"
    with pytest.raises(ProxyError):
        b.embeddings_response(b'{"embeddings": {"int8": [[1]]}}', ir.EmbeddingRequest(model="e", input=["a"]))


@pytest.mark.parametrize("raw, stops, named", [("STOP_SEQUENCE", ["END"], "END"), ("STOP_SEQUENCE", ["A", "B"], None),
                                               ("COMPLETE", ["END"], None)])
def test_response_names_the_only_stop_sequence_sent(raw, stops, named):
    body = jsonio.dumps({"id": "r", "finish_reason": raw, "message": {"role": "assistant",
                                                                       "content": [{"type": "text", "text": "x"}]}})
    choice = backend().chat_response(body, ir.ChatRequest(model="m", stop=stops), TARGET).choices[0]
    assert choice.stop_sequence == named
    # and the Anthropic face reports it (stop_reason stop_sequence), as it does for backends that name it
    from adapters.anthropic_response import finish_out
    assert finish_out(choice.finish_reason, choice.raw_finish_reason, choice.stop_sequence)[0] == (
        "stop_sequence" if named else "end_turn")
