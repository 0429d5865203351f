"""OpenAI backend family: request building, presets, responses, errors, embeddings, pass-through."""

import base64
import struct

import orjson
import pytest

from adapters import ir
from adapters.base import Target
from adapters.errors import ProxyError
from adapters.openai_backend import PRESET_PROVIDERS, PRESETS, OpenAIBackend
from adapters.openai_build import mistral_tool_id

T = Target(model="up-model")


def backend(preset=None, key="sk", **opts):
    return OpenAIBackend("http://h/v1/", key, {"x-extra": "1"}, OpenAIBackend.Options(preset=preset, **opts))


def req(**kw):
    base = dict(model="client", messages=[ir.Message("user", [ir.Text("hi")])])
    return ir.ChatRequest(**{**base, **kw})


def body_of(http):
    return orjson.loads(http.body)


def test_chat_request_basics():
    b = backend(organization="org", project="prj")
    http = b.chat_request(req(system=[ir.Text("a"), ir.Text("b")], max_tokens=5, temperature=0.2, stop=["x"], n=2,
                              seed=1, stream=True), Target(model="up", params={"temperature": 0.9}))
    assert http.url == "http://h/v1/chat/completions" and http.stream
    assert http.headers == {"content-type": "application/json", "authorization": "Bearer sk",
                            "openai-organization": "org", "openai-project": "prj", "x-extra": "1"}
    body = body_of(http)
    assert body["model"] == "up" and body["messages"][0] == {"role": "system", "content": "a\n\nb"}
    assert body["max_completion_tokens"] == 5 and body["stop"] == ["x"] and body["n"] == 2
    assert body["temperature"] == 0.9  # target.params win
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_no_key_no_auth_header():
    assert "authorization" not in backend(key=None).chat_request(req(), T).headers


def test_messages_rendering():
    r = req(messages=[
        ir.Message("user", [ir.Text("look"), ir.Image(media_type="image/png", data="QUJD", detail="low"),
                            ir.Image(url="https://i")]),
        ir.Message("assistant", [ir.Reasoning(text="hidden"), ir.Text("ok"), ir.ToolCall("c1", "f", "{\"a\":1}")]),
        ir.Message("tool", [ir.ToolResult("c1", [ir.Text("r1"), ir.Image(url="u")], is_error=True)]),
        ir.Message("user", [ir.ToolResult("c2", [ir.Text("r2")]), ir.Text("next")]),
        ir.Message("system", [ir.Text("mid")]),
    ])
    msgs = body_of(backend().chat_request(r, T))["messages"]
    assert msgs[0]["content"] == [{"type": "text", "text": "look"},
                                  {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD", "detail": "low"}},
                                  {"type": "image_url", "image_url": {"url": "https://i"}}]
    assert msgs[1] == {"role": "assistant", "content": "ok", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}
    assert msgs[2] == {"role": "tool", "tool_call_id": "c1", "content": "r1"}
    assert msgs[3] == {"role": "tool", "tool_call_id": "c2", "content": "r2"}
    assert msgs[4] == {"role": "user", "content": "next"}
    assert msgs[5] == {"role": "system", "content": "mid"}


@pytest.mark.parametrize("choice,expected", [
    (ir.ToolChoice("auto"), "auto"), (ir.ToolChoice("none"), "none"), (ir.ToolChoice("required"), "required"),
    (ir.ToolChoice("tool", "f"), {"type": "function", "function": {"name": "f"}}),
])
def test_tool_choice_rendering(choice, expected):
    body = body_of(backend().chat_request(req(tools=[ir.ToolDef("f", strict=True)], tool_choice=choice), T))
    assert body["tool_choice"] == expected
    assert body["tools"] == [{"type": "function", "function": {"name": "f", "strict": True,
                                                               "parameters": {"type": "object", "properties": {}}}}]


@pytest.mark.parametrize("rf,style,expected", [
    (ir.ResponseFormat("json_object"), None, {"type": "json_object"}),
    (ir.ResponseFormat("json_schema", name="n", schema={"type": "object"}, strict=True), None,
     {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}, "strict": True}}),
    (ir.ResponseFormat("json_schema", name="n", schema={"type": "object"}), "tgi",
     {"type": "json", "value": {"type": "object"}}),
    (ir.ResponseFormat("json_object"), "tgi", {"type": "json", "value": {"type": "object"}}),
])
def test_response_format_rendering(rf, style, expected):
    assert body_of(backend(style).chat_request(req(response_format=rf), T))["response_format"] == expected


@pytest.mark.parametrize("cfg,expected", [
    (ir.ReasoningConfig(effort="high"), "high"), (ir.ReasoningConfig(budget_tokens=1000), "low"),
    (ir.ReasoningConfig(budget_tokens=4000), "medium"), (ir.ReasoningConfig(budget_tokens=20000), "high"),
    (ir.ReasoningConfig(enabled=True), None),
])
def test_reasoning_effort(cfg, expected):
    assert body_of(backend().chat_request(req(reasoning=cfg), T)).get("reasoning_effort") == expected


def test_extra_merged_only_from_openai_clients():
    r = req(extra={"store": True, "model": "sneaky"})
    assert body_of(backend().chat_request(r, T))["store"] is True
    assert body_of(backend().chat_request(r, T))["model"] == "up-model"
    r.source_format = "anthropic"
    assert "store" not in body_of(backend().chat_request(r, T))


def test_completion_request():
    http = backend("vllm").chat_request(req(messages=[], prompt="once", max_tokens=16, logprobs=True, top_logprobs=2,
                                            top_k=5), T)
    body = body_of(http)
    assert http.url.endswith("/completions") and not http.url.endswith("chat/completions")
    assert body == {"model": "up-model", "prompt": "once", "max_tokens": 16, "logprobs": 2, "top_k": 5}


def test_presets_table_rows():
    assert set(PRESETS) == {"vllm", "sglang", "together", "groq", "fireworks", "deepseek", "mistral", "openrouter",
                            "lmstudio", "llamacpp", "tgi"}
    assert set(PRESET_PROVIDERS) <= set(PRESETS)
    assert "n" not in PRESETS["groq"].supported
    assert {"top_k", "min_p", "repetition_penalty"} <= PRESETS["vllm"].supported
    assert backend("vllm").supported_params == PRESETS["vllm"].supported


@pytest.mark.parametrize(("preset", "waiting"), [
    ("vllm", "vllm:num_requests_waiting"), ("sglang", "sglang:num_queue_reqs"), ("tgi", "tgi_queue_size"),
    ("llamacpp", "llamacpp:requests_deferred"), ("together", None), (None, None),
])
def test_model_server_presets_know_their_load_gauges(preset, waiting):
    names = backend(preset).load_metrics
    assert (names.waiting[0] if names else None) == waiting


def test_preset_renames():
    body = body_of(backend("mistral").chat_request(req(seed=3, tools=[ir.ToolDef("f")],
                                                       tool_choice=ir.ToolChoice("required")), T))
    assert body["random_seed"] == 3 and "seed" not in body and body["tool_choice"] == "any"
    body = body_of(backend("llamacpp").chat_request(req(repetition_penalty=1.2, max_tokens=3), T))
    assert body["repeat_penalty"] == 1.2 and body["max_tokens"] == 3


def test_mistral_ids_rewritten_consistently():
    r = req(messages=[ir.Message("assistant", [ir.ToolCall("call_long_openai_id", "f", "{}")]),
                      ir.Message("tool", [ir.ToolResult("call_long_openai_id", [ir.Text("x")])])])
    msgs = body_of(backend("mistral").chat_request(r, T))["messages"]
    new = msgs[0]["tool_calls"][0]["id"]
    assert len(new) == 9 and new.isalnum() and msgs[1]["tool_call_id"] == new
    assert mistral_tool_id("call_long_openai_id") == new and mistral_tool_id("abcDEF123") == "abcDEF123"
    pt = backend("mistral").passthrough_request("chat", orjson.dumps({"model": "m", "messages": [
        {"role": "tool", "tool_call_id": "call_long_openai_id", "content": "x"}]}), False, T, {})
    assert orjson.loads(pt.body)["messages"][0]["tool_call_id"] == new


@pytest.mark.parametrize(("preset", "sends_option"), [(None, True), ("vllm", True), ("mistral", False)])
def test_stream_options_only_where_accepted(preset, sends_option):
    """Mistral refuses `stream_options` (422 extra_forbidden) and puts usage in its last chunk anyway."""
    body = body_of(backend(preset).chat_request(req(stream=True), T))
    assert ("stream_options" in body) == sends_option
    sent = b'{"model":"m","stream":true,"stream_options":{"include_usage":true},"metadata":{"stream_options":1}}'
    pt = orjson.loads(backend(preset).passthrough_request("chat", sent, True, T, {}).body)
    assert ("stream_options" in pt) == sends_option and pt["metadata"] == {"stream_options": 1}


def test_vllm_guided_fields_moved():
    r = req(extra={"guided_json": {"type": "object"}, "guided_decoding_backend": "xgrammar"})
    body = body_of(backend("vllm").chat_request(r, T))
    assert body["structured_outputs"] == {"json": {"type": "object"}}
    assert not any(k.startswith("guided_") for k in body)
    pt = backend("vllm").passthrough_request("chat", b'{"model":"m","guided_regex":"a+","messages":[]}', True, T, {})
    assert orjson.loads(pt.body) == {"model": "m", "messages": [], "structured_outputs": {"regex": "a+"}}
    assert pt.stream and pt.url == "http://h/v1/chat/completions"


def test_passthrough_keeps_bytes():
    raw = b'{"model":"m",  "messages":[], "weird":1}'
    pt = backend().passthrough_request("completions", raw, False, T, {})
    assert pt.body == raw and pt.url == "http://h/v1/completions"
    with pytest.raises(ProxyError):
        backend().passthrough_request("messages", raw, False, T, {})


def test_for_preset_alias():
    cls = OpenAIBackend.for_preset("together")
    assert cls.provider == "together" and cls.supported_params == PRESETS["together"].supported
    b = cls("http://t/v1", "k", {}, cls.Options())
    assert b.preset is PRESETS["together"]
    with pytest.raises(ValueError):
        cls("http://t/v1", "k", {}, cls.Options(preset="groq"))
    with pytest.raises(ValueError):
        backend("nonexistent")


def test_chat_response():
    body = orjson.dumps({"id": "x", "created": 5, "model": "up", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi", "reasoning": "r",
                                                          "tool_calls": [{"id": "c", "type": "function",
                                                                          "function": {"name": "f", "arguments": "{}"}}]}},
        {"index": 1, "finish_reason": "length", "message": {"content": "second"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                  "prompt_tokens_details": {"cached_tokens": 1}}})
    resp = backend("vllm").chat_response(body, req(), T)
    assert resp.choices[0].parts == [ir.Reasoning(text="r"), ir.Text("hi"), ir.ToolCall("c", "f", "{}")]
    assert resp.choices[0].finish_reason == "tool_calls" and resp.choices[0].raw_finish_reason == "stop"
    assert resp.choices[1].finish_reason == "length"
    assert resp.usage == ir.Usage(3, 2, cached_input_tokens=1)


@pytest.mark.parametrize("body", [b"nope", b'{"choices": []}', b'{"error": {"message": "x", "code": 500}}'])
def test_chat_response_failures(body):
    with pytest.raises(ProxyError):
        backend().chat_response(body, req(), T)


@pytest.mark.parametrize("status,body,kind,message", [
    (400, {"error": {"message": "This model's maximum context length is 4096 tokens", "type": "invalid_request_error",
                     "param": None, "code": None}}, "context_length", "This model's maximum context length is 4096 tokens"),
    (400, {"object": "error", "message": "flat vllm", "type": "BadRequestError", "code": 400}, "invalid_request", "flat vllm"),
    (422, {"error": "Input validation error", "error_type": "validation"}, "invalid_request", "Input validation error"),
    (429, {"error": "Model is overloaded", "error_type": "overloaded"}, "overloaded", "Model is overloaded"),
    (429, {"error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}},
     "quota_exhausted", "quota"),
    (429, {"error": {"message": "slow", "type": "requests", "code": "rate_limit_exceeded"}}, "rate_limit", "slow"),
    (400, {"error": {"code": 400, "message": "the request exceeds the available context size", "type":
                     "exceed_context_size_error"}}, "context_length", "the request exceeds the available context size"),
    (404, {"error": {"code": "DeploymentNotFound", "message": "no deployment"}}, "not_found", "no deployment"),
    (401, {"error": {"message": "bad key", "code": "invalid_api_key"}}, "authentication", "bad key"),
    (500, {"detail": "fastapi says"}, "server", "fastapi says"),
    (503, "not json at all with http://secret", "overloaded", "upstream returned HTTP 503"),
])
def test_parse_error(status, body, kind, message):
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    err = backend().parse_error(status, {"retry-after": "3"}, raw)
    assert (err.kind, err.message, err.retry_after, err.upstream_status) == (kind, message, 3.0, status)


def test_embeddings():
    b = backend()
    http = b.embeddings_request(ir.EmbeddingRequest(model="c", input=["a"], dimensions=4, encoding_format="base64"), T)
    assert http.url == "http://h/v1/embeddings"
    assert body_of(http) == {"model": "up-model", "input": ["a"], "dimensions": 4}
    packed = base64.b64encode(struct.pack("<2f", 0.5, 2.0)).decode()
    resp = b.embeddings_response(orjson.dumps({"data": [{"index": 1, "embedding": packed},
                                                        {"index": 0, "embedding": [1.0, 0.0]}],
                                               "usage": {"prompt_tokens": 2, "total_tokens": 2}}),
                                 ir.EmbeddingRequest(model="c", input=["a", "b"]))
    assert resp.data == [[1.0, 0.0], [0.5, 2.0]] and resp.usage.input_tokens == 2
