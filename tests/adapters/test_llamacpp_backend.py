"""llama.cpp /completion backend: prompt + fields row by row, SSE decoding under every split, errors."""

import msgspec
import pytest

from adapters import ir, jsonio
from adapters import llamacpp_backend as mod
from adapters.base import Target
from adapters.errors import ProxyError
from adapters.llamacpp_backend import LlamaCppBackend, Options


class StubTemplate:
    """The two members the adapter uses from adapters.chat_templates.ChatTemplate."""

    stop = ("<|im_end|>", "END")

    def render(self, req: ir.ChatRequest) -> str:
        texts = [p.text for m in req.messages for p in m.parts if isinstance(p, ir.Text)]
        return "<|im_start|>user\n" + "|".join(texts) + "<|im_end|>\n<|im_start|>assistant\n"


TARGET = Target(model="qwen", chat_template=StubTemplate())
PROMPT = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def fixed_ids(monkeypatch):
    monkeypatch.setattr(mod, "synth_id", lambda prefix="call_", length=24: prefix + "X" * length)
    monkeypatch.setattr(mod.time, "time", lambda: 1700000000.0)


def backend(**opts) -> LlamaCppBackend:
    return LlamaCppBackend("http://llama:8080/", opts.pop("api_key", None), {}, Options(**opts))


def chat(**kw) -> ir.ChatRequest:
    kw.setdefault("messages", [ir.Message(role="user", parts=[ir.Text(text="hi")])])
    return ir.ChatRequest(model="client", **kw)


def body_of(req: ir.ChatRequest, target: Target = TARGET, **opts) -> dict:
    return jsonio.loads(backend(**opts).chat_request(req, target).body)


# -- request ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_prompt_from_template_and_template_stops(stream):
    http = backend(api_key="k").chat_request(chat(stream=stream), TARGET)
    assert http.url == "http://llama:8080/completion"
    assert http.stream is stream
    assert http.headers["authorization"] == "Bearer k"
    assert jsonio.loads(http.body) == {
        "prompt": PROMPT,
        "stream": stream,
        "cache_prompt": True,
        "stop": ["<|im_end|>", "END"],
    }


def test_client_stops_first_then_template_deduplicated():
    assert body_of(chat(stop=["END", "###"]))["stop"] == ["END", "###", "<|im_end|>"]


def test_raw_prompt_is_sent_verbatim_with_client_stops_only():
    body = body_of(ir.ChatRequest(model="m", prompt="Once upon", stop=["\n"]))
    assert body["prompt"] == "Once upon" and body["stop"] == ["\n"]
    assert "stop" not in body_of(ir.ChatRequest(model="m", prompt="Once upon"))


@pytest.mark.parametrize(
    "field,value,name",
    [
        ("max_tokens", 32, "n_predict"),
        ("temperature", 0.0, "temperature"),
        ("top_p", 0.9, "top_p"),
        ("top_k", 40, "top_k"),
        ("min_p", 0.05, "min_p"),
        ("repetition_penalty", 1.1, "repeat_penalty"),
        ("presence_penalty", 0.5, "presence_penalty"),
        ("frequency_penalty", 0.5, "frequency_penalty"),
        ("seed", 42, "seed"),
    ],
)
def test_sampling_rows(field, value, name):
    body = body_of(chat(**{field: value}))
    assert body[name] == value
    assert field == name or field not in body


@pytest.mark.parametrize(
    "rf,expected",
    [
        (ir.ResponseFormat(type="text"), None),
        (ir.ResponseFormat(type="json_object"), {}),
        (ir.ResponseFormat(type="json_schema", schema={"type": "object", "required": ["a"]}),
         {"type": "object", "required": ["a"]}),
        (ir.ResponseFormat(type="json_schema"), {}),
    ],
)
def test_response_format_rows(rf, expected):
    assert body_of(chat(response_format=rf)).get("json_schema") == expected


def test_options_default_max_tokens_and_target_params():
    target = Target(model="m", chat_template=StubTemplate(), default_max_tokens=256, params={"n_keep": 16})
    body = body_of(chat(temperature=0.1), target, cache_prompt=False, extra={"samplers": ["top_k"], "temperature": 1})
    assert body["cache_prompt"] is False
    assert body["samplers"] == ["top_k"] and body["temperature"] == 0.1
    assert body["n_predict"] == 256 and body["n_keep"] == 16


def test_missing_template_is_a_server_error():
    with pytest.raises(ProxyError) as exc:
        body_of(chat(), Target(model="m"))
    assert exc.value.kind == "server"


def test_declared_params():
    assert LlamaCppBackend.uses_chat_template is True
    assert LlamaCppBackend.provider == "llamacpp" and LlamaCppBackend.family is None
    for name in ("tools", "tool_choice", "reasoning", "logprobs", "logit_bias"):
        assert name not in LlamaCppBackend.supported_params
    assert LlamaCppBackend.renamed_params["max_tokens"] == "n_predict"
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"bogus": True}, Options)


# -- stream ----------------------------------------------------------------------------------------

FINAL = {
    "content": "",
    "stop": True,
    "model": "qwen2.5-0.5b",
    "stop_type": "eos",
    "stopping_word": "",
    "tokens_evaluated": 12,
    "tokens_predicted": 3,
    "tokens_cached": 14,
    "truncated": False,
    "timings": {"prompt_n": 4, "cache_n": 8, "predicted_n": 3},
}

STREAM = (
    b'data: {"content":"Hel","stop":false,"id_slot":0,"multimodal":false,"index":0}\n\n'
    b": ping\n\n"
    b'data: {"content":"lo \xf0\x9f\xa6\x99","stop":false}\r\n\r\n'
    b'data: {"content":"\\u2028!","stop":false}\n\n'
    b"data: " + jsonio.dumps(FINAL) + b"\n\n"
)

STREAM_EVENTS = [
    ir.Start(id="cmpl-" + "X" * 24, created=1700000000),
    ir.BlockStart(0, "text"),
    ir.TextDelta(0, "Hel"),
    ir.TextDelta(0, "lo 🦙"),
    ir.TextDelta(0, "\u2028!"),
    ir.BlockEnd(0),
    ir.Finish("stop", raw="eos"),
    ir.UsageEvent(ir.Usage(input_tokens=12, output_tokens=3, cached_input_tokens=8)),
    ir.End(),
]


def decoder(stop=()):
    return backend().stream_decoder(chat(stream=True, stop=list(stop)), TARGET)


def decode_whole(data: bytes, stop=()) -> list:
    d = decoder(stop)
    return d.feed(data) + d.close()


def test_stream_every_split(fixed_ids):
    assert decode_whole(STREAM) == STREAM_EVENTS
    d = decoder()
    out = []
    for i in range(len(STREAM)):
        out += d.feed(STREAM[i : i + 1])
    assert out + d.close() == STREAM_EVENTS
    for cut in range(len(STREAM) + 1):
        d = decoder()
        assert d.feed(STREAM[:cut]) + d.feed(STREAM[cut:]) + d.close() == STREAM_EVENTS, cut


def event(**fields) -> bytes:
    return b"data: " + jsonio.dumps(fields) + b"\n\n"


@pytest.mark.parametrize(
    "stop_type,word,client_stops,reason,sequence",
    [
        ("eos", "", [], "stop", None),
        ("word", "###", ["###"], "stop", "###"),
        ("word", "<|im_end|>", ["###"], "stop", None),  # the template's marker, not the client's
        ("limit", "", [], "length", None),
        ("none", "", [], "stop", None),
    ],
)
def test_finish_rows(stop_type, word, client_stops, reason, sequence):
    events = decode_whole(event(content="x", stop=True, stop_type=stop_type, stopping_word=word), client_stops)
    assert [e for e in events if isinstance(e, ir.Finish)] == [ir.Finish(reason, raw=stop_type, stop_sequence=sequence)]


@pytest.mark.parametrize(
    "final,usage",
    [
        ({"tokens_evaluated": 10, "tokens_predicted": 4}, ir.Usage(input_tokens=10, output_tokens=4)),
        ({"timings": {"prompt_n": 3, "cache_n": 5, "predicted_n": 2}},
         ir.Usage(input_tokens=8, output_tokens=2, cached_input_tokens=5)),
        ({}, ir.Usage()),
    ],
)
def test_usage_rows(final, usage):
    events = decode_whole(event(content="", stop=True, stop_type="eos", **final))
    assert [e for e in events if isinstance(e, ir.UsageEvent)] == [ir.UsageEvent(usage)]


def test_final_event_content_is_kept_and_no_text_block_without_text():
    events = decode_whole(event(content="tail", stop=True, stop_type="eos"))
    assert [e for e in events if isinstance(e, ir.TextDelta)] == [ir.TextDelta(0, "tail")]
    empty = decode_whole(event(content="", stop=True, stop_type="eos"))
    assert not any(isinstance(e, (ir.BlockStart, ir.BlockEnd)) for e in empty)


@pytest.mark.parametrize(
    "line,kind",
    [
        (event(error={"code": 500, "message": "slot crashed", "type": "server_error"}), "server"),
        (b'error: {"code":400,"message":"the request exceeds the available context size, try increasing it",'
         b'"type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":4096}\n\n', "context_length"),
        (event(error={"code": 503, "message": "Loading model", "type": "unavailable_error"}), "overloaded"),
        (event(error={"code": 500, "message": "odd"}), "server"),
    ],
)
def test_inband_errors_raise(line, kind):
    d = decoder()
    assert [type(e) for e in d.feed(event(content="a", stop=False))] == [ir.Start, ir.BlockStart, ir.TextDelta]
    with pytest.raises(ProxyError) as exc:
        d.feed(line)
    assert exc.value.kind == kind


def test_close_without_stop_event_is_a_protocol_error():
    d = decoder()
    d.feed(event(content="a", stop=False))
    with pytest.raises(ProxyError) as exc:
        d.close()
    assert exc.value.kind == "upstream_protocol"


# -- non-streaming answer --------------------------------------------------------------------------


def test_chat_response():
    body = jsonio.dumps({**FINAL, "content": "Hi there", "stop_type": "word", "stopping_word": "###"})
    resp = backend().chat_response(body, chat(stop=["###"]), TARGET)
    assert resp.model == "qwen2.5-0.5b" and resp.id.startswith("cmpl-")
    choice = resp.choices[0]
    assert choice.parts == [ir.Text(text="Hi there")]
    assert (choice.finish_reason, choice.raw_finish_reason, choice.stop_sequence) == ("stop", "word", "###")
    assert resp.usage == ir.Usage(input_tokens=12, output_tokens=3, cached_input_tokens=8)


def test_chat_response_bad_bodies():
    with pytest.raises(ProxyError) as exc:
        backend().chat_response(b"not json", chat(), TARGET)
    assert exc.value.kind == "upstream_protocol"
    with pytest.raises(ProxyError) as exc:
        backend().chat_response(b'{"error":{"code":500,"message":"x","type":"server_error"}}', chat(), TARGET)
    assert exc.value.kind == "server"


# -- errors ----------------------------------------------------------------------------------------


def err_body(code: int, message: str, type_: str) -> bytes:
    return jsonio.dumps({"error": {"code": code, "message": message, "type": type_}})


@pytest.mark.parametrize(
    "status,body,kind",
    [
        (400, err_body(400, "the request exceeds the available context size, try increasing it",
                       "exceed_context_size_error"), "context_length"),
        (400, err_body(400, "bad json_schema", "invalid_request_error"), "invalid_request"),
        (401, err_body(401, "Invalid API Key", "authentication_error"), "authentication"),
        (403, err_body(403, "forbidden", "permission_error"), "permission"),
        (404, err_body(404, "File Not Found", "not_found_error"), "not_found"),
        (501, err_body(501, "This server does not support embeddings", "not_supported_error"), "unsupported"),
        (503, err_body(503, "Loading model", "unavailable_error"), "overloaded"),
        (500, err_body(500, "boom", "server_error"), "server"),
        (429, err_body(429, "slow down", "mystery_error"), "rate_limit"),
        (400, err_body(400, "prompt is too long: context length", "mystery_error"), "context_length"),
        (502, b"Bad Gateway from nginx", "upstream_unavailable"),
    ],
)
def test_parse_error_rows(status, body, kind):
    err = backend().parse_error(status, {"retry-after": "2"}, body)
    assert err.kind == kind and err.upstream_status == status
    assert err.retry_after == 2.0
    if not body.startswith(b"{"):
        assert "nginx" not in err.message  # raw bodies never reach the client
    else:
        assert err.message == jsonio.loads(body)["error"]["message"]


def test_events_before_an_error_in_the_same_chunk_are_delivered_first():
    d = decoder()
    error = event(error={"code": 500, "message": "x", "type": "server_error"})
    events = d.feed(event(content="part", stop=False) + error)
    assert ir.TextDelta(0, "part") in events
    with pytest.raises(ProxyError) as exc:
        d.feed(b"")
    assert exc.value.kind == "server"
