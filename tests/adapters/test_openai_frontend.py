"""OpenAI frontend: request parsing (every field), rendering, errors, pass-through usage."""

import base64
import struct

import orjson
import pytest

from adapters import ir
from adapters.errors import KINDS, ProxyError
from adapters.openai_frontend import OpenAIFrontend

F = OpenAIFrontend()


def chat(**kw):
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], **kw}
    return F.parse_chat(orjson.dumps(body))


def test_every_role_and_system_placement():
    req = chat(messages=[
        {"role": "system", "content": "s1"},
        {"role": "developer", "content": [{"type": "text", "text": "d1"}]},
        {"role": "user", "content": "u", "name": "bob"},
        {"role": "assistant", "content": None, "reasoning_content": "think",
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "res"}]},
        {"role": "system", "content": "late"},
        {"role": "assistant", "content": "x", "function_call": {"name": "g", "arguments": "{}"}},
        {"role": "function", "name": "g", "content": "gres"},
    ])
    assert [t.text for t in req.system] == ["s1", "d1"]
    roles = [m.role for m in req.messages]
    assert roles == ["user", "assistant", "tool", "system", "assistant", "tool"]
    assert req.messages[0].name == "bob"
    assert req.messages[1].parts == [ir.Reasoning(text="think"), ir.ToolCall("c1", "f", "{\"a\":")]
    assert req.messages[2].parts == [ir.ToolResult("c1", [ir.Text("res")], name="f")]
    fc = req.messages[4].parts[1]
    assert fc.name == "g" and req.messages[5].parts[0].tool_call_id == fc.id


def test_reasoning_field_alias():
    req = chat(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "reasoning": "r"}])
    assert req.messages[1].parts[0] == ir.Reasoning(text="r")


@pytest.mark.parametrize("url,expected", [
    ("data:image/png;base64,QUJD", ir.Image(media_type="image/png", data="QUJD", detail="high")),
    ("https://x/y.png", ir.Image(url="https://x/y.png", detail="high")),
])
def test_image_parts(url, expected):
    req = chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url, "detail": "high"}}]}])
    assert req.messages[0].parts == [ir.Text("look"), expected]


@pytest.mark.parametrize("part", [
    {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}},
    {"type": "file", "file": {"file_id": "f"}},
])
def test_audio_and_file_parts_rejected(part):
    with pytest.raises(ProxyError) as e:
        chat(messages=[{"role": "user", "content": "ok"}, {"role": "user", "content": [part]}])
    assert e.value.status == 400 and e.value.param == "messages[1].content[0]"


@pytest.mark.parametrize("choice,expected_mode,expected_name", [
    ("auto", "auto", None), ("none", "none", None), ("required", "required", None),
    ({"type": "function", "function": {"name": "b"}}, "tool", "b"),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "required",
      "tools": [{"type": "function", "function": {"name": "b"}}]}}, "required", None),
])
def test_tool_choice_forms(choice, expected_mode, expected_name):
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("a", "b")]
    req = chat(tools=tools, tool_choice=choice)
    assert (req.tool_choice.mode, req.tool_choice.name) == (expected_mode, expected_name)
    if isinstance(choice, dict) and choice["type"] == "allowed_tools":
        assert [t.name for t in req.tools] == ["b"]
    else:
        assert [t.name for t in req.tools] == ["a", "b"]


@pytest.mark.parametrize("fc,mode,name", [("auto", "auto", None), ("none", "none", None), ({"name": "f"}, "tool", "f")])
def test_deprecated_functions(fc, mode, name):
    req = chat(functions=[{"name": "f", "description": "d"}], function_call=fc)
    assert req.tools == [ir.ToolDef(name="f", description="d")]
    assert (req.tool_choice.mode, req.tool_choice.name) == (mode, name)


def test_custom_tool_rejected():
    with pytest.raises(ProxyError) as e:
        chat(tools=[{"type": "custom", "custom": {"name": "x"}}])
    assert e.value.param == "tools[0]"


@pytest.mark.parametrize("rf,expected", [
    ({"type": "text"}, ir.ResponseFormat("text")),
    ({"type": "json_object"}, ir.ResponseFormat("json_object")),
    ({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}, "strict": True}},
     ir.ResponseFormat("json_schema", name="n", schema={"type": "object"}, strict=True)),
])
def test_response_format(rf, expected):
    assert chat(response_format=rf).response_format == expected


def test_scalar_fields_and_extras():
    req = chat(max_tokens=5, max_completion_tokens=9, temperature=0.5, top_p=0.9, n=2, stop="END",
               presence_penalty=0.1, frequency_penalty=0.2, logit_bias={"12": -100}, logprobs=True, top_logprobs=3,
               seed=7, reasoning_effort="high", user="u", metadata={"k": "v"}, parallel_tool_calls=False,
               stream=True, stream_options={"include_usage": True}, top_k=40, min_p=0.05, repetition_penalty=1.1,
               guided_json={"type": "object"}, store=True, chat_template_kwargs={"enable_thinking": False})
    assert (req.max_tokens, req.temperature, req.top_p, req.n, req.stop) == (9, 0.5, 0.9, 2, ["END"])
    assert (req.presence_penalty, req.frequency_penalty, req.logit_bias) == (0.1, 0.2, {"12": -100})
    assert (req.logprobs, req.top_logprobs, req.seed, req.user, req.metadata) == (True, 3, 7, "u", {"k": "v"})
    assert req.reasoning == ir.ReasoningConfig(effort="high") and req.parallel_tool_calls is False
    assert req.stream and req.include_usage
    assert (req.top_k, req.min_p, req.repetition_penalty) == (40, 0.05, 1.1)
    assert req.extra == {"guided_json": {"type": "object"}, "store": True,
                         "chat_template_kwargs": {"enable_thinking": False}}
    assert chat(max_tokens=5).max_tokens == 5
    assert chat(stop=["a", "b"]).stop == ["a", "b"]
    assert chat(reasoning_effort="none").reasoning.enabled is False


@pytest.mark.parametrize("body,param", [
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": 5}]},
     "messages[1].content"),
    ({"model": "m", "messages": [{"role": "robot", "content": "a"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "a"}]}, None),
    ({"model": "m", "messages": [{"role": "user", "content": "a"}], "temperature": "hot"}, "temperature"),
])
def test_invalid_requests_name_the_field(body, param):
    with pytest.raises(ProxyError) as e:
        F.parse_chat(orjson.dumps(body))
    assert e.value.kind == "invalid_request" and e.value.status == 400
    assert e.value.param == param


def test_invalid_json():
    with pytest.raises(ProxyError) as e:
        F.parse_chat(b"{nope")
    assert e.value.status == 400


def test_completion_parsing():
    req = F.parse_completion(orjson.dumps({"model": "m", "prompt": ["once"], "echo": True, "logprobs": 2}))
    assert req.prompt == "once" and req.max_tokens == 16 and req.extra == {"echo": True}
    assert (req.logprobs, req.top_logprobs) == (True, 2)
    for bad in (["a", "b"], [1, 2, 3]):
        with pytest.raises(ProxyError) as e:
            F.parse_completion(orjson.dumps({"model": "m", "prompt": bad}))
        assert e.value.param == "prompt" and e.value.status == 400


@pytest.mark.parametrize("inp,expected", [("a", ["a"]), (["a", "b"], ["a", "b"]), ([1, 2], [[1, 2]]),
                                          ([[1], [2, 3]], [[1], [2, 3]])])
def test_embeddings_parsing(inp, expected):
    req = F.parse_embeddings(orjson.dumps({"model": "e", "input": inp, "encoding_format": "base64"}))
    assert req.input == expected and req.encoding_format == "base64"


def test_render_chat():
    resp = ir.ChatResponse(id="r1", model="up", created=5, choices=[ir.Choice(parts=[
        ir.Reasoning(text="hm", signature="sig"), ir.Text("a"), ir.Text("b"), ir.ToolCall("c", "f", "{}")],
        finish_reason="stop")], usage=ir.Usage(10, 4, cached_input_tokens=3, reasoning_tokens=2))
    out = orjson.loads(F.render_chat(resp, "client-model"))
    assert out["model"] == "client-model" and out["object"] == "chat.completion"
    msg = out["choices"][0]["message"]
    assert msg["content"] == "ab" and msg["reasoning_content"] == "hm"
    assert msg["tool_calls"] == [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert out["choices"][0]["finish_reason"] == "tool_calls"  # consistency rule
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14,
                            "prompt_tokens_details": {"cached_tokens": 3},
                            "completion_tokens_details": {"reasoning_tokens": 2}}


@pytest.mark.parametrize("reason,expected", [("stop", "stop"), ("length", "length"), ("tool_calls", "stop"),
                                             ("content_filter", "content_filter"), ("pause", "stop")])
def test_render_finish_reasons(reason, expected):
    resp = ir.ChatResponse(id="r", model="m", created=1, choices=[ir.Choice(parts=[ir.Text("x")], finish_reason=reason)])
    assert orjson.loads(F.render_chat(resp, "m"))["choices"][0]["finish_reason"] == expected


def test_render_completion_and_embeddings():
    resp = ir.ChatResponse(id="r", model="m", created=1, choices=[ir.Choice(parts=[ir.Text("hi")], finish_reason="length")],
                           usage=ir.Usage(2, 1))
    out = orjson.loads(F.render_completion(resp, "m"))
    assert out["object"] == "text_completion" and out["choices"][0]["text"] == "hi"
    assert out["choices"][0]["finish_reason"] == "length" and out["usage"]["total_tokens"] == 3
    emb = ir.EmbeddingResponse(model="e", data=[[0.5, -1.0]], usage=ir.Usage(3))
    floats = orjson.loads(F.render_embeddings(emb, "e"))
    assert floats["data"][0]["embedding"] == [0.5, -1.0] and floats["usage"]["prompt_tokens"] == 3
    b64 = orjson.loads(F.render_embeddings(emb, "e", encoding_format="base64"))["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(b64)) == (0.5, -1.0)


@pytest.mark.parametrize("kind,typ,code", [
    ("invalid_request", "invalid_request_error", None),
    ("unsupported", "invalid_request_error", "unsupported_parameter"),
    ("context_length", "invalid_request_error", "context_length_exceeded"),
    ("authentication", "invalid_request_error", "invalid_api_key"),
    ("permission", "permission_error", None),
    ("not_found", "invalid_request_error", "model_not_found"),
    ("request_too_large", "invalid_request_error", None),
    ("rate_limit", "requests", "rate_limit_exceeded"),
    ("quota_exhausted", "insufficient_quota", "insufficient_quota"),
    ("server", "server_error", None),
    ("upstream_unavailable", "server_error", None),
    ("upstream_protocol", "server_error", None),
    ("overloaded", "server_error", None),
    ("timeout", "server_error", None),
])
def test_render_error_table(kind, typ, code):
    status, body = F.render_error(ProxyError(kind, "boom", param="p"))
    assert status == KINDS[kind]
    assert orjson.loads(body) == {"error": {"message": "boom", "type": typ, "param": "p", "code": code}}


def test_usage_extraction_for_passthrough():
    body = orjson.dumps({"id": "x", "choices": [{"message": {"content": "big" * 100}}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                                   "prompt_tokens_details": {"cached_tokens": 1}}})
    assert F.usage_from_body(body) == ir.Usage(5, 2, cached_input_tokens=1)
    assert F.usage_from_event(b'{"choices":[],"usage":null}') is None
    assert F.usage_from_event(b"[DONE]") is None
    with pytest.raises(ProxyError) as bad:  # pass-through relays nothing it could not parse
        F.usage_from_body(b"not json")
    assert bad.value.kind == "upstream_protocol" and bad.value.status == 502
    assert F.usage_from_event(b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}') == ir.Usage(1, 1)


# -- Gemini thought signatures on tool calls (Google's `extra_content` convention) ----------------

GEMINI_TURN = [ir.Reasoning(text="**Plan**", signature="dGhvdWdodA==", provider="gemini"),
               ir.Reasoning(signature="Y2FsbA==", provider="gemini"), ir.ToolCall("call_1", "w", '{"c":1}'),
               ir.ToolCall("call_2", "t", "{}")]


def test_a_gemini_call_signature_rides_on_its_tool_call_and_comes_back():
    resp = ir.ChatResponse(id="r", model="up", created=1, choices=[ir.Choice(parts=GEMINI_TURN,
                                                                             finish_reason="tool_calls")])
    msg = orjson.loads(F.render_chat(resp, "m"))["choices"][0]["message"]
    first, second = msg["tool_calls"]
    assert first["extra_content"] == {"google": {"thought_signature": "Y2FsbA=="}}
    assert "extra_content" not in second  # Gemini signs the first call of a step only
    req = chat(messages=[{"role": "user", "content": "go"}, msg,
                         *({"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in msg["tool_calls"])])
    # the thought text comes back as unsigned reasoning_content; the call's signature as Gemini's
    assert req.messages[1].parts == [ir.Reasoning(text="**Plan**"), *GEMINI_TURN[1:]]


@pytest.mark.parametrize("part", [
    ir.Reasoning(signature="sig", provider="anthropic"),  # Anthropic's: no Chat Completions slot
    ir.Reasoning(text="thought", signature="sig", provider="gemini"),  # a thought's, not the call's
    ir.Reasoning(signature="sig"),
], ids=["anthropic", "gemini-thought", "no-provider"])
def test_other_signatures_do_not_ride_on_tool_calls(part):
    resp = ir.ChatResponse(id="r", model="up", created=1, choices=[ir.Choice(parts=[part, ir.ToolCall("c", "f", "{}")])])
    msg = orjson.loads(F.render_chat(resp, "m"))["choices"][0]["message"]
    assert "extra_content" not in msg["tool_calls"][0]


def test_a_signature_before_text_is_not_moved_to_a_later_call():
    parts = [ir.Reasoning(signature="sig", provider="gemini"), ir.Text("a"), ir.ToolCall("c", "f", "{}")]
    resp = ir.ChatResponse(id="r", model="up", created=1, choices=[ir.Choice(parts=parts)])
    assert "extra_content" not in orjson.loads(F.render_chat(resp, "m"))["choices"][0]["message"]["tool_calls"][0]


def test_malformed_extra_content_is_a_400_naming_it():
    with pytest.raises(ProxyError) as info:
        chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "extra_content": {
            "google": {"thought_signature": 5}}, "function": {"name": "f", "arguments": "{}"}}]}])
    assert info.value.status == 400 and "extra_content" in (info.value.param or info.value.message)


# -- Anthropic's signed thinking in reasoning_details (OpenRouter's convention) --------------------

ANTHROPIC_TURN = [ir.Reasoning(text="I should call f.", signature="EqQBsig", provider="anthropic"),
                  ir.Reasoning(redacted_data="EmwK", provider="anthropic"), ir.Text("Looking."),
                  ir.ToolCall("toolu_1", "f", "{}")]


def test_anthropic_thinking_goes_to_reasoning_details_and_comes_back():
    resp = ir.ChatResponse(id="r", model="up", created=1, choices=[ir.Choice(parts=ANTHROPIC_TURN)])
    msg = orjson.loads(F.render_chat(resp, "m"))["choices"][0]["message"]
    assert msg["reasoning_content"] == "I should call f."
    assert msg["reasoning_details"] == [
        {"type": "reasoning.text", "text": "I should call f.", "signature": "EqQBsig", "format": "anthropic-claude-v1",
         "index": 0},
        {"type": "reasoning.encrypted", "data": "EmwK", "format": "anthropic-claude-v1", "index": 1}]
    req = chat(messages=[{"role": "user", "content": "go"}, msg,
                         {"role": "tool", "tool_call_id": "toolu_1", "content": "ok"}])
    assert req.messages[1].parts == ANTHROPIC_TURN  # the text once, signed; not again from reasoning_content


@pytest.mark.parametrize("details", [
    [{"type": "reasoning.text", "text": "t", "signature": "s", "format": "google-gemini-v1", "index": 0}],
    [{"type": "reasoning.summary", "summary": "s", "format": "anthropic-claude-v1", "index": 0}],
    [{"type": "reasoning.text", "text": "unsigned", "format": "anthropic-claude-v1", "index": 0}],
], ids=["other-format", "summary", "unsigned"])
def test_reasoning_details_without_anthropic_signed_thinking_are_ignored(details):
    req = chat(messages=[{"role": "assistant", "content": "a", "reasoning_content": "r", "reasoning_details": details}])
    assert req.messages[0].parts == [ir.Reasoning(text="r"), ir.Text("a")]
