"""Gemini frontend without sockets: URL, request parsing, rendering, errors, embeddings, count_tokens,
every mapping row on its own."""

from __future__ import annotations

import pytest

from adapters import ir, jsonio
from adapters.errors import KINDS, ProxyError
from adapters.gemini_frontend import GeminiFrontend

FE = GeminiFrontend()


def parse(**body) -> ir.ChatRequest:
    body.setdefault("contents", [{"role": "user", "parts": [{"text": "hi"}]}])
    return FE.parse_chat(jsonio.dumps(body))


# -- frontend: URL ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,query,expected",
    [
        ("gemini-2.5-flash:generateContent", {}, ("gemini-2.5-flash", "generate", False)),
        ("gemini-2.5-flash:streamGenerateContent", {"alt": "sse"}, ("gemini-2.5-flash", "generate", True)),
        ("gemini-2.5-flash:countTokens", {}, ("gemini-2.5-flash", "count_tokens", False)),
        ("text-embedding-004:embedContent", {}, ("text-embedding-004", "embed", False)),
        ("text-embedding-004:batchEmbedContents", {}, ("text-embedding-004", "batch_embed", False)),
        ("llama3.1:8b:generateContent", {}, ("llama3.1:8b", "generate", False)),
        ("models/gemini-2.5-pro:generateContent", {}, ("gemini-2.5-pro", "generate", False)),
    ],
)
def test_request_target(path, query, expected):
    assert FE.request_target(path, query) == expected


def test_request_target_stream_needs_alt_sse():
    with pytest.raises(ProxyError) as e:
        FE.request_target("gemini-2.5-flash:streamGenerateContent", {})
    assert e.value.kind == "invalid_request" and e.value.param == "alt"


@pytest.mark.parametrize("path", ["gemini-2.5-flash", "gemini-2.5-flash:predict", ":generateContent"])
def test_request_target_unknown(path):
    with pytest.raises(ProxyError) as e:
        FE.request_target(path, {})
    assert e.value.kind == "not_found"


# -- frontend: request parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "config,field,value",
    [
        ({"temperature": 0.3}, "temperature", 0.3),
        ({"topP": 0.9}, "top_p", 0.9),
        ({"topK": 40}, "top_k", 40),
        ({"maxOutputTokens": 77}, "max_tokens", 77),
        ({"stopSequences": ["END", "STOP"]}, "stop", ["END", "STOP"]),
        ({"candidateCount": 2}, "n", 2),
        ({"seed": 7}, "seed", 7),
        ({"presencePenalty": 0.5}, "presence_penalty", 0.5),
        ({"frequencyPenalty": -0.5}, "frequency_penalty", -0.5),
        ({"responseLogprobs": True}, "logprobs", True),
        ({"logprobs": 3}, "top_logprobs", 3),
    ],
)
def test_generation_config_rows(config, field, value):
    assert getattr(parse(generationConfig=config), field) == value


@pytest.mark.parametrize(
    "config,expected",
    [
        ({"responseMimeType": "application/json"}, ir.ResponseFormat(type="json_object")),
        ({"responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}},
         ir.ResponseFormat(type="json_schema", name="response", schema={"type": "object"})),
        ({"responseMimeType": "application/json", "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "STRING", "nullable": True}}}},
         ir.ResponseFormat(type="json_schema", name="response",
                           schema={"type": "object", "properties": {"a": {"type": ["string", "null"]}}})),
        ({"responseMimeType": "text/plain"}, None),
    ],
)
def test_response_format_rows(config, expected):
    assert parse(generationConfig=config).response_format == expected


def test_enum_mime_type_is_unsupported():
    with pytest.raises(ProxyError) as e:
        parse(generationConfig={"responseMimeType": "text/x.enum"})
    assert e.value.kind == "unsupported" and e.value.param == "generationConfig.responseMimeType"


@pytest.mark.parametrize(
    "thinking,expected",
    [
        ({"thinkingBudget": 0}, ir.ReasoningConfig(enabled=False)),
        ({"thinkingBudget": -1}, ir.ReasoningConfig(enabled=True)),
        ({"thinkingBudget": 2048, "includeThoughts": True}, ir.ReasoningConfig(enabled=True, budget_tokens=2048)),
        ({"thinkingLevel": "HIGH"}, ir.ReasoningConfig(enabled=True, effort="high")),
        ({"includeThoughts": True}, None),
    ],
)
def test_thinking_config_rows(thinking, expected):
    assert parse(generationConfig={"thinkingConfig": thinking}).reasoning == expected


@pytest.mark.parametrize(
    "mode,names,choice,tools",
    [
        ("AUTO", None, ir.ToolChoice(mode="auto"), ["a", "b"]),
        ("NONE", None, ir.ToolChoice(mode="none"), ["a", "b"]),
        ("ANY", None, ir.ToolChoice(mode="required"), ["a", "b"]),
        ("ANY", ["b"], ir.ToolChoice(mode="tool", name="b"), ["a", "b"]),
        ("ANY", ["a", "b"], ir.ToolChoice(mode="required"), ["a", "b"]),
        ("VALIDATED", None, ir.ToolChoice(mode="auto"), ["a", "b"]),
    ],
)
def test_tool_config_rows(mode, names, choice, tools):
    fcc = {"mode": mode, **({"allowedFunctionNames": names} if names else {})}
    decls = [{"name": "a"}, {"name": "b"}, *([{"name": "c"}] if names and len(names) > 1 else [])]
    req = parse(tools=[{"functionDeclarations": decls}], toolConfig={"functionCallingConfig": fcc})
    assert req.tool_choice == choice
    assert [t.name for t in req.tools] == tools  # ANY over a subset withholds the other tools


def test_tools_parameters_and_json_schema():
    req = parse(tools=[{"functionDeclarations": [
        {"name": "w", "description": "Weather", "parameters": {"type": "OBJECT", "properties": {
            "city": {"type": "STRING"}, "days": {"type": "ARRAY", "items": {"type": "INTEGER"}}}, "propertyOrdering": ["city"]}},
        {"name": "j", "parametersJsonSchema": {"type": "object", "additionalProperties": False}},
        {"name": "none"},
    ]}])
    assert [ir.to_builtins(t) for t in req.tools] == [
        {"name": "w", "description": "Weather", "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "array", "items": {"type": "integer"}}}}},
        {"name": "j", "parameters": {"type": "object", "additionalProperties": False}},
        {"name": "none", "parameters": {"type": "object", "properties": {}}},
    ]


@pytest.mark.parametrize("builtin", ["googleSearch", "codeExecution", "urlContext"])
def test_builtin_tools_unsupported(builtin):
    with pytest.raises(ProxyError) as e:
        parse(tools=[{builtin: {}}])
    assert e.value.kind == "unsupported" and e.value.param == f"tools[0].{builtin}"


def test_system_parts_extra_and_defaults():
    req = parse(systemInstruction={"parts": [{"text": "a"}, {"text": "b"}]},
                safetySettings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
                cachedContent="cachedContents/1")
    assert [t.text for t in req.system] == ["a", "b"]
    assert req.extra == {"safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
                         "cachedContent": "cachedContents/1"}
    assert req.source_format == "gemini" and req.model == "" and req.include_usage and not req.stream


def test_images_inline_and_file():
    req = parse(contents=[{"role": "user", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://b/x.jpg"}}, {"text": "what?"}]}])
    assert req.messages[0].parts == [ir.Image(media_type="image/png", data="AAAA"),
                                     ir.Image(url="gs://b/x.jpg", media_type="image/jpeg"), ir.Text(text="what?")]


@pytest.mark.parametrize("part,param", [
    ({"inlineData": {"mimeType": "application/pdf", "data": "AAAA"}}, "contents[0].parts[0].inlineData"),
    ({"executableCode": {"code": "1"}}, "contents[0].parts[0]"),
])
def test_untranslatable_parts(part, param):
    with pytest.raises(ProxyError) as e:
        parse(contents=[{"role": "user", "parts": [part]}])
    assert e.value.kind == "unsupported" and e.value.param == param


@pytest.mark.parametrize("body,param", [
    ({"contents": [{"role": "user", "parts": [{"text": 3}]}]}, "contents[0].parts[0].text"),
    ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "contents[0].role"),
    ({"contents": [{"role": "user", "parts": [{}]}]}, "contents[0].parts[0]"),
    ({}, None),
])
def test_invalid_bodies_name_the_field(body, param):
    with pytest.raises(ProxyError) as e:
        FE.parse_chat(jsonio.dumps(body))
    assert e.value.kind == "invalid_request" and e.value.param == param


def test_tool_round_trip_pairs_responses_by_name_and_order():
    req = parse(contents=[
        {"role": "user", "parts": [{"text": "weather in two cities"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {"c": "A"}}, "thoughtSignature": "U0lH"},
                                    {"functionCall": {"name": "w", "args": {"c": "B"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"output": "sunny"}}},
                                   {"functionResponse": {"name": "w", "response": {"error": "down"}}},
                                   {"text": "thanks"}]},
    ])
    model = req.messages[1]
    assert model.parts == [ir.Reasoning(signature="U0lH", provider="gemini"),
                           ir.ToolCall(id="call_1_0", name="w", arguments='{"c":"A"}'),
                           ir.ToolCall(id="call_1_1", name="w", arguments='{"c":"B"}')]
    assert [m.role for m in req.messages[2:]] == ["tool", "tool", "user"]
    assert req.messages[2].parts[0] == ir.ToolResult(tool_call_id="call_1_0", content=[ir.Text(text="sunny")], name="w")
    assert req.messages[3].parts[0] == ir.ToolResult(tool_call_id="call_1_1", content=[ir.Text(text="down")],
                                                     is_error=True, name="w")


@pytest.mark.parametrize("response,value,is_error", [
    ({"output": "ok"}, "ok", False),
    ({"output": {"t": 21}}, {"t": 21}, False),
    ({"error": "boom"}, "boom", True),
    ({"t": 21, "u": "C"}, {"t": 21, "u": "C"}, False),
])
def test_function_response_shapes(response, value, is_error):
    req = parse(contents=[{"role": "model", "parts": [{"functionCall": {"name": "f", "id": "id1"}}]},
                          {"role": "user", "parts": [{"functionResponse": {"name": "f", "id": "id1", "response": response}}]}])
    res = req.messages[1].parts[0]
    text = res.content[0].text
    assert res.tool_call_id == "id1" and res.name == "f" and res.is_error is is_error
    assert (text if isinstance(value, str) else jsonio.loads(text)) == value


def test_streamed_thought_parts_merge_into_one_signed_reasoning():
    req = parse(contents=[{"role": "model", "parts": [
        {"text": "think ", "thought": True}, {"text": "more", "thought": True},
        {"text": "", "thought": True, "thoughtSignature": "U0lH"}, {"text": "answer"}]}])
    assert req.messages[0].parts == [ir.Reasoning(text="think more", signature="U0lH", provider="gemini"), ir.Text(text="answer")]


def test_count_tokens_estimate():
    body = {"contents": [{"role": "user", "parts": [{"text": "x" * 40}, {"inlineData": {"mimeType": "image/png", "data": "A"}}]}]}
    assert FE.count_tokens_estimate(jsonio.dumps(body)) == 10 + 258
    wrapped = {"generateContentRequest": {"model": "models/g", **body, "systemInstruction": {"parts": [{"text": "y" * 8}]}}}
    assert FE.count_tokens_estimate(jsonio.dumps(wrapped)) == 12 + 258
    assert jsonio.loads(FE.render_token_count(5)) == {"totalTokens": 5}


# -- frontend: rendering ----------------------------------------------------------------------------


def response(*parts, reason="stop", raw=None, usage=None) -> ir.ChatResponse:
    return ir.ChatResponse(id="r1", model="m", created=0, usage=usage,
                           choices=[ir.Choice(parts=list(parts), finish_reason=reason, raw_finish_reason=raw)])


def test_render_chat_full():
    resp = response(ir.Reasoning(text="hmm", signature="U0lH", provider="gemini"), ir.Text(text="Hi"),
                    ir.Reasoning(signature="U0lI", provider="gemini"), ir.ToolCall(id="c1", name="f", arguments='{"a":1}'),
                    usage=ir.Usage(input_tokens=10, output_tokens=30, reasoning_tokens=20, cached_input_tokens=4))
    out = jsonio.loads(FE.render_chat(resp, "my-model"))
    assert out == {
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "hmm", "thought": True, "thoughtSignature": "U0lH"}, {"text": "Hi"},
            {"functionCall": {"name": "f", "args": {"a": 1}, "id": "c1"}, "thoughtSignature": "U0lI"}]},
            "finishReason": "STOP", "index": 0}],
        "modelVersion": "my-model",
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 10, "thoughtsTokenCount": 20,
                          "totalTokenCount": 40, "cachedContentTokenCount": 4},
        "responseId": "r1",
    }


def test_render_chat_foreign_reasoning_has_no_signature_and_bad_args_become_empty():
    resp = response(ir.Reasoning(text="t", signature="anthropic-sig", provider="anthropic"),
                    ir.ToolCall(id="c", name="f", arguments="not json"))
    parts = jsonio.loads(FE.render_chat(resp, "m"))["candidates"][0]["content"]["parts"]
    assert parts == [{"text": "t", "thought": True}, {"functionCall": {"name": "f", "args": {}, "id": "c"}}]


@pytest.mark.parametrize("reason,raw,expected", [
    ("stop", None, "STOP"), ("length", None, "MAX_TOKENS"), ("tool_calls", None, "STOP"),
    ("content_filter", None, "SAFETY"), ("content_filter", "RECITATION", "RECITATION"),
    ("content_filter", "refusal", "SAFETY"), ("pause", "pause_turn", "STOP"), ("error", None, "OTHER"),
    ("length", "MAX_TOKENS", "MAX_TOKENS"),
])
def test_render_finish_rows(reason, raw, expected):
    out = jsonio.loads(FE.render_chat(response(ir.Text(text="x"), reason=reason, raw=raw), "m"))
    assert out["candidates"][0]["finishReason"] == expected


@pytest.mark.parametrize("kind,status,name", [
    ("invalid_request", 400, "INVALID_ARGUMENT"), ("unsupported", 400, "INVALID_ARGUMENT"),
    ("context_length", 400, "INVALID_ARGUMENT"), ("authentication", 401, "UNAUTHENTICATED"),
    ("permission", 403, "PERMISSION_DENIED"), ("not_found", 404, "NOT_FOUND"),
    ("request_too_large", 413, "INVALID_ARGUMENT"), ("rate_limit", 429, "RESOURCE_EXHAUSTED"),
    ("quota_exhausted", 429, "RESOURCE_EXHAUSTED"), ("server", 500, "INTERNAL"),
    ("upstream_unavailable", 502, "UNAVAILABLE"), ("upstream_protocol", 502, "INTERNAL"),
    ("overloaded", 503, "UNAVAILABLE"), ("timeout", 504, "DEADLINE_EXCEEDED"),
])
def test_render_error_rows(kind, status, name):
    code, body = FE.render_error(ProxyError(kind, "msg"))
    assert code == status
    assert jsonio.loads(body) == {"error": {"code": status, "message": "msg", "status": name}}


def test_every_kind_has_an_error_row():
    for kind in KINDS:
        assert FE.render_error(ProxyError(kind, "m"))[0] == KINDS[kind]


def test_embeddings_parse_and_render():
    req = FE.parse_embeddings(jsonio.dumps({"content": {"parts": [{"text": "a"}, {"text": "b"}]}, "outputDimensionality": 8}))
    assert req.input == ["a\nb"] and req.dimensions == 8
    batch = FE.parse_batch_embeddings(jsonio.dumps({"requests": [
        {"model": "models/e", "content": {"parts": [{"text": "x"}]}}, {"model": "models/e", "content": {"parts": [{"text": "y"}]}}]}))
    assert batch.input == ["x", "y"] and batch.dimensions is None
    resp = ir.EmbeddingResponse(model="e", data=[[0.5, 1.0], [0.25, 0.0]])
    assert jsonio.loads(FE.render_embeddings(resp, "e")) == {"embedding": {"values": [0.5, 1.0]}}
    assert jsonio.loads(FE.render_batch_embeddings(resp, "e")) == {"embeddings": [{"values": [0.5, 1.0]}, {"values": [0.25, 0.0]}]}
    with pytest.raises(ProxyError) as e:
        FE.parse_embeddings(jsonio.dumps({"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "A"}}]}}))
    assert e.value.kind == "unsupported"


def test_passthrough_hooks():
    chunk = jsonio.dumps({"candidates": [{"finishReason": "STOP"}],
                          "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "thoughtsTokenCount": 2}})
    assert FE.usage_from_body(chunk) == ir.Usage(input_tokens=3, output_tokens=6, reasoning_tokens=2)
    assert FE.usage_from_event(b'{"candidates": []}') is None
    with pytest.raises(ProxyError) as e:
        FE.usage_from_body(b"{not json")
    assert e.value.kind == "upstream_protocol"
    from adapters.sse import SSEEvent
    assert FE.is_stream_end(SSEEvent(chunk))
    assert FE.is_stream_end(SSEEvent(b'{"error": {"code": 500}}'))
    assert not FE.is_stream_end(SSEEvent(b'{"candidates": [{"content": {"parts": [{"text": "x"}]}}]}'))
    assert FE.prepare_passthrough({}, True) is False and FE.is_usage_only(chunk) is False
