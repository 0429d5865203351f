"""Replicate backend: input mapping, model-name forms, the polling / stream FollowUp sequence, the
plain-text SSE decoder (whole, bytewise, every split), and errors.  No sockets."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import msgspec
import pytest

from adapters import ir, jsonio
from adapters.base import FollowUp, Target
from adapters.errors import ProxyError
from adapters.replicate_backend import Options, ReplicateBackend, ReplicateStreamDecoder, _Prediction, prediction_target

VERSION = "5c7854e8" * 8


class FakeTemplate:
    stop = ("<|im_end|>",)

    def render(self, req: ir.ChatRequest) -> str:
        return "|".join(f"{m.role}:{m.parts[0].text}" for m in req.messages)


def backend(**opts) -> ReplicateBackend:
    return ReplicateBackend("https://api.replicate.com/", "r8_key", {"x-extra": "1"}, msgspec.convert(opts, Options))


def target(model: str = "meta/llama", **kw) -> Target:
    kw.setdefault("chat_template", FakeTemplate())
    return Target(model=model, **kw)


def chat(**kw) -> ir.ChatRequest:
    kw.setdefault("messages", [ir.Message("user", [ir.Text("hi")])])
    return ir.ChatRequest(model="proxy-model", **kw)


def sent_input(b: ReplicateBackend, req: ir.ChatRequest, t: Target | None = None) -> dict:
    return jsonio.loads(b.chat_request(req, t or target()).body)["input"]


def stamp(seconds_ago: float) -> str:
    return datetime.fromtimestamp(time.time() - seconds_ago, timezone.utc).isoformat().replace("+00:00", "Z")


def prediction(status: str, **kw) -> bytes:
    body = {"id": "p1", "model": "meta/llama", "status": status, "created_at": stamp(0),
            "urls": {"get": "https://api.replicate.com/v1/predictions/p1",
                     "stream": "https://stream.replicate.com/v1/predictions/p1"}}
    return jsonio.dumps(body | kw)


# -- model names -> URLs -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "model, url, version",
    [
        ("meta/meta-llama-3-8b", "https://api.replicate.com/v1/models/meta/meta-llama-3-8b/predictions", None),
        (f"meta/llama-2:{VERSION}", "https://api.replicate.com/v1/predictions", VERSION),
        (VERSION, "https://api.replicate.com/v1/predictions", VERSION),
        ("meta/llama::status=429", "https://api.replicate.com/v1/models/meta/llama%3A%3Astatus%3D429/predictions",
         None),
        ("meta/llama:v1::hang", "https://api.replicate.com/v1/predictions", "v1::hang"),
    ],
)
def test_model_name_forms(model, url, version):
    req = backend().chat_request(chat(), target(model))
    body = jsonio.loads(req.body)
    assert req.url == url and req.method == "POST" and not req.stream
    assert body.get("version") == version


@pytest.mark.parametrize("model", ["llama", "/llama", "meta/", "deadbeef"])
def test_bad_model_names_are_refused(model):
    with pytest.raises(ProxyError) as err:
        prediction_target(model)
    assert err.value.kind == "invalid_request"


def test_headers_nonstream_wait_and_auth():
    req = backend(wait=30).chat_request(chat(), target())
    assert req.headers["Authorization"] == "Bearer r8_key"
    assert req.headers["Prefer"] == "wait=30"
    assert req.headers["x-extra"] == "1"
    assert "stream" not in jsonio.loads(req.body)


def test_wait_zero_disables_prefer():
    assert "Prefer" not in backend(wait=0).chat_request(chat(), target()).headers


def test_stream_request_sets_stream_without_prefer():
    req = backend().chat_request(chat(stream=True), target())
    assert jsonio.loads(req.body)["stream"] is True
    assert "Prefer" not in req.headers and req.stream is False  # the create call answers JSON


@pytest.mark.parametrize("bad", [{"wait": 61}, {"wait": -1}, {"prompt_mode": "chat"}, {"input_names": {"n": "x"}},
                                 {"unknown": 1}])
def test_options_are_validated(bad):
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(bad, Options)


# -- input mapping, row by row --------------------------------------------------------------------

SAMPLING_ROWS = [
    ("max_tokens", 64, "max_new_tokens", 64),
    ("temperature", 0.3, "temperature", 0.3),
    ("top_p", 0.9, "top_p", 0.9),
    ("top_k", 40, "top_k", 40),
    ("seed", 7, "seed", 7),
    ("presence_penalty", 0.5, "presence_penalty", 0.5),
    ("frequency_penalty", 0.25, "frequency_penalty", 0.25),
    ("stop", ["END", "###"], "stop_sequences", "END,###,<|im_end|>"),
]


@pytest.mark.parametrize("ir_name, value, field, expected", SAMPLING_ROWS)
def test_input_mapping_row(ir_name, value, field, expected):
    assert sent_input(backend(), chat(**{ir_name: value}))[field] == expected


@pytest.mark.parametrize("ir_name, value, field, expected", SAMPLING_ROWS)
def test_unset_parameters_are_not_sent(ir_name, value, field, expected):
    inp = sent_input(backend(), chat())
    assert field not in inp or (field == "stop_sequences" and inp[field] == "<|im_end|>")


def test_renamed_input_names_from_options_and_per_model():
    b = backend(input_names={"max_tokens": "max_tokens", "seed": ""})
    inp = sent_input(b, chat(max_tokens=5, seed=1))
    assert inp["max_tokens"] == 5 and "max_new_tokens" not in inp and "seed" not in inp
    t = target(params={"input_names": {"max_tokens": "max_length"}, "min_tokens": 1})
    inp = sent_input(b, chat(max_tokens=5), t)
    assert inp["max_length"] == 5 and inp["min_tokens"] == 1 and "input_names" not in inp


def test_fixed_params_override_client_values():
    inp = sent_input(backend(), chat(temperature=0.9), target(params={"temperature": 0.1}))
    assert inp["temperature"] == 0.1


def test_default_max_tokens_fills_in():
    assert sent_input(backend(), chat(), target(default_max_tokens=300))["max_new_tokens"] == 300


def test_stop_with_comma_is_refused():
    with pytest.raises(ProxyError) as err:
        backend().chat_request(chat(stop=["a,b"]), target())
    assert err.value.kind == "unsupported" and err.value.param == "stop"


def test_template_mode_renders_whole_conversation():
    req = chat(messages=[ir.Message("system", [ir.Text("be brief")]), ir.Message("user", [ir.Text("a")]),
                         ir.Message("assistant", [ir.Text("b")]), ir.Message("user", [ir.Text("c")])])
    inp = sent_input(backend(), req)
    assert inp["prompt"] == "system:be brief|user:a|assistant:b|user:c"
    assert inp["prompt_template"] == "{prompt}"
    assert "system_prompt" not in inp


def test_template_mode_without_template_is_a_config_error():
    with pytest.raises(ProxyError) as err:
        backend().chat_request(chat(), Target(model="meta/llama"))
    assert err.value.kind == "server"


def test_simple_mode_sends_last_user_text_and_system():
    req = chat(system=[ir.Text("sys A")],
               messages=[ir.Message("system", [ir.Text("sys B")]), ir.Message("user", [ir.Text("first")]),
                         ir.Message("assistant", [ir.Text("ok")]),
                         ir.Message("user", [ir.Text("second"), ir.Image(url="https://x/i.png"), ir.Text("more")])])
    inp = sent_input(backend(prompt_mode="simple"), req)
    assert inp == {"prompt": "second\nmore", "system_prompt": "sys A\nsys B"}


def test_simple_mode_needs_a_user_message():
    with pytest.raises(ProxyError) as err:
        backend(prompt_mode="simple").chat_request(chat(messages=[ir.Message("assistant", [ir.Text("x")])]),
                                                   target())
    assert err.value.kind == "invalid_request"


@pytest.mark.parametrize("mode, expected", [("template", {"prompt": "raw", "prompt_template": "{prompt}"}),
                                            ("simple", {"prompt": "raw"})])
def test_raw_completion_prompt_is_not_templated(mode, expected):
    assert sent_input(backend(prompt_mode=mode), chat(prompt="raw", messages=[])) == expected


# -- non-stream responses and polling -------------------------------------------------------------

@pytest.mark.parametrize("output, text", [(["Once", " upon", " a", " time"], "Once upon a time"),
                                          ("whole string", "whole string"), (None, "")])
def test_succeeded_prediction(output, text):
    body = prediction("succeeded", output=output, metrics={"input_token_count": 26, "output_token_count": 84})
    resp = backend().chat_response(body, chat(), target())
    assert isinstance(resp, ir.ChatResponse)
    assert [p.text for p in resp.choices[0].parts] == ([text] if text else [])
    assert resp.choices[0].finish_reason == "stop" and resp.id == "p1"
    assert resp.usage == ir.Usage(input_tokens=26, output_tokens=84)


def test_usage_absent_without_metrics():
    resp = backend().chat_response(prediction("succeeded", output="x"), chat(), target())
    assert resp.usage is None


@pytest.mark.parametrize("out_tokens, finish", [(64, "length"), (63, "stop")])
def test_length_detected_from_output_token_count(out_tokens, finish):
    body = prediction("succeeded", output="x", metrics={"input_token_count": 1, "output_token_count": out_tokens})
    assert backend().chat_response(body, chat(max_tokens=64), target()).choices[0].finish_reason == finish


def test_non_text_output_is_a_protocol_error():
    with pytest.raises(ProxyError) as err:
        backend().chat_response(prediction("succeeded", output=[{"url": "x"}]), chat(), target())
    assert err.value.kind == "upstream_protocol"


@pytest.mark.parametrize(
    "status, error, kind",
    [("failed", "CUDA out of memory", "server"), ("canceled", None, "server"),
     ("failed", "This model's maximum context length is 4096 tokens", "context_length"),
     ("failed", None, "server")],
)
def test_failed_and_canceled_predictions(status, error, kind):
    with pytest.raises(ProxyError) as err:
        backend().chat_response(prediction(status, error=error), chat(), target())
    assert err.value.kind == kind
    if error:
        assert err.value.message == error


def test_polling_follow_up_sequence():
    """starting -> processing -> succeeded: two GET follow-ups, then the response."""
    b, req, t = backend(), chat(), target()
    bodies = [prediction("starting"), prediction("processing", output=["par"]),
              prediction("succeeded", output=["par", "tial"])]
    first = b.chat_response(bodies[0], req, t)
    second = b.chat_response(bodies[1], req, t)
    for fu in (first, second):
        assert isinstance(fu, FollowUp)
        assert fu.request.method == "GET" and fu.request.url == "https://api.replicate.com/v1/predictions/p1"
        assert fu.request.headers["Authorization"] == "Bearer r8_key" and not fu.request.stream
        assert 0.5 <= fu.delay <= 5.0
    final = b.chat_response(bodies[2], req, t)
    assert isinstance(final, ir.ChatResponse) and final.choices[0].parts == [ir.Text("partial")]


def test_poll_url_falls_back_to_id():
    body = jsonio.dumps({"id": "abc", "status": "starting"})
    fu = backend().chat_response(body, chat(), target())
    assert fu.request.url == "https://api.replicate.com/v1/predictions/abc"


# The prediction's URLs come from the upstream and are sent the API key: only trusted origins are followed.
@pytest.mark.parametrize("get_url", [
    "https://evil.example/v1/predictions/p1", "http://api.replicate.com/v1/predictions/p1",
    "https://api.replicate.com:8443/v1/predictions/p1", "https://r8@evil.example/x",
    "https://api.replicate.com\\@evil.example/", "https://stream.replicate.com/v1/predictions/p1", "not a url",
])
def test_poll_url_off_the_api_origin_is_replaced_by_the_id_url(get_url):
    body = jsonio.dumps({"id": "p1", "status": "starting", "urls": {"get": get_url}})
    fu = backend().chat_response(body, chat(), target())
    assert fu.request.url == "https://api.replicate.com/v1/predictions/p1"


@pytest.mark.parametrize("pid", ["..", ".", ""])
def test_poll_without_a_usable_url_or_id_is_a_protocol_error(pid):
    body = jsonio.dumps({"id": pid, "status": "starting", "urls": {"get": "https://evil.example/x"}})
    with pytest.raises(ProxyError) as err:
        backend().chat_response(body, chat(), target())
    assert err.value.kind == "upstream_protocol"


def test_poll_id_is_one_encoded_segment():
    body = jsonio.dumps({"id": "../../v1/account?x=1", "status": "starting"})
    fu = backend().chat_response(body, chat(), target())
    assert fu.request.url == "https://api.replicate.com/v1/predictions/..%2F..%2Fv1%2Faccount%3Fx%3D1"


@pytest.mark.parametrize("stream_url", [
    "https://evil.example/v1/predictions/p1", "http://stream.replicate.com/v1/predictions/p1",
    "https://stream.replicate.com:8443/p1", "https://evilreplicate.com/p1", "https://replicate.com.evil.example/p1",
    "https://r8@stream.replicate.com/p1", "https://stream.replicate.com\\@evil.example/p1", "javascript:alert(1)",
])
def test_stream_url_off_trusted_hosts_is_refused(stream_url):
    body = prediction("starting", urls={"stream": stream_url})
    with pytest.raises(ProxyError) as err:
        backend().chat_response(body, chat(stream=True), target())
    assert err.value.kind == "upstream_protocol" and "evil" not in err.value.message


def test_stream_hosts_option():
    body = prediction("starting", urls={"stream": "https://streaming-api.svc.us.c.replicate.net/v1/streams/p1"})
    assert backend().chat_response(body, chat(stream=True), target()).request.url.endswith("/streams/p1")
    with pytest.raises(ProxyError):
        backend(stream_hosts=[]).chat_response(body, chat(stream=True), target())
    own = ReplicateBackend("http://127.0.0.1:9000", "k", {}, msgspec.convert({"stream_hosts": []}, Options))
    same_origin = prediction("starting", urls={"stream": "http://127.0.0.1:9000/stream/v1/predictions/p1"})
    assert own.chat_response(same_origin, chat(stream=True), target()).request.headers["Authorization"] == "Bearer k"


@pytest.mark.parametrize("age, delay", [(0, 0.5), (1, 1.0), (2, 1.5), (3.5, 2.25), (100, 5.0), (-10, 0.5)])
def test_poll_delay_backs_off_with_age(age, delay):
    b = backend(poll_interval=0.5, poll_backoff=1.5, poll_max_interval=5)
    pred = _Prediction(id="p", status="processing", created_at="2024-01-01T00:00:00Z")
    created = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()
    assert b.poll_delay(pred, now=created + age) == pytest.approx(delay)


def test_poll_delays_grow_geometrically():
    """Successive delays from age alone reproduce interval * backoff**n (until the cap)."""
    b = backend(poll_interval=0.5, poll_backoff=2, poll_max_interval=100)
    pred = _Prediction(id="p", status="processing", created_at="2024-01-01T00:00:00Z")
    now, delays = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp(), []
    for _ in range(5):
        delays.append(b.poll_delay(pred, now=now))
        now += delays[-1]
    assert delays == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0])


@pytest.mark.parametrize("body", [b"not json", b'{"status": 3}', b"[]"])
def test_invalid_prediction_body(body):
    with pytest.raises(ProxyError) as err:
        backend().chat_response(body, chat(), target())
    assert err.value.kind == "upstream_protocol"


def test_unknown_status_is_a_protocol_error():
    with pytest.raises(ProxyError) as err:
        backend().chat_response(prediction("queued"), chat(), target())
    assert err.value.kind == "upstream_protocol"


# -- streaming -----------------------------------------------------------------------------------

def test_stream_create_answer_becomes_stream_follow_up():
    fu = backend().chat_response(prediction("starting"), chat(stream=True), target())
    assert isinstance(fu, FollowUp)
    assert fu.request.url == "https://stream.replicate.com/v1/predictions/p1"
    assert fu.request.method == "GET" and fu.request.stream is True and fu.request.body is None
    assert fu.request.headers["Accept"] == "text/event-stream"
    assert fu.request.headers["Authorization"] == "Bearer r8_key"


def test_stream_without_stream_url_is_unsupported():
    body = jsonio.dumps({"id": "p1", "status": "starting", "urls": {"get": "x"}})
    with pytest.raises(ProxyError) as err:
        backend().chat_response(body, chat(stream=True), target())
    assert err.value.kind == "unsupported"


def test_stream_create_failure_raises():
    with pytest.raises(ProxyError):
        backend().chat_response(prediction("failed", error="boom"), chat(stream=True), target())


STREAM = (
    b"event: logs\nid: 0\ndata: loading\n\n"
    b"event: output\nid: 1\ndata:  Hello\n\n"
    b"event: output\nid: 2\ndata: line one\ndata: line two\ndata: \n\n"
    b"event: output\nid: 3\r\ndata: \xf0\x9f\xa6\x99 end\r\n\r\n"
    b": keep-alive\n\n"
    b"event: done\nid: 4\ndata: {}\n\n"
)
STREAM_EVENTS = [
    ir.Start(), ir.BlockStart(0, "text"), ir.TextDelta(0, " Hello"), ir.TextDelta(0, "line one\nline two\n"),
    ir.TextDelta(0, "🦙 end"), ir.BlockEnd(0), ir.Finish("stop", raw="succeeded"), ir.End(),
]


def decode_whole(data: bytes) -> list[ir.Event]:
    d = ReplicateStreamDecoder()
    return d.feed(data) + d.close()


def decode_bytewise(data: bytes) -> list[ir.Event]:
    d = ReplicateStreamDecoder()
    out = []
    for i in range(len(data)):
        out += d.feed(data[i : i + 1])
    return out + d.close()


def decode_split(data: bytes, cut: int) -> list[ir.Event]:
    d = ReplicateStreamDecoder()
    return d.feed(data[:cut]) + d.feed(data[cut:]) + d.close()


def merged_text(events: list[ir.Event]) -> list:
    """Events with consecutive TextDeltas merged (how deltas split is framing, not content)."""
    out: list = []
    for ev in events:
        if isinstance(ev, ir.TextDelta) and out and isinstance(out[-1], ir.TextDelta):
            out[-1] = ir.TextDelta(0, out[-1].text + ev.text)
        else:
            out.append(ev)
    return out


def test_stream_fed_whole_bytewise_and_every_split():
    assert decode_whole(STREAM) == STREAM_EVENTS
    assert decode_bytewise(STREAM) == STREAM_EVENTS
    for cut in range(len(STREAM) + 1):
        assert decode_split(STREAM, cut) == STREAM_EVENTS, cut


def test_stream_folds_to_exact_text():
    resp = ir.fold_events(decode_whole(STREAM), model="m", id="i", created=0)
    assert resp.choices[0].parts == [ir.Text(" Helloline one\nline two\n🦙 end")]
    assert merged_text(decode_bytewise(STREAM))[2] == ir.TextDelta(0, " Helloline one\nline two\n🦙 end")


def test_empty_stream_without_output():
    assert decode_whole(b"event: done\nid: 1\ndata: {}\n\n") == [
        ir.Start(), ir.Finish("stop", raw="succeeded"), ir.End()]


def test_events_after_done_are_ignored():
    data = b"event: done\nid: 1\ndata: {}\n\nevent: output\nid: 2\ndata: late\n\n"
    assert not any(isinstance(e, ir.TextDelta) for e in decode_whole(data))


@pytest.mark.parametrize(
    "data, kind, message",
    [
        (b'event: error\nid: 1\ndata: {"detail": "CUDA out of memory"}\n\n', "server", "CUDA out of memory"),
        (b'event: error\nid: 1\ndata: {"detail": "maximum context length is 4096 tokens"}\n\n', "context_length",
         None),
        (b"event: error\nid: 1\ndata: plain failure\n\n", "server", "plain failure"),
        (b'event: done\nid: 1\ndata: {"reason": "canceled"}\n\n', "server", "the Replicate prediction was canceled"),
        (b'event: done\nid: 1\ndata: {"reason": "error"}\n\n', "server", "the Replicate prediction failed"),
        (b"event: done\nid: 1\ndata: {oops\n\n", "upstream_protocol", None),
    ],
)
def test_in_band_errors(data, kind, message):
    prefix = b"event: output\nid: 0\ndata: part\n\n"
    for decode in (decode_whole, decode_bytewise):
        with pytest.raises(ProxyError) as err:
            decode(prefix + data)
        assert err.value.kind == kind
        if message:
            assert err.value.message == message


@pytest.mark.parametrize("data", [b"", b"event: output\nid: 1\ndata: cut", b"event: output\nid: 1\ndata: a\n\n"])
def test_stream_without_done_is_truncated(data):
    with pytest.raises(ProxyError) as err:
        decode_whole(data)
    assert err.value.kind == "upstream_protocol"


# -- HTTP errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "status, headers, body, kind, message, retry_after",
    [
        (422, {}, {"title": "Input validation failed", "detail": "input.prompt: Required", "status": 422},
         "invalid_request", "input.prompt: Required", None),
        (429, {"retry-after": "3"}, {"title": "Too Many Requests", "detail": "throttled", "status": 429},
         "rate_limit", "throttled", 3.0),
        (401, {}, {"title": "Unauthenticated", "detail": "Invalid token", "status": 401}, "authentication",
         "Invalid token", None),
        (404, {}, {"title": "Not found", "status": 404}, "not_found", "Not found", None),
        (402, {}, {"title": "Payment Required", "detail": "insufficient credit", "status": 402},
         "quota_exhausted", "insufficient credit", None),
        (500, {}, None, "server", "upstream returned HTTP 500", None),
        (422, {}, {"detail": "Prompt exceeds the maximum context length", "status": 422}, "context_length", None,
         None),
    ],
)
def test_parse_error(status, headers, body, kind, message, retry_after):
    raw = jsonio.dumps(body) if body is not None else b"<html>oops</html>"
    err = backend().parse_error(status, headers, raw)
    assert err.kind == kind and err.retry_after == retry_after and err.upstream_status == status
    if message:
        assert err.message == message
    assert "replicate.com" not in err.message


def test_class_declarations():
    assert ReplicateBackend.provider == "replicate" and ReplicateBackend.family is None
    assert ReplicateBackend.uses_chat_template is True
    assert set(ReplicateBackend.supported_params) <= set(ir.OPTIONAL_PARAMS)
    assert backend().base_url == "https://api.replicate.com"
    anonymous = ReplicateBackend("", None, {}, Options()).chat_request(chat(), target())
    assert anonymous.url.startswith("https://api.replicate.com/v1/") and "Authorization" not in anonymous.headers
