"""Replicate predictions API backend (`provider: replicate`): prompt-only models behind an async job API.

How a request flows (the proxy does the I/O; every step here is a pure function of bytes):

    non-stream: chat_request -> POST .../predictions with `Prefer: wait=N`
                chat_response(prediction) -> ChatResponse when `succeeded`,
                                          -> FollowUp(GET urls.get, delay) while `starting`/`processing`
                                             (the proxy sends it and calls chat_response again)
    stream:     chat_request -> POST .../predictions with `"stream": true` (HttpRequest.stream is False:
                the create call answers one JSON prediction)
                chat_response(prediction) -> FollowUp(GET urls.stream, Accept: text/event-stream, stream=True)
                the proxy feeds that body to stream_decoder(req, target)

Model names (`target.model`):
    "owner/name"            official model: POST /v1/models/{owner}/{name}/predictions (latest version)
    "owner/name:version"    POST /v1/predictions with {"version": "<version>"} (as the official SDK does)
    "<64 hex digits>"       a bare version id, POST /v1/predictions
A "::" right after the name is not a version separator (Replicate names cannot contain ":"), so the
emulator's scenario suffix ("meta/llama::status=429") stays part of the name.

Quirks (what this adapter drops, renames, synthesises):
- There is no chat schema: each model has its own input fields.  `Options.input_names` (and per model
  `target.params["input_names"]`) maps IR names to the model's fields; an empty name omits the field.
  Every other key of `target.params` is a fixed input field, merged last (configuration wins).
- `prompt_mode: template` (default) renders the whole conversation with the model's chat template and
  sends `prompt_template: "{prompt}"` so the model does not wrap it again; the template's stop strings
  are added to `stop_sequences`.  `prompt_mode: simple` sends only the last user message's text as
  `prompt` and the system text as `system_prompt`: earlier turns, assistant messages, tool calls and
  results are lost.  Images are never sent (no image input on text models).
- `max_tokens` is renamed (`max_new_tokens` by default; Llama 3 models want `max_tokens`) and falls back
  to `target.default_max_tokens`.  `stop` becomes one comma-joined `stop_sequences` string, so a stop
  string containing a comma cannot be expressed and is refused.  Tools, response_format, reasoning,
  logprobs, logit_bias, n, min_p and repetition_penalty are unsupported (policy drop/error).
- No finish reason exists.  `succeeded` is reported as `stop`, except `length` when the prediction's
  `output_token_count` reached the requested `max_tokens` (the only signal there is).  Streams
  cannot detect it and always finish with `stop`.
- Usage comes from `metrics.input_token_count` / `output_token_count` (non-stream only).  The stream
  carries no usage and the contract cannot fetch the prediction after `done`, so streams emit none.
- `failed` / `canceled` predictions arrive inside a 200 body and become ProxyErrors (context-length
  wording in the error text is recognised).  Stream `error` events ({"detail"}) and `done` with a
  `reason` raise; a stream that ends without `done` is `upstream_protocol`.
- Stream `output` data is plain text, not JSON: a token containing newlines arrives as several `data:`
  lines which the SSE parser joins with "\\n"; the bytes are kept exact.  `logs` events are ignored.
- The prediction's `urls.get` / `urls.stream` come from the upstream's answer and are sent the API key,
  so they are followed only on base_url's own origin (scheme, host, port); a stream URL may also be on
  an https host listed in `stream_hosts` (Replicate streams from its own streaming hosts).  Any other
  `urls.get` is replaced by `{base_url}/v1/predictions/{id}`; any other stream URL is upstream_protocol.
- Poll backoff is stateless: the next delay is `poll_interval + (poll_backoff - 1) * age`, capped at
  `poll_max_interval`, where `age` is the time since the prediction's `created_at`.  Measured from the
  first poll this is exactly the geometric schedule interval * backoff**n (age grows by each delay),
  without keeping an attempt counter anywhere; clock skew only shortens or lengthens the delays
  within [poll_interval, poll_max_interval].
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from . import ir, jsonio
from .base import Backend, FollowUp, HttpRequest, Target
from .common import FramedStreamDecoder, path_segment, url_origin
from .errors import ProxyError, bad_request, from_upstream, looks_like_context_length, unsupported
from .sse import SSEEvent, SSEParser

InputKey = Literal[
    "prompt",
    "system",
    "prompt_template",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
]

DEFAULT_INPUT_NAMES: Mapping[InputKey, str] = {
    "prompt": "prompt",
    "system": "system_prompt",
    "prompt_template": "prompt_template",
    "max_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "stop": "stop_sequences",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}

# IR sampling parameters copied into `input` under their (configurable) model field name.
_SAMPLING = ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty")

_VERSION_ID = re.compile(r"[0-9a-f]{64}")
_TERMINAL_FAILURES = ("failed", "canceled")
_PENDING = ("starting", "processing")


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Backend config keys for `provider: replicate`."""

    wait: Annotated[int, msgspec.Meta(ge=0, le=60)] = 60  # `Prefer: wait=N` seconds; 0 disables
    poll_interval: Annotated[float, msgspec.Meta(gt=0)] = 0.5  # first poll delay
    poll_backoff: Annotated[float, msgspec.Meta(ge=1)] = 1.5  # factor between successive polls
    poll_max_interval: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    input_names: dict[InputKey, str] = {}  # overrides of DEFAULT_INPUT_NAMES; "" omits the field
    prompt_mode: Literal["template", "simple"] = "template"
    # Hosts besides base_url's on which `urls.stream` is followed (https, port 443; "*." = subdomains).
    stream_hosts: tuple[str, ...] = ("*.replicate.com", "*.replicate.net")


class _Prediction(msgspec.Struct):
    """The fields of a prediction object this adapter reads (others are ignored)."""

    id: str = ""
    status: str = ""
    output: Any = None
    error: Any = None
    model: str | None = None
    created_at: str | None = None
    metrics: dict[str, Any] | None = None
    urls: dict[str, str] | None = None


class _Problem(msgspec.Struct):
    """RFC 7807 problem details, Replicate's error body."""

    detail: Any = None
    title: Any = None


_prediction_decoder = jsonio.decoder(_Prediction)
_problem_decoder = jsonio.decoder(_Problem)


# --------------------------------------------------------------------------------------------------
# Model names and URLs


def prediction_target(model: str) -> tuple[str, str | None]:
    """(path, version) for a model name: the create path, and the version id to put in the body."""
    if _VERSION_ID.fullmatch(model):
        return "/v1/predictions", model
    owner, slash, rest = model.partition("/")
    if not slash or not owner or not rest:
        raise bad_request(f"Replicate model {model!r} is not 'owner/name', 'owner/name:version' or a version id")
    _, colon, version = rest.partition(":")
    if colon and version and not version.startswith(":"):
        return "/v1/predictions", version
    return f"/v1/models/{path_segment(owner)}/{path_segment(rest)}/predictions", None


# --------------------------------------------------------------------------------------------------
# Request


def _text_of(parts: list[Any]) -> str:
    return "\n".join(p.text for p in parts if isinstance(p, ir.Text))


def _system_text(req: ir.ChatRequest) -> str:
    texts = [t.text for t in req.system] + [_text_of(m.parts) for m in req.messages if m.role == "system"]
    return "\n".join(t for t in texts if t)


def _last_user_text(req: ir.ChatRequest) -> str:
    for msg in reversed(req.messages):
        if msg.role == "user":
            return _text_of(msg.parts)
    raise bad_request("Replicate prompt_mode 'simple' needs a user message", param="messages")


def _stop_string(stops: list[str]) -> str:
    for s in stops:
        if "," in s:
            raise unsupported("Replicate takes stop sequences as one comma-separated string; "
                              f"{s!r} contains a comma", param="stop")
    return ",".join(stops)


class ReplicateBackend(Backend):
    provider = "replicate"
    family = None
    Options = Options
    uses_chat_template = True
    supported_params = frozenset(("stop",) + _SAMPLING)
    renamed_params = {"max_tokens": DEFAULT_INPUT_NAMES["max_tokens"], "stop": DEFAULT_INPUT_NAMES["stop"]}

    default_base_url = "https://api.replicate.com"

    def __init__(self, base_url: str, api_key: str | None, headers: Mapping[str, str], options: Options) -> None:
        super().__init__(base_url, api_key, headers, options)
        self._names: dict[str, str] = {**DEFAULT_INPUT_NAMES, **options.input_names}
        self._origin = url_origin(self.base_url + "/")

    def _headers(self, **extra: str) -> dict[str, str]:
        headers = dict(self.extra_headers)
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(extra)
        return headers

    def _input_names(self, target: Target) -> dict[str, str]:
        per_model = target.params.get("input_names")
        return {**self._names, **per_model} if per_model else self._names

    def _prompt_fields(self, req: ir.ChatRequest, target: Target) -> tuple[dict[InputKey, str], list[str]]:
        """The prompt-related input values (IR keys) and extra stop strings the prompt mode needs."""
        if req.prompt is not None:  # /v1/completions: a raw prompt, never templated
            raw_template = self.options.prompt_mode == "template"
            return ({"prompt": req.prompt, "prompt_template": "{prompt}"} if raw_template
                    else {"prompt": req.prompt}), []
        if self.options.prompt_mode == "simple":
            fields: dict[InputKey, str] = {"prompt": _last_user_text(req)}
            system = _system_text(req)
            if system:
                fields["system"] = system
            return fields, []
        template = target.chat_template
        if template is None:
            raise ProxyError("server", "Replicate prompt_mode 'template' needs a chat template for this model")
        return {"prompt": template.render(req), "prompt_template": "{prompt}"}, list(template.stop)

    def build_input(self, req: ir.ChatRequest, target: Target) -> dict[str, Any]:
        """The prediction's `input` object: prompt fields, sampling fields, then fixed per-model fields."""
        names = self._input_names(target)
        values: dict[str, Any] = {}
        prompt_fields, template_stops = self._prompt_fields(req, target)
        values.update(prompt_fields)
        max_tokens = req.max_tokens if req.max_tokens is not None else target.default_max_tokens
        if max_tokens is not None:
            values["max_tokens"] = max_tokens
        for key in _SAMPLING:
            value = getattr(req, key)
            if value is not None:
                values[key] = value
        stops = list(dict.fromkeys(req.stop + template_stops))
        if stops:
            values["stop"] = _stop_string(stops)
        out = {names[k]: v for k, v in values.items() if names.get(k)}
        out.update((k, v) for k, v in target.params.items() if k != "input_names")
        return out

    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        path, version = prediction_target(target.model)
        body: dict[str, Any] = {"input": self.build_input(req, target)}
        if version is not None:
            body["version"] = version
        headers = self._headers(**{"Content-Type": "application/json"})
        if req.stream:
            body["stream"] = True
        elif self.options.wait:
            headers["Prefer"] = f"wait={self.options.wait}"
        return HttpRequest(url=self.base_url + path, body=jsonio.dumps(body), headers=headers)

    # -- responses ------------------------------------------------------------------------------
    def chat_response(self, body: bytes, req: ir.ChatRequest, target: Target) -> ir.ChatResponse | FollowUp:
        pred = _decode_prediction(body)
        if pred.status in _TERMINAL_FAILURES:
            raise prediction_error(pred.status, pred.error)
        if req.stream:
            return self._stream_follow_up(pred)
        if pred.status == "succeeded":
            return _to_response(pred, req, target)
        if pred.status in _PENDING:
            return self._poll_follow_up(pred)
        raise ProxyError("upstream_protocol", f"Replicate prediction has unknown status {pred.status!r}")

    # The prediction's URLs come from the upstream's answer and get the API key: only the API's own
    # origin (and, for streams, Replicate's streaming hosts) is trusted with it.
    def _stream_follow_up(self, pred: _Prediction) -> FollowUp:
        url = (pred.urls or {}).get("stream")
        if not url:
            raise unsupported("this Replicate model does not support streaming", param="stream")
        origin = url_origin(url)
        if origin is None or (origin != self._origin and not self._stream_host(origin)):
            raise ProxyError("upstream_protocol", "Replicate gave a stream URL outside its API and streaming hosts")
        headers = self._headers(Accept="text/event-stream", **{"Cache-Control": "no-store"})
        return FollowUp(HttpRequest(url=url, headers=headers, method="GET", stream=True))

    def _poll_follow_up(self, pred: _Prediction) -> FollowUp:
        url = (pred.urls or {}).get("get")
        if not url or url_origin(url) != self._origin:
            if pred.id in ("", ".", ".."):
                raise ProxyError("upstream_protocol", "Replicate prediction has neither an id nor urls.get on its API host")
            url = f"{self.base_url}/v1/predictions/{path_segment(pred.id)}"
        return FollowUp(HttpRequest(url=url, headers=self._headers(), method="GET"), delay=self.poll_delay(pred))

    def _stream_host(self, origin: tuple[str, str, int]) -> bool:
        scheme, host, port = origin
        if scheme != "https" or port != 443:
            return False
        return any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in self.options.stream_hosts)

    def poll_delay(self, pred: _Prediction, now: float | None = None) -> float:
        """Seconds to wait before the next poll, from the prediction's age (see the module docstring)."""
        opts = self.options
        created = _epoch(pred.created_at)
        age = 0.0 if created is None else max(0.0, (time.time() if now is None else now) - created)
        return min(opts.poll_max_interval, opts.poll_interval + (opts.poll_backoff - 1.0) * age)

    def stream_decoder(self, req: ir.ChatRequest, target: Target) -> "ReplicateStreamDecoder":
        return ReplicateStreamDecoder()

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
        message = ""
        try:
            problem = _problem_decoder.decode(body)
            message = next((m for m in (problem.detail, problem.title) if isinstance(m, str) and m), "")
        except (jsonio.DecodeError, jsonio.ValidationError):
            pass
        if status == 402:  # "insufficient credit" / spend limit: retrying will not help
            return ProxyError("quota_exhausted", message or "Replicate account is out of credit",
                              upstream_status=status)
        return from_upstream(status, message, headers)


def _decode_prediction(body: bytes) -> _Prediction:
    try:
        return _prediction_decoder.decode(body)
    except (jsonio.DecodeError, jsonio.ValidationError) as exc:
        raise ProxyError("upstream_protocol", f"Replicate returned an invalid prediction: {exc}") from None


def prediction_error(status: str, error: Any) -> ProxyError:
    """The error for a `failed` / `canceled` prediction (or stream), from its error text."""
    if status == "canceled":
        return ProxyError("server", "the Replicate prediction was canceled")
    message = error if isinstance(error, str) and error else "the Replicate prediction failed"
    if looks_like_context_length(message):
        return ProxyError("context_length", message, code="context_length_exceeded")
    return ProxyError("server", message)


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def _output_text(output: Any) -> str:
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(piece, str) for piece in output):
        return "".join(output)  # token chunks: joined with "", never " "
    raise ProxyError("upstream_protocol", "Replicate prediction output is not text")


def _usage(metrics: dict[str, Any] | None) -> ir.Usage | None:
    metrics = metrics or {}
    tokens_in, tokens_out = metrics.get("input_token_count"), metrics.get("output_token_count")
    if not isinstance(tokens_in, int) and not isinstance(tokens_out, int):
        return None
    return ir.Usage(input_tokens=tokens_in if isinstance(tokens_in, int) else 0,
                    output_tokens=tokens_out if isinstance(tokens_out, int) else 0)


def _to_response(pred: _Prediction, req: ir.ChatRequest, target: Target) -> ir.ChatResponse:
    usage = _usage(pred.metrics)
    limit = req.max_tokens if req.max_tokens is not None else target.default_max_tokens
    hit_limit = usage is not None and limit is not None and usage.output_tokens >= limit
    text = _output_text(pred.output)
    created = _epoch(pred.created_at)
    return ir.ChatResponse(
        id=pred.id,
        model=pred.model or target.model,
        created=int(created if created is not None else time.time()),
        choices=[ir.Choice(parts=[ir.Text(text=text)] if text else [],
                           finish_reason="length" if hit_limit else "stop", raw_finish_reason=pred.status)],
        usage=usage,
    )


# --------------------------------------------------------------------------------------------------
# Stream


class ReplicateStreamDecoder(FramedStreamDecoder):
    """Replicate stream SSE (`output` plain text, `logs`, `error`, `done`) -> IR events.

    State: the SSE framer, whether Start / the single text block were emitted, and whether `done`
    arrived (anything after it is ignored; close() without it is a truncated stream).
    """

    __slots__ = ("_started", "_block_open")
    truncated = "the Replicate stream ended without its done event"

    def __init__(self) -> None:
        super().__init__(SSEParser())
        self._started = False
        self._block_open = False

    def _frame(self, ev: SSEEvent, out: list[ir.Event]) -> None:
        if self.done:
            return
        name, data = ev.event, ev.data
        if not self._started:
            self._started = True
            out.append(ir.Start())
        if name == "output":
            if data:
                if not self._block_open:
                    self._block_open = True
                    out.append(ir.BlockStart(0, "text"))
                out.append(ir.TextDelta(0, data.decode("utf-8", "replace")))
        elif name == "error":
            raise prediction_error("failed", _error_detail(data))
        elif name == "done":
            self._finish(data, out)
        # `logs` and unknown event types carry nothing for the client

    def _finish(self, data: bytes, out: list[ir.Event]) -> None:
        try:
            payload = jsonio.loads(data) if data.strip() else {}
        except jsonio.DecodeError:
            raise ProxyError("upstream_protocol", "the Replicate done event is not JSON") from None
        reason = payload.get("reason") if isinstance(payload, dict) else None
        if reason:
            raise prediction_error("canceled" if reason == "canceled" else "failed", None)
        self.done = True
        if self._block_open:
            out.append(ir.BlockEnd(0))
        out += [ir.Finish("stop", raw="succeeded"), ir.End()]


def _error_detail(data: bytes) -> str:
    """The message of a stream `error` event: JSON {"detail"} (plain text tolerated)."""
    try:
        payload = jsonio.loads(data)
    except jsonio.DecodeError:
        return data.decode("utf-8", "replace").strip()
    if isinstance(payload, dict):
        detail = payload.get("detail") or payload.get("error")
        return detail if isinstance(detail, str) else ""
    return payload if isinstance(payload, str) else ""
