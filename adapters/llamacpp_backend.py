"""llama.cpp `llama-server` native backend: `POST /completion` with a prompt rendered by a chat template.

(llama-server's OpenAI routes are served by the openai family; this adapter is for its native API.)

Quirks of the backend, and what this adapter does about them:
- Prompt only: chat messages are rendered with the model's chat template (`Target.chat_template`),
  whose stop strings are added to the client's (deduplicated).  A legacy completion prompt is sent
  verbatim, with the client's stop strings only.
- No tools, no reasoning control, no logprobs in the IR's sense: not in `supported_params`.
- Renamed: `max_tokens` -> `n_predict`, `repetition_penalty` -> `repeat_penalty`; `response_format`
  becomes `json_schema` (the schema, or `{}` = any JSON value for `json_object`), which the server
  compiles to a grammar.
- `cache_prompt` (KV-cache reuse across requests) is on by default (backend option).
- Answers: `content`, `stop_type` eos/word -> stop, limit -> length (anything else -> stop, raw kept);
  `stopping_word` -> `stop_sequence`, but only when it is one of the *client's* stop strings (a
  template's end-of-turn marker is not something the client asked for).
- Usage: `tokens_evaluated` is the whole prompt, `tokens_predicted` the output; older servers only
  have `timings.prompt_n` (uncached part) + `timings.cache_n`, and `timings.predicted_n`.
- Streams are SSE `data: {"content": ..., "stop": false}` events; the last has `"stop": true` and the
  counts.  There is no `[DONE]`.  Errors: current servers send `data: {"error": {...}}`, older ones an
  `error: {...}` line -- a field the SSE algorithm ignores.  Every llama-server event is one line, so
  the lines are framed here (adapters.sse line splitter) and both spellings are recognised.
- Errors are `{"error": {"code", "message", "type"}}`; the `type` decides the kind
  (`exceed_context_size_error` -> context_length, `unavailable_error` -> overloaded, ...).
- No response id: one is synthesised.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from . import ir, jsonio
from .base import Backend, HttpRequest, LoadMetricNames, Target
from .common import FramedStreamDecoder, json_headers, merge_params, synth_id
from .errors import ProxyError, from_upstream, parse_retry_after
from .sse import NDJSONParser

_SAMPLING = (  # IR field -> /completion field
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("top_k", "top_k"),
    ("min_p", "min_p"),
    ("repetition_penalty", "repeat_penalty"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
    ("seed", "seed"),
)

_FINISH: dict[str, ir.FinishReason] = {"eos": "stop", "word": "stop", "limit": "length"}

# llama-server error `type` -> kind (server/utils.hpp format_error_response)
_ERROR_KINDS = {
    "invalid_request_error": "invalid_request",
    "exceed_context_size_error": "context_length",
    "authentication_error": "authentication",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "not_supported_error": "unsupported",
    "unavailable_error": "overloaded",
    "server_error": "server",
}


# llama-server --metrics: deferred = waiting for a free slot, processing = slots busy.
LOAD_METRICS = LoadMetricNames(waiting=("llamacpp:requests_deferred",), running=("llamacpp:requests_processing",),
                               kv_cache=("llamacpp:kv_cache_usage_ratio",))


class Options(msgspec.Struct, forbid_unknown_fields=True):
    cache_prompt: bool = True  # reuse the KV cache of a shared prompt prefix
    extra: dict[str, Any] = msgspec.field(default_factory=dict)  # fixed /completion fields (samplers, dry_*, ...)


class _Timings(msgspec.Struct):
    prompt_n: int | None = None
    predicted_n: int | None = None
    cache_n: int | None = None


class _Event(msgspec.Struct):
    """A `/completion` answer, or one streamed event (only content/stop until the last)."""

    content: str = ""
    stop: bool = False
    model: str | None = None
    stop_type: str | None = None
    stopping_word: str | None = None
    tokens_evaluated: int | None = None
    tokens_predicted: int | None = None
    timings: _Timings | None = None
    error: Any = None


_event_decoder = jsonio.decoder(_Event)


def _decode(data: bytes) -> _Event:
    try:
        return _event_decoder.decode(data)
    except (jsonio.DecodeError, jsonio.ValidationError):
        raise ProxyError("upstream_protocol", "llama.cpp sent an answer that cannot be parsed") from None


def _error(err: Any, status: int | None, headers: Mapping[str, str] | None) -> ProxyError:
    """llama-server's `{"code", "message", "type"}` error object -> ProxyError (typed when possible)."""
    if not isinstance(err, dict):
        err = {"message": err if isinstance(err, str) else ""}
    message = err.get("message") if isinstance(err.get("message"), str) else ""
    code = err.get("code") if isinstance(err.get("code"), int) else None
    upstream = status if status is not None else code
    kind = _ERROR_KINDS.get(err.get("type"))  # type: ignore[arg-type]
    # The server labels anything it does not classify "invalid_request_error"; the HTTP status is
    # then the better witness (a 429 or 503 from a fronting proxy is not the client's fault).
    if kind is None or (kind == "invalid_request" and upstream not in (None, 400, 422)):
        return from_upstream(upstream or 500, message, headers)
    return ProxyError(
        kind,
        message or f"llama.cpp reported {err.get('type')}",
        code="context_length_exceeded" if kind == "context_length" else err.get("type"),
        retry_after=parse_retry_after(headers) if headers is not None else None,
        upstream_status=upstream,
    )


def _usage(ev: _Event) -> ir.Usage:
    t = ev.timings or _Timings()
    cached = t.cache_n or 0
    prompt = ev.tokens_evaluated if ev.tokens_evaluated is not None else (t.prompt_n or 0) + cached
    output = ev.tokens_predicted if ev.tokens_predicted is not None else t.predicted_n or 0
    return ir.Usage(input_tokens=prompt, output_tokens=output, cached_input_tokens=cached)


def _finish(ev: _Event, client_stops: list[str]) -> ir.Finish:
    word = ev.stopping_word if ev.stop_type == "word" and ev.stopping_word in client_stops else None
    return ir.Finish(_FINISH.get(ev.stop_type or "", "stop"), raw=ev.stop_type, stop_sequence=word)


class LlamaCppStream(FramedStreamDecoder):
    """llama-server `/completion` SSE -> IR events.

    How this works: every llama-server event is a single line (`data: <json>`, or `error: <json>` on
    older builds), so complete lines come from the NDJSON line framing and their field name is
    checked here; comments (`: ping`) are skipped.  Content opens one text block; the `"stop": true`
    event closes it and carries finish and usage.  Anything after it is ignored; `close()` raises if
    it never came.
    """

    __slots__ = ("_stops", "_started", "_open", "id")
    truncated = "llama.cpp stream ended before its final (stop) event"
    hold_errors = True

    def __init__(self, client_stops: list[str]) -> None:
        super().__init__(NDJSONParser())
        self._stops = client_stops
        self._started = False
        self._open = False
        self.id = synth_id("cmpl-")

    def _frame(self, line: bytes, out: list[ir.Event]) -> None:
        name, sep, value = line.partition(b":")
        if not sep or not name:  # `: ping` comments, or nothing SSE at all
            return
        value = value[1:] if value[:1] == b" " else value
        if name == b"error":
            try:
                err = jsonio.loads(value)
            except jsonio.DecodeError:
                err = {}
            raise _error(err, None, None)
        if name == b"data":
            self.apply(_decode(value), out)

    def apply(self, ev: _Event, out: list[ir.Event]) -> None:
        if ev.error is not None:
            raise _error(ev.error, None, None)
        if self.done:
            return
        if not self._started:
            self._started = True
            out.append(ir.Start(id=self.id, model=ev.model, created=int(time.time())))
        if ev.content:
            if not self._open:
                self._open = True
                out.append(ir.BlockStart(0, "text"))
            out.append(ir.TextDelta(0, ev.content))
        if ev.stop:
            if self._open:
                out.append(ir.BlockEnd(0))
            out += [_finish(ev, self._stops), ir.UsageEvent(_usage(ev)), ir.End()]
            self.done = True


class LlamaCppBackend(Backend):
    provider: ClassVar[str] = "llamacpp"
    family: ClassVar[str | None] = None
    uses_chat_template: ClassVar[bool] = True
    Options: ClassVar[type[msgspec.Struct]] = Options
    supported_params: ClassVar[frozenset[str]] = frozenset(
        {
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "presence_penalty",
            "frequency_penalty",
            "repetition_penalty",
            "seed",
            "stop",
            "response_format",
        }
    )
    renamed_params: ClassVar[Mapping[str, str]] = {
        "max_tokens": "n_predict",
        "repetition_penalty": "repeat_penalty",
        "response_format": "json_schema",
    }

    load_metrics = LOAD_METRICS
    options: Options

    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        if req.prompt is not None:
            prompt, stops = req.prompt, list(req.stop)
        else:
            template = target.chat_template
            if template is None:
                raise ProxyError("server", "no chat template is configured for this llama.cpp model")
            prompt, stops = template.render(req), [*req.stop, *template.stop]
        body: dict[str, Any] = dict(self.options.extra)
        body.update(prompt=prompt, stream=req.stream, cache_prompt=self.options.cache_prompt)
        max_tokens = req.max_tokens if req.max_tokens is not None else target.default_max_tokens
        if max_tokens is not None:
            body["n_predict"] = max_tokens
        if stops:
            body["stop"] = list(dict.fromkeys(stops))
        for field, name in _SAMPLING:
            value = getattr(req, field)
            if value is not None:
                body[name] = value
        rf = req.response_format
        if rf is not None and rf.type != "text":
            body["json_schema"] = rf.schema if rf.type == "json_schema" and rf.schema is not None else {}
        merge_params(body, target.params)
        return HttpRequest(
            url=self.base_url + "/completion",
            body=jsonio.dumps(body),
            headers=json_headers(self.api_key, self.extra_headers),
            stream=req.stream,
        )

    def chat_response(self, body: bytes, req: ir.ChatRequest, target: Target) -> ir.ChatResponse:
        decoder = self.stream_decoder(req, target)
        events: list[ir.Event] = []
        ev = _decode(body)
        decoder.apply(msgspec.structs.replace(ev, stop=True) if ev.error is None else ev, events)
        return ir.fold_events(events, model=target.model, id=decoder.id, created=int(time.time()))

    def stream_decoder(self, req: ir.ChatRequest, target: Target) -> LlamaCppStream:
        return LlamaCppStream(list(req.stop))

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
        try:
            err = jsonio.loads(body).get("error")
        except (jsonio.DecodeError, AttributeError):
            err = None  # plain-text bodies (e.g. from a fronting proxy) never reach the client
        return _error(err, status, headers)
