"""Azure backend: URL styles, auth, parameter set, content-filter handling."""

import orjson
import pytest

from adapters import ir
from adapters.azure_backend import AZURE_MODELS, AZURE_OPENAI, DEFAULT_API_VERSION, AzureBackend
from adapters.base import Target
from adapters.errors import ProxyError

T = Target(model="my-dep")


def azure(**opts):
    return AzureBackend("https://res.openai.azure.com/", "key", {}, AzureBackend.Options(**opts))


def req(**kw):
    return ir.ChatRequest(model="c", messages=[ir.Message("user", [ir.Text("hi")])], **kw)


@pytest.mark.parametrize("style,op,url", [
    ("deployments", "chat", f"https://res.openai.azure.com/openai/deployments/my-dep/chat/completions?api-version={DEFAULT_API_VERSION}"),
    ("deployments", "embeddings", f"https://res.openai.azure.com/openai/deployments/my-dep/embeddings?api-version={DEFAULT_API_VERSION}"),
    ("v1", "chat", "https://res.openai.azure.com/openai/v1/chat/completions"),
    ("v1", "completions", "https://res.openai.azure.com/openai/v1/completions"),
    ("models", "chat", "https://res.openai.azure.com/models/chat/completions?api-version=2024-05-01-preview"),
])
def test_url_styles(style, op, url):
    assert azure(api_style=style).passthrough_request(op, b"{}", False, T, {}).url == url


def test_api_version_option_and_auth_styles():
    b = azure(api_version="2025-04-01-preview", auth="bearer")
    http = b.chat_request(req(), T)
    assert http.url.endswith("?api-version=2025-04-01-preview")
    assert http.headers["authorization"] == "Bearer key" and "api-key" not in http.headers
    http = azure().chat_request(req(), T)
    assert http.headers["api-key"] == "key" and "authorization" not in http.headers


def test_parameter_sets_per_style():
    assert azure().preset is AZURE_OPENAI and azure(api_style="models").preset is AZURE_MODELS
    body = orjson.loads(azure().chat_request(req(max_tokens=5), T).body)
    assert body["max_completion_tokens"] == 5
    body = orjson.loads(azure(api_style="models").chat_request(req(max_tokens=5), T).body)
    assert body["max_tokens"] == 5 and body["model"] == "my-dep"
    assert "n" not in azure(api_style="models").supported_params


def test_unknown_option_rejected():
    import msgspec
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"api_style": "deployments", "bogus": 1}, AzureBackend.Options)


def test_content_filter_stream_and_finish():
    d = azure().stream_decoder(req(stream=True), T)
    data = (b'data: {"id":"","object":"","created":0,"model":"","choices":[],"prompt_filter_results":[]}\n\n'
            b'data: {"id":"c1","created":4,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"x"}}]}\n\n'
            b'data: {"id":"c1","choices":[{"index":0,"content_filter_results":{"hate":{"filtered":false}}}]}\n\n'
            b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"content_filter"}]}\n\n'
            b"data: [DONE]\n\n")
    events = d.feed(data) + d.close()
    assert events[0] == ir.Start(id="c1", model="gpt-4o", created=4)
    assert ir.Finish("content_filter", "content_filter") in events
    assert [e for e in events if isinstance(e, ir.TextDelta)] == [ir.TextDelta(0, "x")]


def test_filtered_prompt_error():
    body = orjson.dumps({"error": {"code": "content_filter", "message": "The response was filtered",
                                   "innererror": {"code": "ResponsibleAIPolicyViolation"}}})
    err = azure().parse_error(400, {}, body)
    assert isinstance(err, ProxyError) and err.kind == "invalid_request" and err.code == "content_filter"
