"""Gemini backend without sockets: request building, answers, errors, embeddings, pass-through, every
mapping row on its own."""

from __future__ import annotations

import pytest

from adapters import ir, jsonio
from adapters import gemini_stream
from adapters.base import Target
from adapters.errors import ProxyError
from adapters.gemini_backend import GeminiBackend, GeminiOptions
from adapters.gemini_frontend import GeminiFrontend
from adapters.gemini_response import FINISH_TO_IR

FE = GeminiFrontend()
TARGET = Target(model="gemini-2.5-flash")


def backend(**opts) -> GeminiBackend:
    return GeminiBackend("", opts.pop("api_key", "AIza-test"), opts.pop("headers", {}), GeminiOptions(**opts))


def parse(**body) -> ir.ChatRequest:
    body.setdefault("contents", [{"role": "user", "parts": [{"text": "hi"}]}])
    return FE.parse_chat(jsonio.dumps(body))


def chat(**kw) -> ir.ChatRequest:
    kw.setdefault("messages", [ir.Message(role="user", parts=[ir.Text(text="hi")])])
    return ir.ChatRequest(model="client", **kw)


def built(req: ir.ChatRequest, target: Target = TARGET, **opts) -> dict:
    return jsonio.loads(backend(**opts).chat_request(req, target).body)


@pytest.fixture
def fixed_ids(monkeypatch):
    monkeypatch.setattr(gemini_stream, "synth_id", lambda prefix="call_", length=24: prefix + "X" * length)


# -- backend: requests ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream,url", [
    (False, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"),
    (True, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
])
def test_url_and_auth(stream, url):
    http = backend(headers={"x-team": "a"}).chat_request(chat(stream=stream), TARGET)
    assert http.url == url and http.stream is stream
    assert http.headers == {"content-type": "application/json", "x-team": "a", "x-goog-api-key": "AIza-test"}
    assert "model" not in jsonio.loads(http.body)


def test_api_version_option_and_base_url():
    http = GeminiBackend("http://emu:1/", None, {}, GeminiOptions(api_version="v1")).chat_request(chat(), TARGET)
    assert http.url == "http://emu:1/v1/models/gemini-2.5-flash:generateContent"
    assert "x-goog-api-key" not in http.headers


@pytest.mark.parametrize("field,value,key,expected", [
    ("temperature", 0.2, "temperature", 0.2),
    ("top_p", 0.8, "topP", 0.8),
    ("top_k", 20, "topK", 20),
    ("seed", 3, "seed", 3),
    ("presence_penalty", 0.1, "presencePenalty", 0.1),
    ("frequency_penalty", 0.2, "frequencyPenalty", 0.2),
    ("max_tokens", 99, "maxOutputTokens", 99),
    ("stop", ["1", "2", "3", "4", "5", "6"], "stopSequences", ["1", "2", "3", "4", "5"]),
    ("response_format", ir.ResponseFormat(type="json_object"), "responseMimeType", "application/json"),
    ("reasoning", ir.ReasoningConfig(enabled=False), "thinkingConfig", {"thinkingBudget": 0}),
    ("reasoning", ir.ReasoningConfig(enabled=True, budget_tokens=500), "thinkingConfig",
     {"thinkingBudget": 500, "includeThoughts": True}),
    ("reasoning", ir.ReasoningConfig(effort="low"), "thinkingConfig", {"thinkingBudget": 1024, "includeThoughts": True}),
    ("reasoning", ir.ReasoningConfig(enabled=True), "thinkingConfig", {"thinkingBudget": -1, "includeThoughts": True}),
])
def test_generation_config_build_rows(field, value, key, expected):
    assert built(chat(**{field: value}))["generationConfig"][key] == expected


def test_json_schema_and_default_max_tokens():
    g = built(chat(response_format=ir.ResponseFormat(type="json_schema", schema={"type": "object"})),
              Target(model="g", default_max_tokens=64))["generationConfig"]
    assert g == {"responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}, "maxOutputTokens": 64}


@pytest.mark.parametrize("choice,config", [
    (ir.ToolChoice(mode="auto"), {"mode": "AUTO"}),
    (ir.ToolChoice(mode="none"), {"mode": "NONE"}),
    (ir.ToolChoice(mode="required"), {"mode": "ANY"}),
    (ir.ToolChoice(mode="tool", name="f"), {"mode": "ANY", "allowedFunctionNames": ["f"]}),
])
def test_tool_choice_build_rows(choice, config):
    body = built(chat(tools=[ir.ToolDef(name="f", description="d", parameters={"type": "object"})], tool_choice=choice))
    assert body["tools"] == [{"functionDeclarations": [{"name": "f", "description": "d", "parametersJsonSchema": {"type": "object"}}]}]
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_roles_system_merge_and_tool_results_in_call_order():
    req = chat(system=[ir.Text(text="sys")], messages=[
        ir.Message(role="user", parts=[ir.Text(text="a")]),
        ir.Message(role="user", parts=[ir.Text(text="b")]),
        ir.Message(role="system", parts=[ir.Text(text="late")]),
        ir.Message(role="assistant", parts=[ir.Text(text="calling"), ir.ToolCall(id="c1", name="one", arguments='{"x":1}'),
                                            ir.ToolCall(id="c2", name="two", arguments="")]),
        ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="c2", content=[ir.Text(text="2")])]),
        ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="c1", content=[ir.Text(text="bad")], is_error=True)]),
        ir.Message(role="user", parts=[ir.Text(text="go on")]),
    ])
    body = built(req)
    assert body["systemInstruction"] == {"parts": [{"text": "sys"}, {"text": "late"}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "calling"}, {"functionCall": {"name": "one", "args": {"x": 1}}},
                                    {"functionCall": {"name": "two", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "one", "response": {"error": "bad"}}},
                                   {"functionResponse": {"name": "two", "response": {"output": "2"}}},
                                   {"text": "go on"}]},
    ]


def test_tool_result_without_a_call_is_refused():
    req = chat(messages=[ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="nope", content=[])])])
    with pytest.raises(ProxyError) as e:
        built(req)
    assert e.value.kind == "invalid_request"


@pytest.mark.parametrize("image,part", [
    (ir.Image(media_type="image/jpeg", data="AAA"), {"inlineData": {"mimeType": "image/jpeg", "data": "AAA"}}),
    (ir.Image(url="data:image/webp;base64,QQ=="), {"inlineData": {"mimeType": "image/webp", "data": "QQ=="}}),
    (ir.Image(url="https://x.test/cat.png"), {"fileData": {"mimeType": "image/png", "fileUri": "https://x.test/cat.png"}}),
    (ir.Image(url="gs://b/p.jpg"), {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://b/p.jpg"}}),
])
def test_image_rows(image, part):
    assert built(chat(messages=[ir.Message(role="user", parts=[image])]))["contents"][0]["parts"] == [part]


def test_image_of_unknown_type_is_unsupported():
    with pytest.raises(ProxyError) as e:
        built(chat(messages=[ir.Message(role="user", parts=[ir.Image(url="https://x.test/image")])]))
    assert e.value.kind == "unsupported"


def test_thought_signatures_go_back_only_to_gemini():
    req = chat(messages=[ir.Message(role="user", parts=[ir.Text(text="q")]), ir.Message(role="assistant", parts=[
        ir.Reasoning(text="anthropic thinking", signature="ant", provider="anthropic"),
        ir.Reasoning(text="gem thought", signature="U0lH", provider="gemini"),
        ir.Reasoning(signature="U0lI", provider="gemini"),
        ir.ToolCall(id="c", name="f", arguments="{}")])])
    assert built(req)["contents"][1]["parts"] == [
        {"text": "gem thought", "thought": True, "thoughtSignature": "U0lH"},
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "U0lI"},
    ]


def test_options_safety_extra_and_params():
    req = chat(extra={"cachedContent": "cachedContents/9"}, source_format="gemini")
    body = built(req, Target(model="g", params={"generationConfig": {"responseModalities": ["TEXT"]}}),
                 safety_settings=[{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "OFF"}], thinking_budget=0)
    assert body["safetySettings"] == [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "OFF"}]
    assert body["cachedContent"] == "cachedContents/9"
    assert body["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 0}, "responseModalities": ["TEXT"]}
    assert "cachedContent" not in built(chat(extra={"cachedContent": "x"}, source_format="openai"))


def test_options_reject_unknown_keys():
    import msgspec
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"api_versoin": "v1"}, GeminiOptions)


# -- backend: answers -------------------------------------------------------------------------------


def answer(body: dict) -> ir.ChatResponse:
    return backend().chat_response(jsonio.dumps(body), chat(), TARGET)


def test_chat_response_parts_usage_and_tool_finish(fixed_ids):
    resp = answer({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "plan", "thought": True, "thoughtSignature": "U0lH"}, {"text": "Hello "}, {"text": "there"},
        {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "U0lI"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 5, "thoughtsTokenCount": 9,
                          "toolUsePromptTokenCount": 1, "cachedContentTokenCount": 2, "totalTokenCount": 22},
        "modelVersion": "gemini-2.5-flash-001", "responseId": "abc"})
    assert resp.id == "abc" and resp.model == "gemini-2.5-flash-001"
    c = resp.choices[0]
    assert c.parts == [ir.Reasoning(text="plan", signature="U0lH", provider="gemini"), ir.Text(text="Hello there"),
                       ir.Reasoning(signature="U0lI", provider="gemini"),
                       ir.ToolCall(id="call_" + "X" * 24, name="f", arguments='{"a":1}')]
    assert c.finish_reason == "tool_calls" and c.raw_finish_reason == "STOP"
    assert resp.usage == ir.Usage(input_tokens=8, output_tokens=14, cached_input_tokens=2, reasoning_tokens=9)


@pytest.mark.parametrize("raw", sorted(FINISH_TO_IR) + ["OTHER", "LANGUAGE", "FINISH_REASON_UNSPECIFIED", "NEW_VALUE"])
def test_finish_reason_rows(raw):
    resp = answer({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": raw}]})
    assert resp.choices[0].finish_reason == FINISH_TO_IR.get(raw, "stop")
    assert resp.choices[0].raw_finish_reason == raw


@pytest.mark.parametrize("raw,expected", [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("IMAGE_SAFETY", "content_filter"), ("MODEL_ARMOR", "content_filter"), ("SPII", "content_filter"),
    ("MALFORMED_FUNCTION_CALL", "error"), ("MISSING_THOUGHT_SIGNATURE", "error"), ("IMAGE_OTHER", "stop"),
    ("CONTINUATION", "stop"),
])
def test_finish_table_spot_rows(raw, expected):
    assert answer({"candidates": [{"finishReason": raw}]}).choices[0].finish_reason == expected


def test_blocked_prompt_is_content_filter_without_content():
    resp = answer({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 4}})
    assert resp.choices[0].parts == [] and resp.choices[0].finish_reason == "content_filter"
    assert resp.choices[0].raw_finish_reason == "PROHIBITED_CONTENT" and resp.usage.input_tokens == 4


@pytest.mark.parametrize("body,kind", [
    (b"{broken", "upstream_protocol"),
    (b'{"candidates": [{"content": {"parts": [{"text": "x"}]}}]}', "upstream_protocol"),
    (b'{"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}', "overloaded"),
])
def test_chat_response_failures(body, kind):
    with pytest.raises(ProxyError) as e:
        backend().chat_response(body, chat(), TARGET)
    assert e.value.kind == kind


# -- backend: errors --------------------------------------------------------------------------------


def err_body(code, status, message="m", details=None):
    e = {"code": code, "message": message, "status": status}
    if details:
        e["details"] = details
    return jsonio.dumps({"error": e})


@pytest.mark.parametrize("code,status,message,details,kind", [
    (400, "INVALID_ARGUMENT", "bad field", None, "invalid_request"),
    (400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
     [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}], "authentication"),
    (400, "INVALID_ARGUMENT", "The input token count (1205731) exceeds the maximum number of tokens allowed (1048576).",
     None, "context_length"),
    (400, "FAILED_PRECONDITION", "billing", None, "invalid_request"),
    (401, "UNAUTHENTICATED", "no", None, "authentication"),
    (403, "PERMISSION_DENIED", "no", None, "permission"),
    (404, "NOT_FOUND", "models/x is not found", None, "not_found"),
    (429, "RESOURCE_EXHAUSTED", "quota", None, "rate_limit"),
    (500, "INTERNAL", "oops", None, "server"),
    (503, "UNAVAILABLE", "overloaded", None, "overloaded"),
    (504, "DEADLINE_EXCEEDED", "slow", None, "timeout"),
])
def test_parse_error_rows(code, status, message, details, kind):
    err = backend().parse_error(code, {}, err_body(code, status, message, details))
    assert err.kind == kind and err.message == message and err.upstream_status == code


def test_parse_error_retry_after_header_and_retry_info():
    b = backend()
    assert b.parse_error(429, {"retry-after": "3"}, err_body(429, "RESOURCE_EXHAUSTED")).retry_after == 3.0
    info = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]
    assert b.parse_error(429, {}, err_body(429, "RESOURCE_EXHAUSTED", details=info)).retry_after == 37.0


def test_parse_error_foreign_body_uses_status_only():
    err = backend().parse_error(502, {}, b"<html>bad gateway at https://secret</html>")
    assert err.kind == "upstream_unavailable" and "secret" not in err.message


# -- backend: embeddings and pass-through -----------------------------------------------------------


def test_embeddings_request_and_response():
    http = backend().embeddings_request(ir.EmbeddingRequest(model="e", input=["a", "b"], dimensions=8), Target(model="text-embedding-004"))
    assert http.url.endswith("/v1beta/models/text-embedding-004:batchEmbedContents")
    assert jsonio.loads(http.body) == {"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8}]}
    resp = backend().embeddings_response(b'{"embeddings": [{"values": [1.0, 2.0]}, {"values": [3.0]}]}', ir.EmbeddingRequest(model="e", input=["a"]))
    assert resp.data == [[1.0, 2.0], [3.0]]
    with pytest.raises(ProxyError) as e:
        backend().embeddings_request(ir.EmbeddingRequest(model="e", input=[[1, 2]]), TARGET)
    assert e.value.kind == "unsupported"


@pytest.mark.parametrize("op,stream,suffix", [
    ("generate", False, ":generateContent"),
    ("generate", True, ":streamGenerateContent?alt=sse"),
    ("count_tokens", False, ":countTokens"),
    ("embed", False, ":embedContent"),
])
def test_passthrough_urls_keep_the_body(op, stream, suffix):
    http = backend().passthrough_request(op, b'{"contents": []}', stream, Target(model="gemini-2.5-pro"), {})
    assert http.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro" + suffix
    assert http.body == b'{"contents": []}' and http.stream is stream and http.headers["x-goog-api-key"] == "AIza-test"


def test_passthrough_batch_embed_renames_the_model():
    body = jsonio.dumps({"requests": [{"model": "models/alias", "content": {"parts": [{"text": "a"}]}}]})
    http = backend().passthrough_request("batch_embed", body, False, Target(model="text-embedding-004"), {})
    assert http.url.endswith("/models/text-embedding-004:batchEmbedContents")
    assert jsonio.loads(http.body)["requests"][0]["model"] == "models/text-embedding-004"
    with pytest.raises(ProxyError) as e:
        backend().passthrough_request("chat", b"{}", False, TARGET, {})
    assert e.value.kind == "not_found"


def test_declared_params_are_known():
    from adapters.parity import KNOWN_PARAMS
    assert GeminiBackend.supported_params <= KNOWN_PARAMS and set(GeminiBackend.renamed_params) <= KNOWN_PARAMS


def test_sdk_python_spelling_of_function_declarations():
    """google-genai 3.6.1 sends FunctionDeclaration with Python field names (protobuf JSON accepts both)."""
    req = parse(tools=[{"functionDeclarations": [
        {"name": "a", "parameters_json_schema": {"type": "object", "properties": {"x": {"type": "string"}}}},
        {"name": "b", "parameters": {"type": "OBJECT", "property_ordering": ["l"], "properties": {
            "l": {"type": "ARRAY", "max_items": 2, "items": {"type": "STRING", "max_length": 3, "nullable": True}},
            "u": {"any_of": [{"type": "STRING"}, {"type": "INTEGER"}]}}}},
    ]}])
    assert req.tools[0].parameters == {"type": "object", "properties": {"x": {"type": "string"}}}
    assert req.tools[1].parameters == {"type": "object", "properties": {
        "l": {"type": "array", "maxItems": 2, "items": {"type": ["string", "null"], "maxLength": 3}},
        "u": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}
