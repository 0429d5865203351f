"""Anthropic backend: IR -> request body, answer -> IR, errors, pass-through."""

from __future__ import annotations

import msgspec
import pytest

from adapters import ir, jsonio
from adapters.anthropic_backend import AnthropicBackend, AnthropicOptions, model_default_max_tokens
from adapters.anthropic_build import EFFORT_BUDGETS, JSON_OBJECT_INSTRUCTION
from adapters.anthropic_frontend import AnthropicFrontend
from adapters.base import Target
from adapters.errors import ProxyError

FE = AnthropicFrontend()
TARGET = Target(model="claude-sonnet-4-5")


def backend(**opts) -> AnthropicBackend:
    return AnthropicBackend("https://api.example/", "sk-config", {"x-extra": "1"}, AnthropicOptions(**opts))


def parse(**fields) -> ir.ChatRequest:
    body = {"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **fields}
    return FE.parse_chat(jsonio.dumps(body))


def body_of(req: ir.ChatRequest, target: Target = TARGET, **opts) -> dict:
    return jsonio.loads(backend(**opts).chat_request(req, target).body)


def oai(messages: list[ir.Message], **kw) -> ir.ChatRequest:
    return ir.ChatRequest(model="gpt", messages=messages, **kw)


# ------------------------------------------------------------------------------------------------
# Backend: chat_request


def test_request_url_headers_and_basics():
    req = oai([ir.Message(role="user", parts=[ir.Text(text="hi")])], stop=["S"], temperature=1.7, top_p=0.5,
              user="u", stream=True)
    http = backend(beta=["b1"]).chat_request(req, TARGET)
    assert http.url == "https://api.example/v1/messages" and http.stream
    assert http.headers["x-api-key"] == "sk-config" and http.headers["anthropic-version"] == "2023-06-01"
    assert http.headers["anthropic-beta"] == "b1" and http.headers["x-extra"] == "1"
    body = jsonio.loads(http.body)
    assert body["model"] == "claude-sonnet-4-5" and body["stop_sequences"] == ["S"]
    assert body["temperature"] == 1.0 and body["top_p"] == 0.5 and body["stream"] is True
    assert body["metadata"] == {"user_id": "u"}
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


@pytest.mark.parametrize(
    ("req_max", "target_max", "opt_max", "model", "expected"),
    [
        (50, 300, 200, "claude-sonnet-4-5", 50),
        (None, 300, 200, "claude-sonnet-4-5", 300),
        (None, None, 200, "claude-sonnet-4-5", 200),
        (None, None, None, "claude-3-haiku-20240307", 4096),
        (None, None, None, "claude-sonnet-4-5", 8192),
    ],
)
def test_request_max_tokens_precedence(req_max, target_max, opt_max, model, expected):
    req = oai([ir.Message(role="user", parts=[ir.Text(text="hi")])], max_tokens=req_max)
    body = body_of(req, Target(model=model, default_max_tokens=target_max), default_max_tokens=opt_max)
    assert body["max_tokens"] == expected
    assert model_default_max_tokens(model) in (4096, 8192)


def test_request_system_lifting_merging_and_tool_results():
    req = oai(
        [
            ir.Message(role="system", parts=[ir.Text(text="sys1")]),
            ir.Message(role="user", parts=[ir.Text(text="q")]),
            ir.Message(role="user", parts=[ir.Image(url="data:image/png;base64,QUJD")]),
            ir.Message(role="assistant", parts=[
                ir.Reasoning(text="foreign", provider="openai"),
                ir.Reasoning(text="signed", signature="SIG", provider="anthropic"),
                ir.ToolCall(id="call_1", name="f", arguments='{"a":1}'),
                ir.ToolCall(id="call_2", name="g", arguments="")]),
            ir.Message(role="system", parts=[ir.Text(text="sys2")]),
            ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="call_1", content=[ir.Text(text="r1")])]),
            ir.Message(role="user", parts=[ir.Text(text="and")]),
            ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="call_2", content=[ir.Text(text="r2")], is_error=True)]),
        ],
        system=[ir.Text(text="top", cache_control={"type": "ephemeral"})],
    )
    body = body_of(req)
    assert body["system"] == [{"type": "text", "text": "top", "cache_control": {"type": "ephemeral"}},
                              {"type": "text", "text": "sys1"}, {"type": "text", "text": "sys2"}]
    user, asst, results = body["messages"]
    assert user["content"][1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}}
    assert asst["content"] == [
        {"type": "thinking", "thinking": "signed", "signature": "SIG"},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "call_2", "name": "g", "input": {}}]
    assert [b["type"] for b in results["content"]] == ["tool_result", "tool_result", "text"]
    assert results["content"][0] == {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "r1"}]}
    assert results["content"][1]["is_error"] is True


def test_request_invalid_tool_arguments_name_the_message():
    req = oai([ir.Message(role="user", parts=[ir.Text(text="q")]),
               ir.Message(role="assistant", parts=[ir.ToolCall(id="c", name="f", arguments="{bad")])])
    with pytest.raises(ProxyError) as e:
        body_of(req)
    assert e.value.status == 400 and e.value.param == "messages[1]"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://x/a.jpg", {"type": "url", "url": "https://x/a.jpg"}),
        ("data:image/webp;base64,AA", {"type": "base64", "media_type": "image/webp", "data": "AA"}),
    ],
)
def test_request_image_sources(url, expected):
    req = oai([ir.Message(role="user", parts=[ir.Image(url=url)])])
    assert body_of(req)["messages"][0]["content"][0]["source"] == expected


@pytest.mark.parametrize("url", ["data:image/bmp;base64,AA", "ftp://x/a.png"])
def test_request_image_rejected(url):
    with pytest.raises(ProxyError) as e:
        body_of(oai([ir.Message(role="user", parts=[ir.Image(url=url)])]))
    assert e.value.status == 400


TOOLS = [ir.ToolDef(name="f", parameters={"type": "object", "properties": {}})]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (ir.ToolChoice(mode="auto"), None, {"type": "auto"}),
        (ir.ToolChoice(mode="required"), None, {"type": "any"}),
        (ir.ToolChoice(mode="tool", name="f"), None, {"type": "tool", "name": "f"}),
        (ir.ToolChoice(mode="none"), None, {"type": "none"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ir.ToolChoice(mode="required"), False, {"type": "any", "disable_parallel_tool_use": True}),
        (ir.ToolChoice(mode="none"), False, {"type": "none"}),
        (None, None, None),
    ],
)
def test_request_tool_choice(choice, parallel, expected):
    req = oai([ir.Message(role="user", parts=[ir.Text(text="q")])], tools=TOOLS, tool_choice=choice,
              parallel_tool_calls=parallel)
    body = body_of(req)
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    assert body.get("tool_choice") == expected


def test_request_json_schema_forced_tool_and_json_object():
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    req = oai([ir.Message(role="user", parts=[ir.Text(text="q")])],
              response_format=ir.ResponseFormat(type="json_schema", name="answer", schema=schema))
    body = body_of(req)
    assert body["tools"][0]["name"] == "answer" and body["tools"][0]["input_schema"] == schema
    assert body["tool_choice"] == {"type": "tool", "name": "answer"}
    req.response_format = ir.ResponseFormat(type="json_object")
    body = body_of(req)
    assert body["system"][-1]["text"] == JSON_OBJECT_INSTRUCTION and "tools" not in body


def test_response_json_schema_tool_becomes_text():
    fmt = ir.ResponseFormat(type="json_schema", name="answer", schema={"type": "array"})
    req = oai([], response_format=fmt)
    sent = body_of(req)["tools"][0]["input_schema"]
    assert sent["properties"]["value"] == {"type": "array"}
    upstream = {"id": "msg_1", "model": "c", "stop_reason": "tool_use", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "answer", "input": {"value": [1, 2]}}]}
    resp = backend().chat_response(jsonio.dumps(upstream), req, TARGET)
    assert resp.choices[0].parts == [ir.Text(text="[1,2]")] and resp.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("reasoning", "max_tokens", "expected_thinking", "expected_max"),
    [
        (ir.ReasoningConfig(effort="low"), None, {"type": "enabled", "budget_tokens": EFFORT_BUDGETS["low"]}, 8192 + 1024),
        (ir.ReasoningConfig(effort="high"), 10000, {"type": "enabled", "budget_tokens": 9999}, 10000),
        (ir.ReasoningConfig(enabled=True, budget_tokens=2000), 5000, {"type": "enabled", "budget_tokens": 2000}, 5000),
        (ir.ReasoningConfig(enabled=False), None, {"type": "disabled"}, 8192),
        (ir.ReasoningConfig(effort="none"), None, {"type": "disabled"}, 8192),
    ],
)
def test_request_reasoning(reasoning, max_tokens, expected_thinking, expected_max):
    req = oai([ir.Message(role="user", parts=[ir.Text(text="q")])], reasoning=reasoning, max_tokens=max_tokens)
    body = body_of(req)
    assert (body["thinking"], body["max_tokens"]) == (expected_thinking, expected_max)


def test_request_reasoning_needs_room():
    req = oai([ir.Message(role="user", parts=[ir.Text(text="q")])], reasoning=ir.ReasoningConfig(effort="low"),
              max_tokens=500)
    with pytest.raises(ProxyError) as e:
        body_of(req)
    assert e.value.param == "max_tokens"


def test_request_extra_only_for_anthropic_clients_and_target_params():
    anth = parse(container="c1")
    assert body_of(anth)["container"] == "c1"
    other = oai([ir.Message(role="user", parts=[ir.Text(text="q")])], extra={"container": "c1"})
    assert "container" not in body_of(other)
    fixed = Target(model="claude-x", params={"service_tier": "standard_only"})
    assert body_of(other, fixed)["service_tier"] == "standard_only"


def test_anthropic_client_tool_loop_ids_survive_the_backend():
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_A", "name": "f", "input": {"k": "v"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_A", "content": "res"}]},
    ]
    body = body_of(parse(messages=messages))
    assert body["messages"][1]["content"][0] == {"type": "tool_use", "id": "toolu_A", "name": "f", "input": {"k": "v"}}
    assert body["messages"][2]["content"][0]["tool_use_id"] == "toolu_A"


def test_supported_params_exclude_what_anthropic_lacks():
    for name in ("seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "n", "min_p"):
        assert name not in AnthropicBackend.supported_params
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"bogus": 1}, AnthropicOptions)


# ------------------------------------------------------------------------------------------------
# Backend: chat_response / parse_error / passthrough


@pytest.mark.parametrize(
    ("stop_reason", "reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("refusal", "content_filter"),
        ("pause_turn", "pause"),
        ("tool_use", "stop"),  # no tool block survived: consistency rule downgrades it
        ("something_new", "stop"),
    ],
)
def test_response_stop_reasons(stop_reason, reason):
    upstream = {"id": "msg_1", "model": "c", "content": [{"type": "text", "text": "x"}], "stop_reason": stop_reason,
                "stop_sequence": "END" if stop_reason == "stop_sequence" else None}
    choice = backend().chat_response(jsonio.dumps(upstream), oai([]), TARGET).choices[0]
    assert (choice.finish_reason, choice.raw_finish_reason) == (reason, stop_reason)
    assert choice.stop_sequence == ("END" if stop_reason == "stop_sequence" else None)


def test_response_blocks_usage_and_server_tools():
    upstream = {
        "id": "msg_1", "model": "claude", "stop_reason": "tool_use",
        "content": [
            {"type": "thinking", "thinking": "t", "signature": "S"},
            {"type": "redacted_thinking", "data": "R"},
            {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}},
            {"type": "web_search_tool_result", "tool_use_id": "srv", "content": []},
            {"type": "text", "text": "hi", "citations": None},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}},
        ],
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 5, "output_tokens": 7},
    }
    resp = backend().chat_response(jsonio.dumps(upstream), oai([]), TARGET)
    assert resp.id == "msg_1" and resp.model == "claude"
    assert resp.choices[0].parts == [
        ir.Reasoning(text="t", signature="S", provider="anthropic"), ir.Reasoning(redacted_data="R", provider="anthropic"),
        ir.Text(text="hi"), ir.ToolCall(id="toolu_1", name="f", arguments='{"a":[1,2]}')]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert resp.usage == ir.Usage(input_tokens=35, output_tokens=7, cached_input_tokens=20, cache_write_tokens=5)


def test_response_not_a_message():
    with pytest.raises(ProxyError) as e:
        backend().chat_response(b"<html>", oai([]), TARGET)
    assert e.value.kind == "upstream_protocol"


@pytest.mark.parametrize(
    ("status", "etype", "message", "kind"),
    [
        (400, "invalid_request_error", "bad field", "invalid_request"),
        (400, "invalid_request_error", "prompt is too long: 300000 tokens > 200000 maximum", "context_length"),
        (401, "authentication_error", "invalid x-api-key", "authentication"),
        (402, "billing_error", "credit", "quota_exhausted"),
        (403, "permission_error", "no", "permission"),
        (404, "not_found_error", "model: x", "not_found"),
        (413, "request_too_large", "big", "request_too_large"),
        (429, "rate_limit_error", "slow down", "rate_limit"),
        (500, "api_error", "oops", "server"),
        (504, "timeout_error", "slow", "timeout"),
        (529, "overloaded_error", "Overloaded", "overloaded"),
        (503, "weird_new_error", "?", "overloaded"),
    ],
)
def test_parse_error(status, etype, message, kind):
    body = jsonio.dumps({"type": "error", "error": {"type": etype, "message": message}})
    err = backend().parse_error(status, {"retry-after": "7"}, body)
    assert (err.kind, err.message, err.upstream_status, err.retry_after) == (kind, message, status, 7.0)


def test_parse_error_unreadable_body_never_echoes_it():
    err = backend().parse_error(502, {}, b"<html>secret upstream page</html>")
    assert err.kind == "upstream_unavailable" and "secret" not in err.message


@pytest.mark.parametrize(
    ("op", "path"), [("messages", "/v1/messages"), ("count_tokens", "/v1/messages/count_tokens")]
)
def test_passthrough_request(op, path):
    client = {"Anthropic-Version": "2024-01-01", "anthropic-beta": "a, b", "x-api-key": "client-key"}
    http = backend(beta=["b", "c"]).passthrough_request(op, b"{}", op == "messages", TARGET, client)
    assert http.url == "https://api.example" + path and http.body == b"{}"
    assert http.headers["x-api-key"] == "sk-config"
    assert http.headers["anthropic-version"] == "2024-01-01"
    assert http.headers["anthropic-beta"] == "a,b,c"
    assert http.stream is (op == "messages")


def test_passthrough_defaults_and_unknown_op():
    http = backend().passthrough_request("messages", b"{}", False, TARGET, {})
    assert http.headers["anthropic-version"] == "2023-06-01" and "anthropic-beta" not in http.headers
    with pytest.raises(ProxyError) as e:
        backend().passthrough_request("embeddings", b"{}", False, TARGET, {})
    assert e.value.kind == "not_found"
