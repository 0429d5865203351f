"""Anthropic Messages API, client side: the frontend serving `/v1/messages` and `count_tokens`.

Split by concern: `anthropic_request` (wire request Structs, client body -> IR), `anthropic_response`
(rendering Messages and errors), `anthropic_stream` (SSE both ways); the backend is `anthropic_backend`.

Quirks handled (what is dropped, renamed or synthesised):
- tool_result blocks become one IR `tool` message each (text after them in the same turn follows as a
  user message); plain-text documents become text, PDF/file documents and Files-API images are refused
  (400 unsupported); server tools (versioned `type`) are refused; `thinking` maps to ReasoningConfig
  (enabled+budget / adaptive / disabled), `output_config` to effort and json_schema response_format;
  `metadata.user_id` -> `user`; unknown top-level fields -> `extra`.  A thinking block without a
  signature is kept untagged (provider None) so no backend forwards it as signed.
- Output: reasoning is shown only when Anthropic signed it (or redacted it); other providers'
  reasoning is dropped because clients echo thinking blocks back and Anthropic rejects unsigned ones.
  Tool ids are sanitised to `[a-zA-Z0-9_-]`; message ids get a `msg_` prefix.  Invalid tool-call JSON
  becomes `input: {}`.  Kind `overloaded` is sent as 529 overloaded_error.
"""

from __future__ import annotations

import datetime
import math
from typing import Any, ClassVar

import msgspec

from . import ir, jsonio
from .jsonio import TopLevel
from .anthropic_request import KNOWN_FIELDS, WireRequest, decode_request, messages_to_ir, request_to_ir, system_to_ir
from .anthropic_response import WireUsage, error_body, render_message, usage_to_ir
from .anthropic_stream import AnthropicStreamEncoder
from .base import BEARER, X_RATELIMIT, ApiRoute, ChatOp, CountTokensOp, InBody, KeyIn, ModelList, RateLimitHeaders, Route
from .errors import ProxyError, bad_request
from .sse import SSEEvent


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


def _rfc3339_at(seconds: float, now: float) -> str:
    return datetime.datetime.fromtimestamp(now + seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Anthropic's rate-limit headers; the reset is an RFC 3339 time, not a duration.
ANTHROPIC_RATELIMIT = RateLimitHeaders("anthropic-ratelimit-{kind}-limit", "anthropic-ratelimit-{kind}-remaining",
                                       "anthropic-ratelimit-{kind}-reset", _rfc3339_at)  # fmt: skip


class AnthropicFrontend:
    """The `/v1/messages` client format."""

    name: ClassVar[str] = "anthropic"
    stream_content_type: ClassVar[str] = "text/event-stream"
    # The SDK sends `api_key` as x-api-key and `auth_token` as a bearer token (Claude Code with
    # ANTHROPIC_AUTH_TOKEN); x-api-key wins when both are sent.
    client_key = (KeyIn(header="x-api-key"), BEARER)
    # OpenAI's too: clients written for both (and the gateway's dashboards) read x-ratelimit-*.
    rate_limit_headers = (X_RATELIMIT, ANTHROPIC_RATELIMIT)
    error_prefixes = ("/v1/messages",)
    stream_framing: ClassVar[str] = "sse"
    # Pass-through: only events containing one of these carry token counts worth decoding
    # (OpenAI chunks carry "usage":null once usage is requested).
    usage_markers: ClassVar[tuple[bytes, ...]] = (b'"usage":{', b'"usage": {')

    def routes(self) -> list[Route]:
        return [
            ApiRoute("/v1/messages", InBody(ChatOp("messages", self.parse_chat, self.render_chat, self.stream_encoder,
                                                   (("max_tokens",),)))),
            ApiRoute("/v1/messages/count_tokens",
                     InBody(CountTokensOp("count_tokens", self.count_tokens_estimate, self.render_token_count))),
            # The SDK's models.list() sends anthropic-version; OpenAI clients on the same path do not.
            ModelList("/v1/models", self.render_models, when_header="anthropic-version"),
        ]

    def parse_chat(self, body: bytes, raw: TopLevel | None = None) -> ir.ChatRequest:
        wire = decode_request(body)
        if wire.max_tokens is None:
            raise bad_request("max_tokens: Field required", param="max_tokens")
        return request_to_ir(wire, jsonio.unknown_fields(body, KNOWN_FIELDS, raw))

    def render_chat(self, resp: ir.ChatResponse, model: str) -> bytes:
        return jsonio.dumps(render_message(resp, model))

    def stream_encoder(self, req: ir.ChatRequest, model: str) -> AnthropicStreamEncoder:
        return AnthropicStreamEncoder(req, model)

    def render_error(self, err: ProxyError) -> tuple[int, bytes]:
        status, body = error_body(err)
        return status, jsonio.dumps(body)

    def render_models(self, names: list[str]) -> bytes:
        data = [{"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"} for n in names]
        return jsonio.dumps({"data": data, "has_more": False, "first_id": names[0] if names else None,
                             "last_id": names[-1] if names else None})

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


__all__ = ["AnthropicFrontend"]
