"""Anthropic Messages API: the client-facing frontend (`/v1/messages`) and the backend family "anthropic".

Split by concern: `anthropic_request` (wire request Structs, client body -> IR), `anthropic_build`
(IR -> request body, structured output), `anthropic_response` (responses, usage, stop reasons, errors),
`anthropic_stream` (SSE both ways).  This module holds the two adapter classes.

Quirks handled (what is dropped, renamed or synthesised):
- Frontend: tool_result blocks become one IR `tool` message each (text after them in the same turn
  follows as a user message); plain-text documents become text, PDF/file documents and Files-API
  images are refused (400 unsupported); server tools (versioned `type`) are refused; `thinking` maps to
  ReasoningConfig (enabled+budget / adaptive / disabled), `output_config` to effort and json_schema
  response_format; `metadata.user_id` -> `user`; unknown top-level fields -> `extra`.  A thinking
  block without a signature is kept untagged (provider None) so no backend forwards it as signed.
- Frontend output: reasoning is shown only when Anthropic signed it (or redacted it); other
  providers' reasoning is dropped because clients echo thinking blocks back and Anthropic rejects
  unsigned ones.  Tool ids are sanitised to `[a-zA-Z0-9_-]`; message ids get a `msg_` prefix.
  Invalid tool-call JSON becomes `input: {}`.  Kind `overloaded` is sent as 529 overloaded_error.
- Backend: `max_tokens` is always sent (client value, else `Target.default_max_tokens`, else
  `Options.default_max_tokens`, else a model-aware default: 4096 for the Claude 3.0 family, whose
  output limit it is, 8192 otherwise); temperature is clamped to 0..1; `user` -> `metadata.user_id`;
  reasoning -> `thinking` (effort table in anthropic_build); system messages anywhere are lifted into
  `system`; response_format via the forced-tool trick (anthropic_build docstring).  Not supported by
  Anthropic (left to the drop/error policy): seed, penalties, logit_bias, logprobs, n>1, min_p.
  Reasoning parts are forwarded only when Anthropic signed them.  `req.extra` is merged only for
  Anthropic-format clients.  Server-tool blocks in responses are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from . import ir, jsonio
from .anthropic_build import build_body
from .anthropic_request import KNOWN_FIELDS, WireRequest, decode_request, messages_to_ir, request_to_ir, system_to_ir
from .anthropic_response import WireUsage, error_body, parse_error_body, render_message, response_to_ir, usage_to_ir
from .anthropic_stream import AnthropicStreamDecoder, AnthropicStreamEncoder
from .base import Backend, HttpRequest, Target
from .errors import ProxyError, bad_request
from .sse import SSEEvent

DEFAULT_VERSION = "2023-06-01"

# --------------------------------------------------------------------------------------------------
# Frontend


class _BodyUsage(msgspec.Struct):
    usage: WireUsage | None = None


class _MessageHead(msgspec.Struct):
    usage: WireUsage | None = None


class _EventUsage(msgspec.Struct):
    type: str = ""
    message: _MessageHead | None = None
    usage: WireUsage | None = None


_body_usage = jsonio.decoder(_BodyUsage)
_event_usage = jsonio.decoder(_EventUsage)

# count_tokens estimate: ~4 characters a token for text and JSON, a fixed cost per image (Anthropic's
# formula w*h/750 caps near 1600 for a resized image; sizes are unknown without decoding), and a few
# tokens of framing per message and per tool.
CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 1600
MESSAGE_OVERHEAD = 4
TOOL_OVERHEAD = 8


def _usage_from(w: WireUsage | None) -> ir.Usage | None:
    return usage_to_ir(w) if w is not None else None


class AnthropicFrontend:
    """The `/v1/messages` client format."""

    name: ClassVar[str] = "anthropic"
    stream_content_type: ClassVar[str] = "text/event-stream"
    # Pass-through: only events containing one of these carry token counts worth decoding
    # (OpenAI chunks carry "usage":null once usage is requested).
    usage_markers: ClassVar[tuple[bytes, ...]] = (b'"usage":{', b'"usage": {')

    def parse_chat(self, body: bytes) -> ir.ChatRequest:
        wire = decode_request(body)
        if wire.max_tokens is None:
            raise bad_request("max_tokens: Field required", param="max_tokens")
        raw = jsonio.top_level_raw(body)
        extra = {k: jsonio.loads(v) for k, v in raw.items() if k not in KNOWN_FIELDS}
        return request_to_ir(wire, extra)

    def render_chat(self, resp: ir.ChatResponse, model: str) -> bytes:
        return jsonio.dumps(render_message(resp, model))

    def stream_encoder(self, req: ir.ChatRequest, model: str) -> AnthropicStreamEncoder:
        return AnthropicStreamEncoder(req, model)

    def render_error(self, err: ProxyError) -> tuple[int, bytes]:
        status, body = error_body(err)
        return status, jsonio.dumps(body)

    def render_token_count(self, n: int) -> bytes:
        """The /v1/messages/count_tokens answer for an estimate made by the gateway."""
        return jsonio.dumps({"input_tokens": n})

    def count_tokens_estimate(self, body: bytes) -> int:
        """Estimated input tokens of a count_tokens (or messages) body; see the constants above."""
        wire: WireRequest = decode_request(body)
        chars, images = 0, 0
        for t in system_to_ir(wire.system):
            chars += len(t.text)
        messages = messages_to_ir(wire.messages)
        for m in messages:
            for p in m.parts:
                c, n = _part_size(p)
                chars += c
                images += n
        for t in wire.tools or []:
            chars += len(t.name) + len(t.description or "") + len(jsonio.dumps(t.input_schema or {}))
        tokens = math.ceil(chars / CHARS_PER_TOKEN)
        return tokens + images * IMAGE_TOKENS + MESSAGE_OVERHEAD * len(messages) + TOOL_OVERHEAD * len(wire.tools or [])

    def usage_from_body(self, body: bytes) -> ir.Usage | None:
        try:
            return _usage_from(_body_usage.decode(body).usage)
        except msgspec.ValidationError:
            return None
        except msgspec.DecodeError:
            raise ProxyError("upstream_protocol", "the backend answered with invalid JSON") from None

    def usage_from_event(self, data: bytes) -> ir.Usage | None:
        """Usage an SSE event carries: message_start has the input side (output is a placeholder),
        message_delta the cumulative output (and input/cache counts when it repeats them, else 0).
        Callers merge field by field: a later non-zero value *replaces* the earlier one (never add)."""
        try:
            ev = _event_usage.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if ev.type == "message_start" and ev.message is not None:
            return _usage_from(ev.message.usage)
        if ev.type == "message_delta":
            return _usage_from(ev.usage)
        return None

    # Anthropic streams always carry usage, so the pass-through body is never changed.
    def prepare_passthrough(self, raw: dict[str, Any], stream: bool) -> bool:
        return False

    def is_stream_end(self, event: SSEEvent) -> bool:
        return event.event in ("message_stop", "error")

    def is_usage_only(self, data: bytes) -> bool:
        return False


def _part_size(p: ir.Part) -> tuple[int, int]:
    """(characters, images) of one IR part, for the token estimate."""
    if isinstance(p, ir.Text):
        return len(p.text), 0
    if isinstance(p, ir.Image):
        return 0, 1
    if isinstance(p, ir.ToolCall):
        return len(p.name) + len(p.arguments), 0
    if isinstance(p, ir.ToolResult):
        sizes = [_part_size(c) for c in p.content]
        return sum(s[0] for s in sizes), sum(s[1] for s in sizes)
    return len(p.text) + len(p.redacted_data or ""), 0


# --------------------------------------------------------------------------------------------------
# Backend


class AnthropicOptions(msgspec.Struct, forbid_unknown_fields=True):
    anthropic_version: str = DEFAULT_VERSION
    default_max_tokens: int | None = None  # None: model-aware (see the module docstring)
    beta: list[str] = []


def model_default_max_tokens(model: str) -> int:
    """4096 for Claude 3.0 models (their output limit); 8192 for everything newer or unknown."""
    if model.startswith("claude-3-") and not model.startswith(("claude-3-5", "claude-3-7")):
        return 4096
    return 8192


class AnthropicBackend(Backend):
    provider: ClassVar[str] = "anthropic"
    family: ClassVar[str | None] = "anthropic"
    Options = AnthropicOptions
    supported_params: ClassVar[frozenset[str]] = frozenset(
        {"temperature", "top_p", "top_k", "stop", "response_format", "reasoning", "user", "tools", "tool_choice",
         "parallel_tool_calls"}
    )
    renamed_params: ClassVar[Mapping[str, str]] = {
        "stop": "stop_sequences",
        "user": "metadata.user_id",
        "reasoning": "thinking",
        "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
        "response_format": "tools (forced tool)",
    }

    def _headers(self, version: str, betas: list[str]) -> dict[str, str]:
        headers = {**self.extra_headers, "content-type": "application/json", "anthropic-version": version}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        if betas:
            headers["anthropic-beta"] = ",".join(betas)
        return headers

    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        opts: AnthropicOptions = self.options  # type: ignore[assignment]
        client_max = req.max_tokens is not None
        max_tokens = req.max_tokens or target.default_max_tokens or opts.default_max_tokens
        body = build_body(req, target.model, max_tokens or model_default_max_tokens(target.model), client_max)
        body.update(target.params)
        return HttpRequest(
            url=f"{self.base_url}/v1/messages",
            body=jsonio.dumps(body),
            headers=self._headers(opts.anthropic_version, list(opts.beta)),
            stream=req.stream,
        )

    def chat_response(self, body: bytes, req: ir.ChatRequest, target: Target) -> ir.ChatResponse:
        return response_to_ir(body, req)

    def stream_decoder(self, req: ir.ChatRequest, target: Target) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(req)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
        return parse_error_body(status, headers, body)

    def passthrough_request(
        self, op: str, body: bytes, stream: bool, target: Target, client_headers: Mapping[str, str]
    ) -> HttpRequest:
        paths = {"messages": "/v1/messages", "count_tokens": "/v1/messages/count_tokens"}
        if op not in paths:
            raise ProxyError("not_found", f"operation {op!r} is not available on Anthropic backends")
        opts: AnthropicOptions = self.options  # type: ignore[assignment]
        version = _header(client_headers, "anthropic-version") or opts.anthropic_version
        betas: list[str] = []
        for value in [*(_header(client_headers, "anthropic-beta") or "").split(","), *opts.beta]:
            if value.strip() and value.strip() not in betas:
                betas.append(value.strip())
        return HttpRequest(url=self.base_url + paths[op], body=body, headers=self._headers(version, betas), stream=stream)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup (the proxy may hand over a plain dict)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


__all__ = ["AnthropicFrontend", "AnthropicBackend", "AnthropicOptions", "model_default_max_tokens"]
