"""Hugging Face Inference backend: URL styles, body, list responses, loading errors, embeddings."""

from __future__ import annotations

import json

import pytest

from adapters import chat_templates, ir
from adapters.base import Target
from adapters.errors import ProxyError
from adapters.huggingface_backend import SERVERLESS_URL, HuggingFaceBackend, HuggingFaceOptions

TARGET = Target(model="org/model", chat_template=chat_templates.get("chatml"))


def backend(base_url: str = "", **opts) -> HuggingFaceBackend:
    return HuggingFaceBackend(base_url, "hf_token", {}, HuggingFaceOptions(**opts))


def chat(**kw) -> ir.ChatRequest:
    return ir.ChatRequest(model="m", messages=[ir.Message("user", [ir.Text("hi")])], **kw)


@pytest.mark.parametrize(
    "base_url, style, expected",
    [
        ("", "serverless", f"{SERVERLESS_URL}/models/org/model"),
        ("https://router.huggingface.co/hf-inference/", "serverless",
         "https://router.huggingface.co/hf-inference/models/org/model"),
        ("https://xyz.endpoints.huggingface.cloud/", "endpoint", "https://xyz.endpoints.huggingface.cloud"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_url_per_style(base_url, style, expected, stream):
    r = backend(base_url, endpoint_style=style).chat_request(chat(stream=stream), TARGET)
    assert r.url == expected and r.stream is stream
    assert r.headers["authorization"] == "Bearer hf_token"


def test_serverless_body_has_options_and_stream():
    body = json.loads(backend().chat_request(chat(temperature=0.0, stop=["x"]), TARGET).body)
    assert body["inputs"].startswith("<|im_start|>system")
    assert body["stream"] is False
    assert body["options"] == {"wait_for_model": True}
    assert body["parameters"]["do_sample"] is False and body["parameters"]["stop"] == ["x", "<|im_end|>"]
    assert body["parameters"]["return_full_text"] is False


def test_endpoint_body_has_no_options():
    body = json.loads(backend("https://e", endpoint_style="endpoint").chat_request(chat(stream=True), TARGET).body)
    assert body["stream"] is True and "options" not in body


def test_unknown_option_rejected():
    import msgspec

    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"endpoint_style": "serverless", "nope": 1}, HuggingFaceOptions)


@pytest.mark.parametrize(
    "body",
    [
        [{"generated_text": "hello END"}],
        {"generated_text": "hello END", "details": {"finish_reason": "stop_sequence", "generated_tokens": 2}},
    ],
)
def test_list_and_object_responses(body):
    r = backend().chat_response(json.dumps(body).encode(), chat(stop=["END"]), TARGET)
    assert r.choices[0].parts == [ir.Text("hello ")]
    assert r.choices[0].finish_reason == "stop"


def test_stream_decoder_is_tgis():
    data = (
        b'data:{"index":1,"token":{"id":1,"text":"hey","logprob":0,"special":false},"generated_text":"hey",'
        b'"details":{"finish_reason":"length","generated_tokens":1,"input_length":2}}\n\n'
    )
    dec = backend().stream_decoder(chat(stream=True), TARGET)
    events = dec.feed(data) + dec.close()
    assert [type(e).__name__ for e in events] == [
        "Start", "BlockStart", "TextDelta", "BlockEnd", "Finish", "UsageEvent", "End"
    ]


@pytest.mark.parametrize(
    "status, body, kind, retry_after",
    [
        (503, {"error": "Model org/model is currently loading", "estimated_time": 20.5}, "overloaded", 20.5),
        (503, {"error": "Service Unavailable"}, "overloaded", None),
        (400, {"error": ["Error in `parameters.top_p`: ensure this value is less than 1.0"]}, "invalid_request", None),
        (401, {"error": "Invalid credentials in Authorization header"}, "authentication", None),
        (422, {"error": "Input validation error: `inputs` must have less than 1024 tokens. Given: 2000",
               "error_type": "validation"}, "context_length", None),
        (429, {"error": {"message": "Rate limit reached"}}, "rate_limit", None),
    ],
)
def test_parse_error_rows(status, body, kind, retry_after):
    err = backend().parse_error(status, {}, json.dumps(body).encode())
    assert err.kind == kind
    assert err.retry_after == retry_after
    assert err.message and "hf_token" not in err.message


def test_loading_message_is_kept():
    err = backend().parse_error(503, {}, b'{"error":"Model x is currently loading","estimated_time":3}')
    assert err.message == "Model x is currently loading" and err.code == "model_loading"


# -- embeddings -----------------------------------------------------------------------------------


def emb(*texts: str) -> ir.EmbeddingRequest:
    return ir.EmbeddingRequest(model="e", input=list(texts))


def test_embeddings_request():
    r = backend().embeddings_request(emb("a", "b"), Target(model="sentence-transformers/x"))
    assert r.url == f"{SERVERLESS_URL}/models/sentence-transformers/x"
    assert json.loads(r.body) == {"inputs": ["a", "b"], "options": {"wait_for_model": True}}


def test_embeddings_token_ids_unsupported():
    with pytest.raises(ProxyError) as e:
        backend().embeddings_request(ir.EmbeddingRequest(model="e", input=[[1, 2]]), TARGET)
    assert e.value.kind == "unsupported"


@pytest.mark.parametrize(
    "inputs, body, expected",
    [
        (["a", "b"], [[1, 2], [3, 4]], [[1.0, 2.0], [3.0, 4.0]]),
        (["a"], [1, 2], [[1.0, 2.0]]),  # one input answered with a bare vector
        (["a"], [[1, 2]], [[1.0, 2.0]]),
        (["a"], [[1, 2], [3, 4]], [[2.0, 3.0]]),  # token vectors of one input: mean-pooled
        (["a", "b"], [[[1, 2], [3, 4]], [[0, 0], [2, 2]]], [[2.0, 3.0], [1.0, 1.0]]),
    ],
)
def test_embeddings_response_shapes(inputs, body, expected):
    resp = backend().embeddings_response(json.dumps(body).encode(), emb(*inputs))
    assert resp.data == expected and resp.model == "e"


@pytest.mark.parametrize("body", [b"{}", b"nope", b'[["x"]]', b"[[1,2]]"])
def test_embeddings_bad_response(body):
    with pytest.raises(ProxyError) as e:
        backend().embeddings_response(body, emb("a", "b"))
    assert e.value.kind == "upstream_protocol"


# -- against the emulator (real HTTP, loopback) ------------------------------------------------------


async def _send(session, req):
    async with session.request(req.method, req.url, data=req.body, headers=req.headers) as r:
        return r.status, dict(r.headers), await r.read()


async def test_adapter_against_emulator(aiohttp_server):
    import aiohttp

    from loadtest.emulators.tgi import create_app

    server = await aiohttp_server(create_app(), host="127.0.0.1")
    b = HuggingFaceBackend(str(server.make_url("")), None, {}, HuggingFaceOptions())
    target = Target(model="org/llama", chat_template=chat_templates.get("llama3"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        status, _, body = await _send(s, b.chat_request(chat(stop=["hi"]), target))
        assert status == 200
        resp = b.chat_response(body, chat(stop=["hi"]), target)
        assert resp.choices[0].parts == [ir.Text("echo: ")]
        assert resp.choices[0].stop_sequence == "hi"

        req = chat(stream=True)
        status, _, body = await _send(s, b.chat_request(req, target))
        dec = b.stream_decoder(req, target)
        events = dec.feed(body) + dec.close()
        assert "".join(e.text for e in events if isinstance(e, ir.TextDelta)) == "echo: hi"

        bad = Target(model="org/llama::status=503,retry_after=2", chat_template=target.chat_template)
        status, headers, body = await _send(s, b.chat_request(chat(), bad))
        err = b.parse_error(status, headers, body)
        assert err.kind == "overloaded" and err.retry_after == 2.0

        ereq = emb("a", "b")
        status, _, body = await _send(s, b.embeddings_request(ereq, Target(model="bge-embed")))
        assert len(b.embeddings_response(body, ereq).data) == 2
