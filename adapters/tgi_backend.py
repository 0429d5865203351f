"""Backend for Hugging Face text-generation-inference (TGI) native API: `/generate`, `/generate_stream`.

TGI's native endpoints take one prompt string, so chat requests are rendered with the model's chat
template (`target.chat_template`); `req.prompt` (legacy completions) is sent as is.

Quirks handled here:
- `temperature: 0` is a 422 in TGI: sent as `do_sample: false` with no temperature.  `top_p` must be
  strictly between 0 and 1: 1.0 is omitted, <= 0 becomes greedy decoding.  `top_k <= 0` is omitted.
- `stop` is an array capped by the server's `max_stop_sequences` (launcher default 4): the client's stops
  go first, then the template's end-of-turn strings while room is left (`Options.max_stop_sequences`).
- `details: true` is always sent (without it there is no finish reason nor token counts);
  `return_full_text: false` is explicit (the old Inference API defaulted to true).
- `response_format` becomes `grammar` `{"type": "json", "value": schema}` (`{}` for json_object).
- Dropped (not offered by the native API): tools / tool_choice, presence_penalty, min_p, logprobs,
  logit_bias, n (TGI's `best_of` is a different thing), reasoning, user, metadata.
- TGI keeps a matched stop sequence in the output: it is stripped (non-stream and stream; streamed text
  that could be the start of a stop sequence is held back until it is known not to be one).  The
  matched string is reported as `stop_sequence` only when it was one of the client's.
- Stream: one `data:` event per token, no `[DONE]`; special tokens (EOS) carry no text for the client;
  the last event has the *full* `generated_text` (never appended again) and `details`
  (`finish_reason`, `generated_tokens`, `input_length`).  A stream ending before it is truncation.
- Usage: stream from `details.input_length` / `generated_tokens`.  The non-stream body has no prompt
  count: TGI puts it in the `x-prompt-tokens` response header (`prompt_tokens_from_headers`), and
  in `details.prefill` when `Options.prefill_usage` asks TGI for it (costly for long prompts).
- The chat template's BOS is stripped from the prompt (TGI's tokenizer adds its own) unless
  `Options.send_bos`.
- Errors are `{"error", "error_type"}` (also in-band in a stream): validation -> invalid_request or
  context_length (the InputLength wording), overloaded (HTTP 429) -> overloaded, generation (424) and
  incomplete_generation -> server.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from . import chat_templates, ir, jsonio
from .base import Backend, HttpRequest, LoadMetricNames, Target
from .common import FramedStreamDecoder, json_headers, synth_id
from .errors import ProxyError, from_upstream, looks_like_context_length, parse_retry_after
from .sse import SSEEvent, SSEParser


# TGI reports no KV-cache gauge; its queue and current batch size are what its router balances on.
LOAD_METRICS = LoadMetricNames(waiting=("tgi_queue_size",), running=("tgi_batch_current_size",))


class TGIOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    max_stop_sequences: int = 4  # the server's --max-stop-sequences
    send_bos: bool = False  # keep the template's BOS in the prompt (servers that do not add one)
    prefill_usage: bool = False  # non-stream: ask for decoder_input_details to count prompt tokens


# --------------------------------------------------------------------------------------------------
# Wire types (decoders built once)


class _Token(msgspec.Struct):
    text: str = ""
    special: bool = False


class _Details(msgspec.Struct):
    finish_reason: str | None = None
    generated_tokens: int | None = None
    input_length: int | None = None  # stream details only
    prefill: list[Any] | None = None  # non-stream, with decoder_input_details


class _Generation(msgspec.Struct):
    generated_text: str = ""
    details: _Details | None = None


class _StreamEvent(msgspec.Struct):
    token: _Token | None = None
    generated_text: str | None = None
    details: _Details | None = None
    error: str | None = None
    error_type: str | None = None


class _ErrorBody(msgspec.Struct):
    error: Any = None  # TGI: a string; the HF Inference API also sent a list, or an object
    error_type: str | None = None
    estimated_time: float | None = None  # HF Inference API: model still loading


_generation_decoder = jsonio.decoder(_Generation | list[_Generation])
_event_decoder = jsonio.decoder(_StreamEvent)
_error_decoder = jsonio.decoder(_ErrorBody)

FINISH_REASONS: dict[str, ir.FinishReason] = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}

# error_type -> ProxyError kind ("validation" may become context_length by its wording).
ERROR_KINDS: dict[str, str] = {
    "validation": "invalid_request",
    "template_error": "invalid_request",
    "missing_template_variable": "invalid_request",
    "tool_error": "invalid_request",
    "overloaded": "overloaded",
    "generation": "server",
    "incomplete_generation": "server",
    "incomplete_generation_stream": "server",
    "stream_serialization_error": "server",
    "healthcheck": "upstream_unavailable",
}


# --------------------------------------------------------------------------------------------------
# Request


def generation_parameters(req: ir.ChatRequest, target: Target, stops: list[str]) -> dict[str, Any]:
    """TGI `parameters` for one request (shared with the Hugging Face Inference API)."""
    p: dict[str, Any] = {}
    max_tokens = req.max_tokens if req.max_tokens is not None else target.default_max_tokens
    if max_tokens is not None:
        p["max_new_tokens"] = max_tokens
    greedy = False
    if req.temperature is not None:
        if req.temperature <= 0:
            greedy = True
        else:
            p["temperature"] = req.temperature
    if req.top_p is not None:
        if req.top_p <= 0:
            greedy = True
        elif req.top_p < 1:
            p["top_p"] = req.top_p
    if req.top_k is not None and req.top_k > 0:
        p["top_k"] = req.top_k
    if greedy:
        p.pop("temperature", None)
        p.pop("top_p", None)
        p.pop("top_k", None)
        p["do_sample"] = False
    elif "temperature" in p or "top_p" in p or "top_k" in p:
        p["do_sample"] = True
    if req.repetition_penalty is not None and req.repetition_penalty > 0:
        p["repetition_penalty"] = req.repetition_penalty
    if req.frequency_penalty is not None:
        p["frequency_penalty"] = req.frequency_penalty
    if stops:
        p["stop"] = stops
    if req.seed is not None:
        p["seed"] = req.seed
    grammar = _grammar(req.response_format)
    if grammar is not None:
        p["grammar"] = grammar
    p["return_full_text"] = False
    p["details"] = True
    p.update(target.params)
    return p


def _grammar(fmt: ir.ResponseFormat | None) -> dict[str, Any] | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_schema" and fmt.schema is not None:
        return {"type": "json", "value": fmt.schema}
    return {"type": "json", "value": {}}


def template_of(target: Target) -> chat_templates.ChatTemplate:
    return target.chat_template if target.chat_template is not None else chat_templates.get(None)


def prompt_and_stops(req: ir.ChatRequest, target: Target, options: TGIOptions) -> tuple[str, list[str]]:
    """The prompt string and the stop list: the client's stops first, template stops while room is left."""
    stops = list(dict.fromkeys(req.stop))
    if req.prompt is not None:
        return req.prompt, stops
    template = template_of(target)
    prompt = template.render(req)
    if not options.send_bos and template.bos_token and prompt.startswith(template.bos_token):
        prompt = prompt[len(template.bos_token) :]
    for s in template.stop:
        if s not in stops and len(stops) < options.max_stop_sequences:
            stops.append(s)
    return prompt, stops


def bearer_headers(api_key: str | None, extra: Mapping[str, str], stream: bool) -> dict[str, str]:
    return json_headers(api_key, {"accept": "text/event-stream" if stream else "application/json", **extra})


# --------------------------------------------------------------------------------------------------
# Response


def strip_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    """Remove the (longest) stop sequence `text` ends with; return the text and the matched stop."""
    best = None
    for s in stops:
        if s and text.endswith(s) and (best is None or len(s) > len(best)):
            best = s
    return (text[: len(text) - len(best)], best) if best else (text, None)


def held_back(pending: str, stops: list[str]) -> int:
    """How many trailing characters of `pending` could still be (the start of) a stop sequence."""
    longest = 0
    for s in stops:
        for k in range(min(len(s), len(pending)), longest, -1):
            if s.startswith(pending[-k:]):
                longest = k
                break
    return longest


def _finish(details: _Details | None, text: str, stops: list[str], client_stops: list[str]) -> tuple[str, ir.Finish]:
    raw = details.finish_reason if details is not None else None
    # Without details (HF serverless pipelines) the reason is unknown: a trailing stop is still cut.
    if raw in (None, "stop_sequence"):
        text, matched = strip_stop(text, stops)
    else:
        matched = None
    reason = FINISH_REASONS.get(raw or "", "stop")
    return text, ir.Finish(reason, raw, matched if matched in client_stops else None)


def generation_response(
    body: bytes, req: ir.ChatRequest, target: Target, stops: list[str]
) -> ir.ChatResponse:
    """A `/generate` object or a root-route / Inference API list `[{"generated_text": ...}]`."""
    try:
        data = _generation_decoder.decode(body)
    except (jsonio.DecodeError, jsonio.ValidationError) as exc:
        raise ProxyError("upstream_protocol", f"TGI response is not a generation: {exc}") from None
    if isinstance(data, list):
        if not data:
            raise ProxyError("upstream_protocol", "TGI returned an empty generation list")
        data = data[0]
    text, finish = _finish(data.details, data.generated_text, stops, req.stop)
    usage = None
    if data.details is not None:
        usage = ir.Usage(
            input_tokens=len(data.details.prefill or ()), output_tokens=data.details.generated_tokens or 0
        )
    return ir.ChatResponse(
        id=synth_id("tgi-", 32),
        model=target.model,
        created=int(time.time()),
        choices=[
            ir.Choice(
                parts=[ir.Text(text)] if text else [],
                finish_reason=finish.reason,
                raw_finish_reason=finish.raw,
                stop_sequence=finish.stop_sequence,
            )
        ],
        usage=usage,
    )


class TGIStreamDecoder(FramedStreamDecoder):
    """TGI token events -> IR events.

    How this works: every token's text (special tokens excepted) is appended to `_pending`; whatever
    part of `_pending` cannot be the start of a stop sequence is emitted at once, the rest is held.  The
    event carrying `generated_text` is the last: its token is handled like the others (the full
    `generated_text` is never re-emitted), then the held text is flushed minus a matched stop sequence,
    and Finish / Usage / End follow.  Anything after that event is ignored.
    """

    __slots__ = ("_model", "_stops", "_client_stops", "_pending", "_started", "_block")
    truncated = "TGI stream ended before its final event"

    def __init__(self, model: str, stops: list[str], client_stops: list[str]) -> None:
        super().__init__(SSEParser())
        self._model = model
        self._stops = stops
        self._client_stops = client_stops
        self._pending = ""
        self._started = False
        self._block = False

    def _frame(self, ev: SSEEvent, out: list[ir.Event]) -> None:
        data = ev.data
        if self.done or data.strip() == b"[DONE]":
            return
        try:
            msg = _event_decoder.decode(data)
        except (jsonio.DecodeError, jsonio.ValidationError) as exc:
            raise ProxyError("upstream_protocol", f"TGI stream event is not valid: {exc}") from None
        if msg.error is not None:
            raise tgi_error(None, msg.error, msg.error_type)
        if not self._started:
            self._started = True
            out.append(ir.Start(id=synth_id("tgi-", 32), model=self._model, created=int(time.time())))
        if msg.token is not None and not msg.token.special:
            self._pending += msg.token.text
        if msg.generated_text is None:
            keep = held_back(self._pending, self._stops)
            self._text(self._pending[: len(self._pending) - keep], out)
            self._pending = self._pending[len(self._pending) - keep :]
            return
        self.done = True
        text, finish = _finish(msg.details, self._pending, self._stops, self._client_stops)
        self._pending = ""
        self._text(text, out)
        if self._block:
            out.append(ir.BlockEnd(0))
        out.append(finish)
        if msg.details is not None:
            usage = ir.Usage(input_tokens=msg.details.input_length or 0, output_tokens=msg.details.generated_tokens or 0)
            out.append(ir.UsageEvent(usage))
        out.append(ir.End())

    def _text(self, text: str, out: list[ir.Event]) -> None:
        if not text:
            return
        if not self._block:
            self._block = True
            out.append(ir.BlockStart(0, "text"))
        out.append(ir.TextDelta(0, text))


# --------------------------------------------------------------------------------------------------
# Errors


def error_message(value: Any) -> str:
    """The message of an `error` field: a string, a list of strings, or an object with `message`."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return value["message"]
    return ""


def decode_error(body: bytes) -> _ErrorBody | None:
    try:
        return _error_decoder.decode(body)
    except (jsonio.DecodeError, jsonio.ValidationError):
        return None


def tgi_error(
    status: int | None, message: str, error_type: str | None, headers: Mapping[str, str] | None = None
) -> ProxyError:
    """The ProxyError for a TGI `{"error", "error_type"}` (an HTTP error, or in-band when status is None)."""
    kind = ERROR_KINDS.get(error_type or "")
    if kind is None:
        return from_upstream(status or 500, message, headers, code=error_type)
    code = error_type
    if kind == "invalid_request" and looks_like_context_length(message):
        kind, code = "context_length", "context_length_exceeded"
    return ProxyError(
        kind,
        message or f"TGI {error_type} error",
        code=code,
        retry_after=parse_retry_after(headers) if headers is not None else None,
        upstream_status=status,
    )


# --------------------------------------------------------------------------------------------------
# The backend


class TGIBackend(Backend):
    provider = "tgi"
    family = None
    Options = TGIOptions
    uses_chat_template = True
    supported_params = frozenset(
        {"temperature", "top_p", "top_k", "frequency_penalty", "repetition_penalty", "seed", "stop", "response_format"}
    )
    renamed_params = {"max_tokens": "max_new_tokens", "response_format": "grammar"}
    load_metrics = LOAD_METRICS

    options: TGIOptions

    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        prompt, stops = prompt_and_stops(req, target, self.options)
        params = generation_parameters(req, target, stops)
        if self.options.prefill_usage and not req.stream:
            params["decoder_input_details"] = True
        path = "/generate_stream" if req.stream else "/generate"
        return HttpRequest(
            url=self.base_url + path,
            body=jsonio.dumps({"inputs": prompt, "parameters": params}),
            headers=bearer_headers(self.api_key, self.extra_headers, req.stream),
            stream=req.stream,
        )

    def chat_response(self, body: bytes, req: ir.ChatRequest, target: Target) -> ir.ChatResponse:
        return generation_response(body, req, target, self._stops(req, target))

    def prompt_tokens_from_headers(self, headers: Mapping[str, str]) -> int | None:
        value = headers.get("x-prompt-tokens")
        return int(value) if value and value.isdigit() else None

    def stream_decoder(self, req: ir.ChatRequest, target: Target) -> TGIStreamDecoder:
        return TGIStreamDecoder(target.model, self._stops(req, target), req.stop)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
        err = decode_error(body)
        if err is None:
            return from_upstream(status, "", headers)
        return tgi_error(status, error_message(err.error), err.error_type, headers)

    def _stops(self, req: ir.ChatRequest, target: Target) -> list[str]:
        # Every stop we sent may end the text, template ones included; the prompt is not needed here.
        stops = list(dict.fromkeys(req.stop))
        if req.prompt is None:
            stops += [s for s in template_of(target).stop if s not in stops]
        return stops
