"""Vertex AI backend: URLs per publisher, location (incl. global) and base_url; the Gemini and Claude
bodies; answers through the reused decoders; errors by shape; parameters per model.  No sockets."""

from __future__ import annotations

import msgspec
import pytest

from adapters import ir, jsonio
from adapters.anthropic_backend import AnthropicBackend
from adapters.base import Target
from adapters.errors import ProxyError
from adapters.gemini_backend import GeminiBackend
from adapters.vertex_backend import ANTHROPIC_VERSION, VertexBackend, VertexModelOptions, VertexOptions

REQ = ir.ChatRequest(model="m", messages=[ir.Message(role="user", parts=[ir.Text(text="hi")])], max_tokens=50)


def backend(base_url: str = "", **options) -> VertexBackend:
    opts = msgspec.convert({"project": "my-project", "location": "us-east5", **options}, VertexOptions)
    return VertexBackend(base_url, None, {"x-extra": "1"}, opts)


def target(model: str, **model_options) -> Target:
    return Target(model=model, options=VertexModelOptions(**model_options) if model_options else None)


@pytest.mark.parametrize("model,options,stream,url", [
    ("gemini-2.0-flash", {}, False,
     "https://us-east5-aiplatform.googleapis.com/v1/projects/my-project/locations/us-east5/publishers/google/models/gemini-2.0-flash:generateContent"),
    ("gemini-2.0-flash", {"location": "global"}, True,
     "https://aiplatform.googleapis.com/v1/projects/my-project/locations/global/publishers/google/models/gemini-2.0-flash:streamGenerateContent?alt=sse"),
    ("claude-sonnet-4-5@20250929", {"location": "eu"}, False,
     "https://aiplatform.eu.rep.googleapis.com/v1/projects/my-project/locations/eu/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"),
    ("claude-3-5-sonnet-v2@20241022", {}, False,
     "https://us-east5-aiplatform.googleapis.com/v1/projects/my-project/locations/us-east5/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:rawPredict"),
    ("claude-3-5-sonnet-v2@20241022", {"location": "europe-west1"}, True,
     "https://europe-west1-aiplatform.googleapis.com/v1/projects/my-project/locations/europe-west1/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:streamRawPredict"),
    ("my-tuned-claude", {"publisher": "anthropic"}, False,
     "https://us-east5-aiplatform.googleapis.com/v1/projects/my-project/locations/us-east5/publishers/anthropic/models/my-tuned-claude:rawPredict"),
    ("claude-lookalike", {"publisher": "google"}, False,
     "https://us-east5-aiplatform.googleapis.com/v1/projects/my-project/locations/us-east5/publishers/google/models/claude-lookalike:generateContent"),
])
def test_urls(model, options, stream, url):
    http = backend().chat_request(msgspec.structs.replace(REQ, stream=stream), target(model, **options))
    assert http.url == url and http.stream is stream
    assert http.headers == {"content-type": "application/json", "x-extra": "1"}  # the token is the auth step's


def test_base_url_replaces_the_host_only_and_model_ids_are_encoded():
    http = backend("http://10.0.0.9:8080/").chat_request(REQ, target("gemini::a b/c", location="global"))
    assert http.url == ("http://10.0.0.9:8080/v1/projects/my-project/locations/global/publishers/google/models/"
                        "gemini%3A%3Aa%20b%2Fc:generateContent")


def test_claude_body_is_the_messages_body_without_model_plus_anthropic_version():
    t = target("claude-3-5-sonnet-v2@20241022")
    body = jsonio.loads(backend().chat_request(msgspec.structs.replace(REQ, stream=True), t).body)
    expected = AnthropicBackend("", None, {}, AnthropicBackend.Options()).message_body(msgspec.structs.replace(REQ, stream=True), t)
    del expected["model"]
    assert body == {**expected, "anthropic_version": ANTHROPIC_VERSION} and body["stream"] is True
    assert "model" not in body and body["max_tokens"] == 50
    other = backend(anthropic_version="vertex-2023-10-16").chat_request(REQ, t)
    assert jsonio.loads(other.body)["anthropic_version"] == "vertex-2023-10-16"


def test_claude_default_max_tokens_from_the_backend_option():
    req = msgspec.structs.replace(REQ, max_tokens=None)
    body = jsonio.loads(backend(default_max_tokens=321).chat_request(req, target("claude-x")).body)
    assert body["max_tokens"] == 321


def test_gemini_body_is_the_gemini_body():
    t = target("gemini-2.0-flash")
    body = jsonio.loads(backend().chat_request(REQ, t).body)
    assert body == GeminiBackend("", None, {}, GeminiBackend.Options()).generate_body(REQ, t)
    assert body["generationConfig"]["maxOutputTokens"] == 50


def test_parameters_per_publisher():
    b = backend()
    assert b.supported_params_for(target("claude-x")) == AnthropicBackend.supported_params
    assert b.supported_params_for(target("gemini-x")) == GeminiBackend.supported_params
    assert "seed" in b.supported_params_for(target("gemini-x")) and "seed" not in b.supported_params_for(target("claude-x"))


def test_answers_go_through_the_publisher_decoder():
    claude = jsonio.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                           "content": [{"type": "text", "text": "hey"}], "stop_reason": "end_turn",
                           "usage": {"input_tokens": 3, "output_tokens": 1}})
    resp = backend().chat_response(claude, REQ, target("claude-x"))
    assert resp.choices[0].parts == [ir.Text(text="hey")] and resp.usage.input_tokens == 3
    gem = jsonio.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": "yo"}]}, "finishReason": "MAX_TOKENS"}]})
    resp = backend().chat_response(gem, REQ, target("gemini-x"))
    assert resp.choices[0].parts == [ir.Text(text="yo")] and resp.choices[0].finish_reason == "length"
    d = backend().stream_decoder(REQ, target("gemini-x"))
    assert d.feed(b"data: " + gem + b"\n\n")[-1] == ir.End()


@pytest.mark.parametrize("status,body,kind", [
    (429, {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}, "rate_limit"),
    (401, {"error": {"code": 401, "message": "bad token", "status": "UNAUTHENTICATED"}}, "authentication"),
    (403, {"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}, "permission"),
    (400, {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 9 tokens > 5 maximum"}},
     "context_length"),
    (500, {"type": "error", "error": {"type": "api_error", "message": "oops"}}, "server"),
    (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "overloaded"),
])
def test_errors_by_shape(status, body, kind):
    err = backend().parse_error(status, {}, jsonio.dumps(body))
    assert err.kind == kind and err.upstream_status == status


def test_error_that_is_not_json_uses_the_status():
    assert backend().parse_error(503, {}, b"<html>").kind == "overloaded"


@pytest.mark.parametrize("options", [{"location": "us-east5/../x"}, {"project": "a/b"}, {"location": ""}])
def test_ids_that_would_change_the_url_are_refused(options):
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"project": "p", **options}, VertexOptions)


def test_model_options_are_checked():
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"publisher": "meta"}, VertexModelOptions)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"region": "x"}, VertexModelOptions)


def test_family_per_publisher():
    b = backend()
    assert b.family_for(target("claude-x")) == "anthropic" and b.family_for(target("gemini-x")) == "gemini"
    assert b.family_for(target("my-model", publisher="anthropic")) == "anthropic"


def test_claude_passthrough_moves_model_into_the_url():
    body = jsonio.dumps({"model": "claude-x", "max_tokens": 5, "stream": True, "messages": [], "cache": {"a": 1}})
    http = backend().passthrough_request("messages", body, True, target("claude-x"), {"Anthropic-Beta": "b1", "x": "y"})
    assert http.url.endswith("/publishers/anthropic/models/claude-x:streamRawPredict") and http.stream
    assert jsonio.loads(http.body) == {"max_tokens": 5, "stream": True, "messages": [], "cache": {"a": 1},
                                       "anthropic_version": ANTHROPIC_VERSION}
    assert http.headers == {"content-type": "application/json", "x-extra": "1", "anthropic-beta": "b1"}
    count = backend().passthrough_request("count_tokens", jsonio.dumps({"model": "claude-x", "messages": []}), False,
                                          target("claude-x", location="europe-west1"), {})
    assert count.url == ("https://europe-west1-aiplatform.googleapis.com/v1/projects/my-project/locations/europe-west1"
                         "/publishers/anthropic/models/count-tokens:rawPredict")
    assert jsonio.loads(count.body) == {"model": "claude-x", "messages": [], "anthropic_version": ANTHROPIC_VERSION}


def test_gemini_passthrough_keeps_the_body():
    body = b'{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}'
    http = backend().passthrough_request("generate", body, True, target("gemini-x"), {})
    assert http.body is body and http.url.endswith("/publishers/google/models/gemini-x:streamGenerateContent?alt=sse")
    assert backend().passthrough_request("count_tokens", body, False, target("gemini-x"), {}).url.endswith(":countTokens")


@pytest.mark.parametrize("op,model", [("embed", "gemini-x"), ("batch_embed", "gemini-x"), ("generate", "claude-x")])
def test_passthrough_operations_vertex_does_not_offer(op, model):
    with pytest.raises(ProxyError) as e:
        backend().passthrough_request(op, b"{}", False, target(model), {})
    assert e.value.kind == "not_found"


def test_embeddings_through_predict():
    b = backend()
    http = b.embeddings_request(ir.EmbeddingRequest(model="e", input=["a", "b"], dimensions=8), target("text-embedding-005"))
    assert http.url.endswith("/publishers/google/models/text-embedding-005:predict")
    assert jsonio.loads(http.body) == {"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 8}}
    answer = {"predictions": [{"embeddings": {"values": [0.1], "statistics": {"token_count": 2, "truncated": False}}},
                              {"embeddings": {"values": [0.2], "statistics": {"token_count": 3.0}}}]}
    resp = b.embeddings_response(jsonio.dumps(answer), ir.EmbeddingRequest(model="e", input=["a", "b"]))
    assert resp.data == [[0.1], [0.2]] and resp.usage == ir.Usage(input_tokens=5)
    for bad_target, bad_input in ((target("claude-x"), ["a"]), (target("text-embedding-005"), [[1, 2]])):
        with pytest.raises(ProxyError) as e:
            b.embeddings_request(ir.EmbeddingRequest(model="e", input=bad_input), bad_target)
        assert e.value.kind == "unsupported"
    with pytest.raises(ProxyError) as e:
        b.embeddings_response(b'{"predictions": [{}]}', ir.EmbeddingRequest(model="e", input=["a"]))
    assert e.value.kind == "upstream_protocol"
