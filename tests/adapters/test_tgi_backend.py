"""TGI native backend: parameters, responses, the token-event stream and errors (no sockets)."""

from __future__ import annotations

import json

import pytest

from adapters import chat_templates, ir
from adapters.base import Target
from adapters.errors import ProxyError
from adapters.tgi_backend import TGIBackend, TGIOptions, held_back, strip_stop

CHATML = chat_templates.get("chatml")
TARGET = Target(model="tgi-model", chat_template=CHATML)


def backend(**opts) -> TGIBackend:
    return TGIBackend("http://tgi:8080/", None, {}, TGIOptions(**opts))


def chat(**kw) -> ir.ChatRequest:
    return ir.ChatRequest(model="m", messages=[ir.Message("user", [ir.Text("hi")])], **kw)


def params(req: ir.ChatRequest, target: Target = TARGET, **opts) -> dict:
    return json.loads(backend(**opts).chat_request(req, target).body)["parameters"]


# -- request ---------------------------------------------------------------------------------------


def test_request_url_body_and_headers():
    r = backend().chat_request(chat(max_tokens=20), TARGET)
    body = json.loads(r.body)
    assert r.url == "http://tgi:8080/generate" and not r.stream
    assert body["inputs"] == CHATML.render(chat())
    assert body["parameters"] == {
        "max_new_tokens": 20,
        "stop": ["<|im_end|>"],
        "return_full_text": False,
        "details": True,
    }
    assert "authorization" not in r.headers


def test_stream_request_and_bearer():
    b = TGIBackend("http://tgi", "secret", {"x-extra": "1"}, TGIOptions())
    r = b.chat_request(chat(stream=True), TARGET)
    assert r.url == "http://tgi/generate_stream" and r.stream
    assert r.headers["authorization"] == "Bearer secret"
    assert r.headers["accept"] == "text/event-stream"
    assert r.headers["x-extra"] == "1"


@pytest.mark.parametrize(
    "kw, expected",
    [
        ({"temperature": 0.0}, {"do_sample": False}),
        ({"temperature": 0.7}, {"temperature": 0.7, "do_sample": True}),
        ({"top_p": 1.0}, {}),
        ({"top_p": 0.9}, {"top_p": 0.9, "do_sample": True}),
        ({"top_p": 0.0}, {"do_sample": False}),
        ({"top_k": 40}, {"top_k": 40, "do_sample": True}),
        ({"top_k": 0}, {}),
        ({"temperature": 0.0, "top_p": 0.5, "top_k": 5}, {"do_sample": False}),
        ({"repetition_penalty": 1.1}, {"repetition_penalty": 1.1}),
        ({"frequency_penalty": 0.5}, {"frequency_penalty": 0.5}),
        ({"seed": 42}, {"seed": 42}),
        ({"max_tokens": 7}, {"max_new_tokens": 7}),
        (
            {"response_format": ir.ResponseFormat("json_schema", schema={"type": "object"})},
            {"grammar": {"type": "json", "value": {"type": "object"}}},
        ),
        ({"response_format": ir.ResponseFormat("json_object")}, {"grammar": {"type": "json", "value": {}}}),
        ({"response_format": ir.ResponseFormat("text")}, {}),
    ],
)
def test_parameter_rows(kw, expected):
    p = params(chat(**kw))
    fixed = {"return_full_text": False, "details": True, "stop": ["<|im_end|>"]}
    assert p == {**fixed, **expected}


def test_stops_client_first_then_template_within_cap():
    assert params(chat(stop=["a", "b"]))["stop"] == ["a", "b", "<|im_end|>"]
    assert params(chat(stop=["a", "b", "c", "d"]))["stop"] == ["a", "b", "c", "d"]
    assert params(chat(stop=["a", "a"]), max_stop_sequences=1)["stop"] == ["a"]


def test_raw_prompt_skips_template_and_its_stops():
    req = ir.ChatRequest(model="m", prompt="Once upon", stop=["."])
    body = json.loads(backend().chat_request(req, TARGET).body)
    assert body["inputs"] == "Once upon"
    assert body["parameters"]["stop"] == ["."]


def test_bos_stripped_unless_send_bos():
    target = Target(model="m", chat_template=chat_templates.get("llama3"))
    inputs = json.loads(backend().chat_request(chat(), target).body)["inputs"]
    assert inputs.startswith("<|start_header_id|>system")
    inputs = json.loads(backend(send_bos=True).chat_request(chat(), target).body)["inputs"]
    assert inputs.startswith("<|begin_of_text|><|start_header_id|>")


def test_default_max_tokens_and_fixed_params():
    target = Target(model="m", chat_template=CHATML, default_max_tokens=99, params={"truncate": 1000})
    p = params(chat(), target)
    assert p["max_new_tokens"] == 99 and p["truncate"] == 1000


def test_missing_template_defaults_to_chatml():
    body = json.loads(backend().chat_request(chat(), Target(model="m")).body)
    assert body["inputs"].startswith("<|im_start|>system\nYou are Qwen")


def test_prefill_usage_option():
    assert params(chat(), prefill_usage=True)["decoder_input_details"] is True
    assert "decoder_input_details" not in params(chat(stream=True), prefill_usage=True)


def test_declared_params():
    assert "tools" not in TGIBackend.supported_params and "presence_penalty" not in TGIBackend.supported_params
    assert TGIBackend.renamed_params["max_tokens"] == "max_new_tokens"
    assert TGIBackend.uses_chat_template and TGIBackend.family is None


# -- non-stream response ----------------------------------------------------------------------------


def respond(body: dict | list, req: ir.ChatRequest | None = None) -> ir.ChatResponse:
    return backend().chat_response(json.dumps(body).encode(), req or chat(stop=["END"]), TARGET)


@pytest.mark.parametrize(
    "raw, reason", [("eos_token", "stop"), ("stop_sequence", "stop"), ("length", "length"), ("weird", "stop")]
)
def test_finish_reason_rows(raw, reason):
    r = respond({"generated_text": "hi", "details": {"finish_reason": raw, "generated_tokens": 1}})
    assert r.choices[0].finish_reason == reason
    assert r.choices[0].raw_finish_reason == raw


def test_stop_text_stripped_and_reported_for_client_stop():
    r = respond({"generated_text": "hello END", "details": {"finish_reason": "stop_sequence", "generated_tokens": 3}})
    assert r.choices[0].parts == [ir.Text("hello ")]
    assert r.choices[0].stop_sequence == "END"


def test_template_stop_stripped_but_not_reported():
    r = respond({"generated_text": "hi<|im_end|>", "details": {"finish_reason": "stop_sequence", "generated_tokens": 2}})
    assert r.choices[0].parts == [ir.Text("hi")]
    assert r.choices[0].stop_sequence is None


def test_eos_text_not_stripped():
    r = respond({"generated_text": "ends with END", "details": {"finish_reason": "eos_token", "generated_tokens": 3}})
    assert r.choices[0].parts == [ir.Text("ends with END")]


def test_usage_from_details_and_prefill():
    r = respond({"generated_text": "x", "details": {"finish_reason": "length", "generated_tokens": 4, "prefill": [{}, {}, {}]}})
    assert r.usage == ir.Usage(input_tokens=3, output_tokens=4)
    assert r.model == "tgi-model" and r.id.startswith("tgi-")


def test_list_shape_without_details():
    r = respond([{"generated_text": "plain END"}])
    assert r.choices[0].parts == [ir.Text("plain ")]
    assert r.choices[0].finish_reason == "stop" and r.usage is None


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"generated_text": 3}'])
def test_bad_response_is_upstream_protocol(body):
    with pytest.raises(ProxyError) as e:
        backend().chat_response(body, chat(), TARGET)
    assert e.value.kind == "upstream_protocol"


# -- stop helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, stops, expected",
    [
        ("abc END", ["END"], ("abc ", "END")),
        ("abcEND", ["D", "END"], ("abc", "END")),
        ("abc", ["END"], ("abc", None)),
        ("", ["END"], ("", None)),
    ],
)
def test_strip_stop(text, stops, expected):
    assert strip_stop(text, stops) == expected


@pytest.mark.parametrize(
    "pending, stops, n", [("abc E", ["END"], 1), ("abc EN", ["END"], 2), ("abc", ["END"], 0), ("<|im", ["<|im_end|>"], 4)]
)
def test_held_back(pending, stops, n):
    assert held_back(pending, stops) == n


# -- stream -------------------------------------------------------------------------------------------


def token(i: int, text: str, special: bool = False, **last) -> bytes:
    ev = {"index": i, "token": {"id": i, "text": text, "logprob": -0.1, "special": special},
          "generated_text": None, "details": None, "top_tokens": None}
    ev.update(last)
    return b"data:" + json.dumps(ev).encode() + b"\n\n"


EOS_STREAM = (
    b": keep-alive\n\n"
    + token(1, "Hel")
    + token(2, "lo")
    + token(3, "</s>", special=True, generated_text="Hello",
            details={"finish_reason": "eos_token", "generated_tokens": 3, "seed": None, "input_length": 9})
)

# The stop sequence "END" arrives split across token events.
STOP_STREAM = (
    token(1, "ok E")
    + token(2, "N")
    + token(3, "D", generated_text="ok END",
            details={"finish_reason": "stop_sequence", "generated_tokens": 3, "seed": None, "input_length": 5})
)


def run(data: bytes, req: ir.ChatRequest, split: str) -> list[ir.Event]:
    dec = backend().stream_decoder(req, TARGET)
    events: list[ir.Event] = []
    if split == "whole":
        events += dec.feed(data)
    elif split == "bytewise":
        for i in range(len(data)):
            events += dec.feed(data[i : i + 1])
    else:
        cut = int(split)
        events += dec.feed(data[:cut]) + dec.feed(data[cut:])
    return events + dec.close()


def normalise(events: list[ir.Event]) -> list:
    """Events without the synthesised id/created, text deltas merged (splits may cut deltas differently)."""
    out: list = []
    for ev in events:
        if isinstance(ev, ir.Start):
            out.append(("start", ev.model))
        elif isinstance(ev, ir.TextDelta) and out and isinstance(out[-1], tuple) and out[-1][0] == "text":
            out[-1] = ("text", out[-1][1] + ev.text)
        elif isinstance(ev, ir.TextDelta):
            out.append(("text", ev.text))
        else:
            out.append(ir.to_builtins(ev))
    return out


def splits(data: bytes) -> list[str]:
    return ["whole", "bytewise"] + [str(i) for i in range(1, len(data))]


@pytest.mark.parametrize("split", splits(EOS_STREAM))
def test_eos_stream_same_events_for_every_split(split):
    events = normalise(run(EOS_STREAM, chat(stream=True), split))
    assert events == [
        ("start", "tgi-model"),
        {"type": "block_start", "index": 0, "kind": "text"},
        ("text", "Hello"),
        {"type": "block_end", "index": 0},
        {"type": "finish", "reason": "stop", "raw": "eos_token"},
        {"type": "usage", "usage": {"input_tokens": 9, "output_tokens": 3}},
        {"type": "end"},
    ]


@pytest.mark.parametrize("split", splits(STOP_STREAM))
def test_split_stop_sequence_never_reaches_client(split):
    events = run(STOP_STREAM, chat(stream=True, stop=["END"]), split)
    text = "".join(e.text for e in events if isinstance(e, ir.TextDelta))
    assert text == "ok "
    finish = next(e for e in events if isinstance(e, ir.Finish))
    assert (finish.reason, finish.raw, finish.stop_sequence) == ("stop", "stop_sequence", "END")


def test_held_text_released_when_not_a_stop():
    data = token(1, "E") + token(2, "gg", generated_text="Egg",
                                 details={"finish_reason": "length", "generated_tokens": 2, "input_length": 1})
    dec = backend().stream_decoder(chat(stream=True, stop=["END"]), TARGET)
    first = dec.feed(token(1, "E"))
    assert not any(isinstance(e, ir.TextDelta) for e in first)  # "E" could start "END"
    rest = dec.feed(data[len(token(1, "E")):]) + dec.close()
    assert "".join(e.text for e in rest if isinstance(e, ir.TextDelta)) == "Egg"
    assert any(isinstance(e, ir.Finish) and e.reason == "length" for e in rest)


def test_generated_text_not_appended_again():
    events = run(EOS_STREAM, chat(stream=True), "whole")
    assert "".join(e.text for e in events if isinstance(e, ir.TextDelta)) == "Hello"


def test_final_event_without_details():
    data = token(1, "hi", generated_text="hi")
    events = run(data, chat(stream=True), "whole")
    assert not any(isinstance(e, ir.UsageEvent) for e in events)
    assert isinstance(events[-1], ir.End)


@pytest.mark.parametrize(
    "error_type, kind",
    [("generation", "server"), ("overloaded", "overloaded"), ("validation", "invalid_request"),
     ("incomplete_generation", "server")],
)
def test_in_band_error(error_type, kind):
    data = token(1, "a") + b'data:{"error":"boom","error_type":"%s"}\n\n' % error_type.encode()
    dec = backend().stream_decoder(chat(stream=True), TARGET)
    with pytest.raises(ProxyError) as e:
        dec.feed(data)
    assert e.value.kind == kind and e.value.message == "boom"


def test_last_event_without_trailing_blank_line_still_finishes():
    data = EOS_STREAM[:-2]
    events = run(data, chat(stream=True), "whole")
    assert isinstance(events[-1], ir.End)


# -- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, body, kind",
    [
        (422, {"error": "Input validation error: `temperature` must be strictly positive", "error_type": "validation"},
         "invalid_request"),
        (422, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 5000 "
                        "`inputs` tokens and 100 `max_new_tokens`", "error_type": "validation"}, "context_length"),
        (422, {"error": "Input validation error: `inputs` must have less than 1024 tokens. Given: 2000",
               "error_type": "validation"}, "context_length"),
        (422, {"error": "Template error: bad", "error_type": "template_error"}, "invalid_request"),
        (429, {"error": "Model is overloaded", "error_type": "overloaded"}, "overloaded"),
        (424, {"error": "Request failed during generation", "error_type": "generation"}, "server"),
        (500, {"error": "Incomplete generation", "error_type": "incomplete_generation"}, "server"),
        (503, {"error": "unhealthy", "error_type": "healthcheck"}, "upstream_unavailable"),
        (401, {"error": "Unauthorized"}, "authentication"),
        (404, {"error": "Not Found", "error_type": "something_new"}, "not_found"),
    ],
)
def test_parse_error_rows(status, body, kind):
    err = backend().parse_error(status, {}, json.dumps(body).encode())
    assert err.kind == kind
    assert err.message == body["error"]
    assert err.upstream_status == status


def test_parse_error_retry_after_and_non_json():
    err = backend().parse_error(429, {"retry-after": "4"}, b'{"error":"busy","error_type":"overloaded"}')
    assert err.retry_after == 4.0 and err.retryable
    err = backend().parse_error(502, {}, b"<html>bad gateway</html>")
    assert err.kind == "upstream_unavailable" and "<html>" not in err.message
