"""The Bedrock backend: URLs, every request-building row (messages, images, tools, tool choice,
inferenceConfig, additionalModelRequestFields, reasoning), the Converse answer, stop reasons, usage,
every error row, and embeddings through InvokeModel.  No sockets."""

from __future__ import annotations

import sys

import pytest

from adapters import bedrock_embed, ir, jsonio
from adapters.base import Target
from adapters.bedrock_backend import BedrockBackend, BedrockOptions
from adapters.bedrock_response import EXCEPTION_KINDS, STOP_TO_IR
from adapters.errors import ProxyError

CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
LLAMA = "meta.llama3-1-70b-instruct-v1:0"
PNG = "iVBORw0KGgo="


def backend(base_url: str = "", api_key: str | None = None, **opts) -> BedrockBackend:
    return BedrockBackend(base_url, api_key, {}, BedrockOptions(region=opts.pop("region", "us-east-1"), **opts))


def user(*parts) -> ir.Message:
    return ir.Message(role="user", parts=[ir.Text(text=p) if isinstance(p, str) else p for p in parts])


def body(req: ir.ChatRequest, model: str = CLAUDE, **target) -> dict:
    return jsonio.loads(backend().chat_request(req, Target(model=model, **target)).body)


def chat(*messages, **fields) -> ir.ChatRequest:
    return ir.ChatRequest(model="m", messages=list(messages), **fields)


# -- URLs and auth --------------------------------------------------------------------------------

def test_url_encodes_the_model_id_and_uses_the_regional_host():
    http = backend(region="eu-west-3").chat_request(chat(user("hi")), Target(model=CLAUDE))
    assert http.url == "https://bedrock-runtime.eu-west-3.amazonaws.com/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"
    assert http.headers["Content-Type"] == "application/json" and not http.stream
    arn = "arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"
    stream = backend("http://127.0.0.1:9000/").chat_request(chat(user("hi"), stream=True), Target(model=arn))
    assert stream.url == ("http://127.0.0.1:9000/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile"
                          "%2Fus.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream") and stream.stream


def test_sigv4_unless_an_api_key_is_given():
    assert backend().auth_scheme == "aws-sigv4" and "Authorization" not in str(backend()._headers)
    keyed = backend(api_key="ABSKkey")
    assert keyed.auth_scheme is None and keyed._headers["authorization"] == "Bearer ABSKkey"
    assert BedrockBackend.auth_scheme == "aws-sigv4"  # the instance override does not leak


def test_region_must_look_like_one():
    with pytest.raises(ValueError, match="not an AWS region"):
        backend(region="us-east-1.evil.com/")


def test_missing_extra_is_a_clear_config_error(monkeypatch):
    from proxy.config import ConfigError, load_config_text

    for mod in ("adapters.bedrock_backend", "adapters.bedrock_stream", "adapters.eventstream"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    for mod in ("botocore", "botocore.eventstream"):
        monkeypatch.setitem(sys.modules, mod, None)  # as if botocore were not installed
    with pytest.raises(ConfigError, match=r"backends\.b\.provider: provider bedrock needs: pip install -e '\.\[bedrock\]'"):
        load_config_text("backends: {b: {provider: bedrock, region: us-east-1}}\nmodels: []\n", env={})


# -- messages -------------------------------------------------------------------------------------

def test_system_lifted_turns_merged_and_blank_text_dropped():
    req = chat(ir.Message(role="system", parts=[ir.Text(text="Be terse.")]), user("a"), user("", "b"),
               ir.Message(role="assistant", parts=[ir.Text(text="")]), system=[ir.Text(text="First."), ir.Text(text="")])
    b = body(req)
    assert b["system"] == [{"text": "First."}, {"text": "Be terse."}]
    assert b["messages"] == [{"role": "user", "content": [{"text": "a"}, {"text": "b"}]}]


def test_tool_round_trip_blocks():
    call = ir.ToolCall(id="call_1/ü", name="get_weather", arguments='{"city": "Paris"}')
    req = chat(user("weather?"), ir.Message(role="assistant", parts=[ir.Text(text="Looking."), call]),
               ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="call_1/ü", content=[ir.Text(text="sunny")])]),
               user("thanks"), tools=[ir.ToolDef(name="get_weather", parameters={"type": "object"})])
    msgs = body(req)["messages"]
    assert msgs[1] == {"role": "assistant", "content": [
        {"text": "Looking."}, {"toolUse": {"toolUseId": "call_1__", "name": "get_weather", "input": {"city": "Paris"}}}]}
    assert msgs[2] == {"role": "user", "content": [
        {"toolResult": {"toolUseId": "call_1__", "content": [{"text": "sunny"}], "status": "success"}}, {"text": "thanks"}]}


def test_tool_result_error_status_and_empty_content():
    b = body(chat(user("x"), ir.Message(role="assistant", parts=[ir.ToolCall(id="t", name="f", arguments="")]),
                  ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="t", is_error=True)])))
    assert b["messages"][2]["content"][0]["toolResult"] == {"toolUseId": "t", "content": [{"text": ""}], "status": "error"}
    assert b["messages"][1]["content"][0]["toolUse"]["input"] == {}


def test_bad_tool_arguments_are_a_400():
    with pytest.raises(ProxyError) as e:
        body(chat(user("x"), ir.Message(role="assistant", parts=[ir.ToolCall(id="t", name="f", arguments="[1]")])))
    assert e.value.kind == "invalid_request"


@pytest.mark.parametrize("image,block", [
    (ir.Image(media_type="image/png", data=PNG), {"format": "png", "source": {"bytes": PNG}}),
    (ir.Image(url=f"data:image/jpeg;base64,{PNG}"), {"format": "jpeg", "source": {"bytes": PNG}}),
    (ir.Image(url="s3://bucket/cat.webp"), {"format": "webp", "source": {"s3Location": {"uri": "s3://bucket/cat.webp"}}}),
])
def test_image_rows(image, block):
    assert body(chat(user("see", image)))["messages"][0]["content"][1] == {"image": block}


@pytest.mark.parametrize("image,kind", [
    (ir.Image(url="https://example.com/cat.png"), "unsupported"),
    (ir.Image(media_type="image/bmp", data=PNG), "invalid_request"),
    (ir.Image(url="data:image/png,notbase64"), "invalid_request"),
    (ir.Image(url="s3://bucket/cat"), "invalid_request"),
])
def test_image_refusals(image, kind):
    with pytest.raises(ProxyError) as e:
        body(chat(user(image)))
    assert e.value.kind == kind


def test_signed_claude_reasoning_goes_back_and_others_are_dropped():
    assistant = ir.Message(role="assistant", parts=[
        ir.Reasoning(text="hm", signature="SIG", provider="anthropic"), ir.Reasoning(redacted_data="QUJD", provider="anthropic"),
        ir.Reasoning(text="gemini's", signature="G", provider="gemini"), ir.Reasoning(text="unsigned"), ir.Text(text="ok")])
    req = chat(user("a"), assistant, user("b"))
    assert body(req)["messages"][1]["content"] == [
        {"reasoningContent": {"reasoningText": {"text": "hm", "signature": "SIG"}}},
        {"reasoningContent": {"redactedContent": "QUJD"}}, {"text": "ok"}]
    assert body(req, model=LLAMA)["messages"][1]["content"] == [{"text": "ok"}]


def test_raw_prompt_is_unsupported():
    with pytest.raises(ProxyError) as e:
        body(ir.ChatRequest(model="m", prompt="once upon"))
    assert e.value.kind == "unsupported"


# -- parameters -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fields,inference", [
    ({"max_tokens": 100}, {"maxTokens": 100}),
    ({"temperature": 0.2}, {"temperature": 0.2}),
    ({"top_p": 0.9}, {"topP": 0.9}),
    ({"stop": ["END", "STOP"]}, {"stopSequences": ["END", "STOP"]}),
])
def test_inference_config_rows(fields, inference):
    assert body(chat(user("x"), **fields), model=LLAMA)["inferenceConfig"] == inference


def test_default_max_tokens_and_top_k_and_params():
    b = body(chat(user("x"), top_k=40), model=LLAMA, default_max_tokens=256, params={"additionalModelRequestFields": {"a": 1}})
    assert b["inferenceConfig"] == {"maxTokens": 256}
    assert b["additionalModelRequestFields"] == {"top_k": 40, "a": 1}
    assert "additionalModelResponseFieldPaths" not in b


def test_claude_asks_which_stop_sequence_matched():
    assert body(chat(user("x"), stop=["END"]))["additionalModelResponseFieldPaths"] == ["/stop_sequence"]


def test_claude_thinking_from_effort_and_budget():
    b = body(chat(user("x"), reasoning=ir.ReasoningConfig(effort="low")))
    assert b["additionalModelRequestFields"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert b["inferenceConfig"]["maxTokens"] == 4096 + 1024  # grown so thinking does not eat the answer
    b = body(chat(user("x"), max_tokens=3000, reasoning=ir.ReasoningConfig(budget_tokens=2000)))
    assert b["additionalModelRequestFields"]["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    assert b["inferenceConfig"]["maxTokens"] == 3000
    assert "additionalModelRequestFields" not in body(chat(user("x"), reasoning=ir.ReasoningConfig(effort="high")), model=LLAMA)


WEATHER = ir.ToolDef(name="get_weather", description="Weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})


@pytest.mark.parametrize("choice,expected", [
    (None, None),
    (ir.ToolChoice(mode="auto"), {"auto": {}}),
    (ir.ToolChoice(mode="required"), {"any": {}}),
    (ir.ToolChoice(mode="tool", name="get_weather"), {"tool": {"name": "get_weather"}}),
])
def test_tool_choice_rows(choice, expected):
    config = body(chat(user("x"), tools=[WEATHER], tool_choice=choice))["toolConfig"]
    assert config["tools"] == [{"toolSpec": {"name": "get_weather", "description": "Weather",
                                             "inputSchema": {"json": WEATHER.parameters}}}]
    assert config.get("toolChoice") == expected


def test_tool_choice_none():
    assert "toolConfig" not in body(chat(user("x"), tools=[WEATHER], tool_choice=ir.ToolChoice(mode="none")))
    history = [user("x"), ir.Message(role="assistant", parts=[ir.ToolCall(id="t", name="get_weather", arguments="{}")]),
               ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="t", content=[ir.Text(text="r")])])]
    config = body(chat(*history, tools=[WEATHER], tool_choice=ir.ToolChoice(mode="none")))["toolConfig"]
    assert [t["toolSpec"]["name"] for t in config["tools"]] == ["get_weather"] and "toolChoice" not in config


def test_tool_history_without_tools_gets_minimal_specs():
    history = [user("x"), ir.Message(role="assistant", parts=[ir.ToolCall(id="t", name="lookup", arguments="{}")]),
               ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="t", content=[ir.Text(text="r")])])]
    assert body(chat(*history))["toolConfig"] == {"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {
        "json": {"type": "object", "properties": {}}}}}]}


# -- answers --------------------------------------------------------------------------------------

def answer(content, stop="end_turn", usage=None, **extra) -> ir.ChatResponse:
    raw = {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
           "usage": usage or {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7}, "metrics": {"latencyMs": 1}, **extra}
    return backend().chat_response(jsonio.dumps(raw), chat(user("x")), Target(model=CLAUDE))


def test_converse_answer_parts_and_usage():
    r = answer([{"reasoningContent": {"reasoningText": {"text": "hm", "signature": "S"}}}, {"text": "Hi"},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "f", "input": {"a": 1}}}, {"citationsContent": {}}],
               stop="tool_use", usage={"inputTokens": 5, "outputTokens": 2, "cacheReadInputTokens": 10, "cacheWriteInputTokens": 4})
    c = r.choices[0]
    assert c.parts == [ir.Reasoning(text="hm", signature="S", provider="anthropic"), ir.Text(text="Hi"),
                       ir.ToolCall(id="tooluse_1", name="f", arguments='{"a":1}')]
    assert c.finish_reason == "tool_calls" and c.raw_finish_reason == "tool_use"
    assert r.usage == ir.Usage(input_tokens=19, output_tokens=2, cached_input_tokens=10, cache_write_tokens=4)


@pytest.mark.parametrize("raw,reason", sorted(STOP_TO_IR.items()))
def test_stop_reason_rows(raw, reason):
    c = answer([{"text": "x"}], stop=raw).choices[0]
    assert c.finish_reason == ("stop" if reason == "tool_calls" else reason) and c.raw_finish_reason == raw


def test_matched_stop_sequence():
    c = answer([{"text": "x"}], stop="stop_sequence", additionalModelResponseFields={"stop_sequence": "END"}).choices[0]
    assert c.stop_sequence == "END" and c.finish_reason == "stop"


def test_unparseable_answer():
    with pytest.raises(ProxyError) as e:
        backend().chat_response(b'{"output": ', chat(user("x")), Target(model=CLAUDE))
    assert e.value.kind == "upstream_protocol"


# -- errors ---------------------------------------------------------------------------------------

STATUS_OF = {"ValidationException": 400, "AccessDeniedException": 403, "ResourceNotFoundException": 404,
             "ThrottlingException": 429, "ServiceQuotaExceededException": 400, "ModelNotReadyException": 429,
             "ServiceUnavailableException": 503, "ModelTimeoutException": 408, "ModelErrorException": 424,
             "ModelStreamErrorException": 424, "InternalServerException": 500}


@pytest.mark.parametrize("name,kind", sorted(EXCEPTION_KINDS.items()))
def test_error_rows_by_header(name, kind):
    status = STATUS_OF.get(name, 403)
    err = backend().parse_error(status, {"x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"},
                                b'{"message": "words"}')
    assert (err.kind, err.message, err.code, err.upstream_status) == (kind, "words", name, status)


def test_expected_client_statuses():
    b = backend()
    assert b.parse_error(429, {"x-amzn-ErrorType": "ThrottlingException"}, b"{}").status == 429
    assert b.parse_error(400, {"x-amzn-ErrorType": "ServiceQuotaExceededException"}, b"{}").status == 429
    assert b.parse_error(503, {"x-amzn-ErrorType": "ServiceUnavailableException"}, b"{}").status == 503
    assert b.parse_error(403, {"x-amzn-ErrorType": "AccessDeniedException"}, b"{}").status == 403


def test_model_not_ready_is_retryable_with_a_short_retry_after():
    err = backend().parse_error(429, {"x-amzn-ErrorType": "ModelNotReadyException"}, b'{"message": "loading"}')
    assert err.retryable and err.status == 429 and 0 < err.retry_after <= 5


@pytest.mark.parametrize("message", [
    "Input is too long for requested model.",
    "The model returned the following errors: prompt is too long: 215000 tokens > 200000 maximum",
])
def test_both_context_length_wordings(message):
    err = backend().parse_error(400, {"x-amzn-ErrorType": "ValidationException"}, jsonio.dumps({"message": message}))
    assert err.kind == "context_length" and err.code == "context_length_exceeded"


def test_error_name_from_the_body_and_capitalised_message():
    err = backend().parse_error(400, {}, b'{"__type": "com.amazon.bedrock#ValidationException", "Message": "bad"}')
    assert (err.kind, err.message) == ("invalid_request", "bad")


def test_error_without_a_name_or_json_falls_back_to_the_status():
    err = backend().parse_error(502, {}, b"<html>gateway</html>")
    assert err.kind == "upstream_unavailable" and "<html>" not in err.message


def test_unknown_exception_uses_the_status():
    err = backend().parse_error(409, {"x-amzn-ErrorType": "ConflictException"}, b'{"message": "m"}')
    assert err.kind == "invalid_request" and err.code == "ConflictException"


# -- embeddings -----------------------------------------------------------------------------------

def embed_requests(model: str, texts, **fields):
    return backend().embeddings_request(ir.EmbeddingRequest(model="e", input=texts, **fields), Target(model=model))


def test_titan_one_call_per_input():
    reqs = embed_requests("amazon.titan-embed-text-v2:0", ["a", "b", "c"], dimensions=256)
    assert [r.url for r in reqs] == ["https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.titan-embed-text-v2%3A0/invoke"] * 3
    assert [jsonio.loads(r.body) for r in reqs] == [{"inputText": t, "dimensions": 256} for t in "abc"]


def test_cohere_batches_of_96_with_input_type():
    reqs = embed_requests("cohere.embed-english-v3", [str(i) for i in range(100)])
    bodies = [jsonio.loads(r.body) for r in reqs]
    assert [len(b["texts"]) for b in bodies] == [96, 4] and {b["input_type"] for b in bodies} == {"search_document"}
    configured = BedrockBackend("", None, {}, BedrockOptions(region="us-east-1", embed_input_type="search_query"))
    per_model = configured.embeddings_request(ir.EmbeddingRequest(model="e", input=["q"]),
                                              Target(model="cohere.embed-english-v3", params={"input_type": "classification", "truncate": "END"}))
    assert jsonio.loads(per_model[0].body) == {"texts": ["q"], "input_type": "classification", "truncate": "END"}


@pytest.mark.parametrize("model,fields,param", [
    ("cohere.embed-english-v3", {"dimensions": 8}, "dimensions"),
    ("amazon.titan-embed-text-v2:0", {"input": [[1, 2]]}, "input"),
    ("anthropic.claude-3-haiku", {}, "model"),
])
def test_embedding_refusals(model, fields, param):
    fields = {"input": ["x"], **fields}
    with pytest.raises(ProxyError) as e:
        backend().embeddings_request(ir.EmbeddingRequest(model="e", **fields), Target(model=model))
    assert e.value.kind == "unsupported" and e.value.param == param


def test_embedding_answers():
    b = backend()
    req = ir.EmbeddingRequest(model="e", input=["x"])
    titan = b.embeddings_response(b'{"embedding": [0.1, 0.2], "inputTextTokenCount": 3}', req)
    assert titan.data == [[0.1, 0.2]] and titan.usage == ir.Usage(input_tokens=3)
    cohere = b.embeddings_response(b'{"id": "i", "embeddings": [[0.1], [0.2]], "response_type": "embeddings_floats"}', req)
    assert cohere.data == [[0.1], [0.2]] and cohere.usage is None
    by_type = b.embeddings_response(b'{"embeddings": {"float": [[0.3]]}}', req)
    assert by_type.data == [[0.3]]
    with pytest.raises(ProxyError):
        b.embeddings_response(b'{"embeddings": {"int8": [[1]]}}', req)
    assert b.prompt_tokens_from_headers({bedrock_embed.TOKEN_COUNT_HEADER: "12"}) == 12
    assert b.prompt_tokens_from_headers({bedrock_embed.TOKEN_COUNT_HEADER: "x"}) is None


@pytest.mark.parametrize("fmt,expected", [
    (ir.ResponseFormat(type="text"), None),
    (ir.ResponseFormat(type="json_object"), {"schema": '{"type":"object"}', "name": "response"}),
    (ir.ResponseFormat(type="json_schema", name="city", description="A city", schema={"type": "object", "properties": {"n": {"type": "string"}}}),
     {"schema": '{"type":"object","properties":{"n":{"type":"string"}}}', "name": "city", "description": "A city"}),
])
def test_response_format_rows(fmt, expected):
    b = body(chat(user("x"), response_format=fmt))
    if expected is None:
        assert "outputConfig" not in b
    else:
        assert b["outputConfig"] == {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": expected}}}


def test_model_params_add_top_level_converse_fields():
    guardrail = {"guardrailIdentifier": "gr-1", "guardrailVersion": "1"}
    b = body(chat(user("x")), params={"guardrailConfig": guardrail, "performanceConfig": {"latency": "optimized"}})
    assert b["guardrailConfig"] == guardrail and b["performanceConfig"] == {"latency": "optimized"}
