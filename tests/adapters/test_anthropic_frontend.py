"""Anthropic frontend: client body -> IR, IR -> Message, errors, usage, count_tokens."""

from __future__ import annotations

import pytest

from adapters import ir, jsonio
from adapters.anthropic_frontend import AnthropicFrontend
from adapters.errors import ProxyError

FE = AnthropicFrontend()


def parse(**fields) -> ir.ChatRequest:
    body = {"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], **fields}
    return FE.parse_chat(jsonio.dumps(body))


# ------------------------------------------------------------------------------------------------
# Frontend: parse_chat


def test_parse_system_string_and_blocks():
    assert parse(system="be brief").system == [ir.Text(text="be brief")]
    req = parse(system=[{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}])
    assert req.system == [ir.Text(text="a", cache_control={"type": "ephemeral"})]
    assert req.source_format == "anthropic" and req.include_usage


def test_parse_scalars_metadata_and_extra():
    req = parse(stop_sequences=["X"], temperature=0.5, top_p=0.9, top_k=5, stream=True,
                metadata={"user_id": "u1"}, service_tier="auto", container="c1")
    assert (req.stop, req.temperature, req.top_p, req.top_k, req.stream) == (["X"], 0.5, 0.9, 5, True)
    assert req.user == "u1" and req.metadata is None
    assert req.extra == {"service_tier": "auto", "container": "c1"}


def test_parse_images():
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
               {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}, {"type": "text", "text": "t"}]
    (msg,) = parse(messages=[{"role": "user", "content": content}]).messages
    assert msg.parts == [ir.Image(media_type="image/png", data="AAA"), ir.Image(url="https://x/y.png"), ir.Text(text="t")]


def test_parse_file_image_is_unsupported():
    content = [{"type": "image", "source": {"type": "file", "file_id": "f1"}}]
    with pytest.raises(ProxyError) as e:
        parse(messages=[{"role": "user", "content": content}])
    assert e.value.kind == "unsupported" and e.value.param == "messages[0].content[0].source"


def test_parse_documents():
    text_doc = {"type": "document", "title": "T", "source": {"type": "text", "media_type": "text/plain", "data": "body"}}
    (msg,) = parse(messages=[{"role": "user", "content": [text_doc]}]).messages
    assert msg.parts == [ir.Text(text="T\nbody")]
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}
    with pytest.raises(ProxyError) as e:
        parse(messages=[{"role": "user", "content": [pdf]}])
    assert e.value.status == 400 and "PDF" in e.value.message


def test_parse_tool_conversation_keeps_ids_order_and_names():
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "SIG"},
            {"type": "text", "text": "checking"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "boom"}]},
            {"type": "text", "text": "thanks"}]},
    ]
    req = parse(messages=messages)
    assert [m.role for m in req.messages] == ["user", "assistant", "tool", "tool", "user"]
    asst = req.messages[1].parts
    assert asst[0] == ir.Reasoning(text="hmm", signature="SIG", provider="anthropic")
    assert asst[2] == ir.ToolCall(id="toolu_1", name="get_weather", arguments='{"city":"Paris"}')
    assert req.messages[2].parts == [ir.ToolResult(tool_call_id="toolu_1", content=[ir.Text(text="sunny")], name="get_weather")]
    assert req.messages[3].parts == [
        ir.ToolResult(tool_call_id="toolu_2", content=[ir.Text(text="boom")], is_error=True, name="get_time")]
    assert req.messages[4].parts == [ir.Text(text="thanks")]


def test_parse_unsigned_and_redacted_thinking():
    content = [{"type": "thinking", "thinking": "x"}, {"type": "redacted_thinking", "data": "opaque"}]
    (msg,) = parse(messages=[{"role": "assistant", "content": content}]).messages
    assert msg.parts == [ir.Reasoning(text="x"), ir.Reasoning(redacted_data="opaque", provider="anthropic")]


def test_parse_tools_and_server_tools():
    req = parse(tools=[{"name": "f", "description": "d", "input_schema": {"type": "object"}, "type": "custom"}])
    assert req.tools == [ir.ToolDef(name="f", description="d", parameters={"type": "object"})]
    with pytest.raises(ProxyError) as e:
        parse(tools=[{"name": "web_search", "type": "web_search_20250305"}])
    assert e.value.kind == "unsupported" and e.value.param == "tools[0].type"
    with pytest.raises(ProxyError) as e:
        parse(tools=[{"name": "f"}])
    assert e.value.param == "tools[0].input_schema"


@pytest.mark.parametrize(
    ("wire", "choice", "parallel"),
    [
        ({"type": "auto"}, ir.ToolChoice(mode="auto"), None),
        ({"type": "any"}, ir.ToolChoice(mode="required"), None),
        ({"type": "tool", "name": "f"}, ir.ToolChoice(mode="tool", name="f"), None),
        ({"type": "none"}, ir.ToolChoice(mode="none"), None),
        ({"type": "auto", "disable_parallel_tool_use": True}, ir.ToolChoice(mode="auto"), False),
        ({"type": "any", "disable_parallel_tool_use": True}, ir.ToolChoice(mode="required"), False),
    ],
)
def test_parse_tool_choice(wire, choice, parallel):
    req = parse(tool_choice=wire)
    assert (req.tool_choice, req.parallel_tool_calls) == (choice, parallel)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, ir.ReasoningConfig(enabled=True, budget_tokens=2048)),
        ({"thinking": {"type": "disabled"}}, ir.ReasoningConfig(enabled=False)),
        ({"thinking": {"type": "adaptive"}}, ir.ReasoningConfig(enabled=True)),
        ({"output_config": {"effort": "high"}}, ir.ReasoningConfig(enabled=True, effort="high")),
        ({}, None),
    ],
)
def test_parse_thinking(fields, expected):
    assert parse(**fields).reasoning == expected


def test_parse_output_config_json_schema():
    req = parse(output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}})
    assert req.response_format == ir.ResponseFormat(type="json_schema", schema={"type": "object"})


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": "x", "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "bogus"}]}]},
         "messages[0].content[0].type"),
        ({"model": "m", "max_tokens": 1, "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_parse_validation_errors_name_the_path(body, param):
    with pytest.raises(ProxyError) as e:
        FE.parse_chat(jsonio.dumps(body))
    assert e.value.kind == "invalid_request" and e.value.param == param


def test_parse_not_json():
    with pytest.raises(ProxyError) as e:
        FE.parse_chat(b"{nope")
    assert e.value.status == 400


# ------------------------------------------------------------------------------------------------
# Frontend: render_chat / render_error / usage / count_tokens


def response(parts, reason="stop", raw=None, stop_sequence=None, usage=None, id="chatcmpl-1") -> ir.ChatResponse:
    return ir.ChatResponse(id=id, model="backend", created=1, usage=usage, choices=[
        ir.Choice(parts=parts, finish_reason=reason, raw_finish_reason=raw, stop_sequence=stop_sequence)])


def render(resp: ir.ChatResponse) -> dict:
    return jsonio.loads(FE.render_chat(resp, "client-model"))


@pytest.mark.parametrize(
    ("reason", "raw", "stop_seq", "expected"),
    [
        ("stop", "stop", None, ("end_turn", None)),
        ("stop", "stop_sequence", "END", ("stop_sequence", "END")),
        ("length", "length", None, ("max_tokens", None)),
        ("length", "model_context_window_exceeded", None, ("model_context_window_exceeded", None)),
        ("content_filter", "content_filter", None, ("refusal", None)),
        ("pause", "pause_turn", None, ("pause_turn", None)),
        ("error", "abort", None, ("end_turn", None)),
    ],
)
def test_render_stop_reasons(reason, raw, stop_seq, expected):
    out = render(response([ir.Text(text="x")], reason, raw, stop_seq))
    assert (out["stop_reason"], out["stop_sequence"]) == expected


def test_render_tool_calls_force_tool_use_and_parse_input():
    out = render(response([ir.Text(text="a"), ir.ToolCall(id="call.1:x", name="f", arguments='{"a":1}'),
                           ir.ToolCall(id="c2", name="g", arguments="{broken")], "stop"))
    assert out["stop_reason"] == "tool_use"
    assert out["content"][1] == {"type": "tool_use", "id": "call_1_x", "name": "f", "input": {"a": 1}}
    assert out["content"][2]["input"] == {}


def test_render_reasoning_only_when_anthropic_signed():
    parts = [ir.Reasoning(text="mine", signature="S", provider="anthropic"), ir.Reasoning(text="foreign", provider="openai"),
             ir.Reasoning(text="gem", signature="G", provider="gemini"), ir.Reasoning(redacted_data="R", provider="anthropic"),
             ir.Text(text="t")]
    out = render(response(parts))
    assert out["content"] == [{"type": "thinking", "thinking": "mine", "signature": "S"},
                              {"type": "redacted_thinking", "data": "R"}, {"type": "text", "text": "t"}]


def test_render_message_shape_and_usage():
    out = render(response([ir.Text(text="x")], usage=ir.Usage(input_tokens=100, output_tokens=7,
                                                              cached_input_tokens=30, cache_write_tokens=10)))
    assert out["id"] == "msg_chatcmpl-1" and out["type"] == "message" and out["model"] == "client-model"
    assert out["usage"] == {"input_tokens": 60, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 10,
                            "output_tokens": 7}
    assert render(response([], id="msg_abc"))["id"] == "msg_abc"
    odd = render(response([], usage=ir.Usage(input_tokens=5, cached_input_tokens=9)))
    assert odd["usage"]["input_tokens"] == 0


@pytest.mark.parametrize(
    ("kind", "status", "etype"),
    [
        ("invalid_request", 400, "invalid_request_error"),
        ("unsupported", 400, "invalid_request_error"),
        ("context_length", 400, "invalid_request_error"),
        ("authentication", 401, "authentication_error"),
        ("permission", 403, "permission_error"),
        ("not_found", 404, "not_found_error"),
        ("request_too_large", 413, "request_too_large"),
        ("rate_limit", 429, "rate_limit_error"),
        ("quota_exhausted", 429, "rate_limit_error"),
        ("server", 500, "api_error"),
        ("upstream_unavailable", 502, "api_error"),
        ("upstream_protocol", 502, "api_error"),
        ("timeout", 504, "timeout_error"),
        ("overloaded", 529, "overloaded_error"),
    ],
)
def test_render_error(kind, status, etype):
    got_status, body = FE.render_error(ProxyError(kind, "msg"))
    assert got_status == status
    assert jsonio.loads(body) == {"type": "error", "error": {"type": etype, "message": "msg"}}


def test_usage_from_body_and_events():
    body = b'{"id":"msg_1","usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":3}}'
    assert FE.usage_from_body(body) == ir.Usage(input_tokens=15, output_tokens=3, cached_input_tokens=5)
    start = b'{"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1}}}'
    assert FE.usage_from_event(start) == ir.Usage(input_tokens=10, output_tokens=1)
    delta = b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}'
    assert FE.usage_from_event(delta) == ir.Usage(output_tokens=42)
    assert FE.usage_from_event(b'{"type":"ping"}') is None
    with pytest.raises(ProxyError) as bad:  # pass-through relays nothing it could not parse
        FE.usage_from_body(b"not json")
    assert bad.value.kind == "upstream_protocol" and bad.value.status == 502


def test_count_tokens_estimate():
    base = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}]}
    n = FE.count_tokens_estimate(jsonio.dumps(base))
    assert n == 100 + 4
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A"}}
    more = {**base, "system": "s" * 40, "messages": base["messages"] + [{"role": "user", "content": [image]}]}
    assert FE.count_tokens_estimate(jsonio.dumps(more)) == 110 + 8 + 1600
