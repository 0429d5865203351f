"""Anthropic Messages responses and errors in both directions, plus the mapping tables both streams use.

Tables (README §2.14-2.16): stop_reason <-> IR finish, Anthropic usage <-> canonical usage
(Anthropic `input_tokens` excludes cache reads and writes; the IR total includes them), error type <->
ProxyError kind.  Response blocks are decoded leniently (one Struct with optional fields) so server-tool
blocks and future block types are skipped instead of failing the response.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from msgspec import Struct

from . import ir, jsonio
from .anthropic_build import SchemaTool
from .anthropic_request import tool_id
from .common import arguments_object, synth_id
from .errors import ProxyError, from_upstream, looks_like_context_length, parse_retry_after

# --------------------------------------------------------------------------------------------------
# Tables

STOP_TO_IR: dict[str, ir.FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "pause",
}

IR_TO_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "pause": "pause_turn",
    "error": "end_turn",  # only reachable in a stream that otherwise completed; nothing closer exists
}

# ProxyError kind -> (HTTP status, Anthropic error type), for Anthropic-format clients.
KIND_TO_ERROR: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request_error"),
    "unsupported": (400, "invalid_request_error"),
    "context_length": (400, "invalid_request_error"),
    "authentication": (401, "authentication_error"),
    "permission": (403, "permission_error"),
    "not_found": (404, "not_found_error"),
    "request_timeout": (408, "timeout_error"),
    "request_too_large": (413, "request_too_large"),
    "rate_limit": (429, "rate_limit_error"),
    "quota_exhausted": (429, "rate_limit_error"),
    "server": (500, "api_error"),
    "upstream_unavailable": (502, "api_error"),
    "upstream_protocol": (502, "api_error"),
    "overloaded": (529, "overloaded_error"),
    "timeout": (504, "timeout_error"),
}

# Anthropic error type -> kind (backend direction).  invalid_request_error is refined by wording.
ERROR_TO_KIND: dict[str, str] = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication",
    "billing_error": "quota_exhausted",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "request_too_large": "request_too_large",
    "rate_limit_error": "rate_limit",
    "api_error": "server",
    "timeout_error": "timeout",
    "overloaded_error": "overloaded",
}


def finish_out(reason: str, raw: str | None, stop_sequence: str | None) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an Anthropic client.  A raw Anthropic value that maps to the
    same IR reason is kept (e.g. model_context_window_exceeded), so Anthropic origins stay lossless."""
    if reason == "stop" and stop_sequence:
        return "stop_sequence", stop_sequence
    if raw in STOP_TO_IR and STOP_TO_IR[raw] == reason and raw != "stop_sequence":
        return raw, None
    return IR_TO_STOP[reason], None


# --------------------------------------------------------------------------------------------------
# Usage


class WireUsage(Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


def usage_to_ir(u: WireUsage) -> ir.Usage:
    cached = u.cache_read_input_tokens or 0
    written = u.cache_creation_input_tokens or 0
    return ir.Usage(
        input_tokens=(u.input_tokens or 0) + cached + written,
        output_tokens=u.output_tokens or 0,
        cached_input_tokens=cached,
        cache_write_tokens=written,
    )


def usage_out(u: ir.Usage | None) -> dict[str, int]:
    if u is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {
        "input_tokens": max(0, u.input_tokens - u.cached_input_tokens - u.cache_write_tokens),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cached_input_tokens,
        "output_tokens": u.output_tokens,
    }


# --------------------------------------------------------------------------------------------------
# Response body -> IR (backend)


class WireBlock(Struct):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class WireResponse(Struct):
    id: str = ""
    model: str = ""
    content: list[WireBlock] = []
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: WireUsage | None = None


_response_decoder = jsonio.decoder(WireResponse)


def block_to_part(b: WireBlock, schema: SchemaTool | None) -> ir.Text | ir.Reasoning | ir.ToolCall | None:
    """One response block as an IR part; None for blocks the IR does not carry (server tools, ...)."""
    if b.type == "text":
        return ir.Text(text=b.text or "")
    if b.type == "thinking":
        return ir.Reasoning(text=b.thinking or "", signature=b.signature or None, provider="anthropic")
    if b.type == "redacted_thinking":
        return ir.Reasoning(redacted_data=b.data or "", provider="anthropic")
    if b.type == "tool_use":
        value = b.input if b.input is not None else {}
        if schema is not None and b.name == schema.name:
            return ir.Text(text=jsonio.dumps_str(schema.unwrap(value)))
        return ir.ToolCall(id=b.id or "", name=b.name or "", arguments=jsonio.dumps_str(value))
    return None


def response_to_ir(body: bytes, req: ir.ChatRequest) -> ir.ChatResponse:
    try:
        w = _response_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProxyError("upstream_protocol", f"Anthropic response is not a valid message: {exc}") from None
    schema = SchemaTool.of(req)
    parts = [p for p in (block_to_part(b, schema) for b in w.content) if p is not None]
    saw_tool = any(isinstance(p, ir.ToolCall) for p in parts)
    reason = ir.consistent_finish(STOP_TO_IR.get(w.stop_reason or "", "stop"), saw_tool)
    return ir.ChatResponse(
        id=w.id,
        model=w.model or req.model,
        created=0,
        choices=[
            ir.Choice(parts=parts, finish_reason=reason, raw_finish_reason=w.stop_reason, stop_sequence=w.stop_sequence)
        ],
        usage=usage_to_ir(w.usage) if w.usage is not None else None,
    )


# --------------------------------------------------------------------------------------------------
# IR -> message object (frontend)

_BAD_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def message_id(raw: str | None) -> str:
    """`msg_...`: Anthropic ids pass unchanged; other backends' ids are prefixed (kept for tracing)."""
    if raw and raw.startswith("msg_"):
        return raw
    return "msg_" + _BAD_ID_CHARS.sub("_", raw) if raw else synth_id("msg_")


def part_to_block(part: ir.Text | ir.Reasoning | ir.ToolCall, seed: int) -> dict[str, Any] | None:
    """A content block for an Anthropic client.  Reasoning without Anthropic's signature is dropped:
    clients echo thinking blocks back, and Anthropic rejects a thinking block it did not sign."""
    if isinstance(part, ir.Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, ir.ToolCall):
        # Invalid JSON arguments (a model's mistake) become {} so the client still sees the call.
        return {"type": "tool_use", "id": tool_id(part.id, seed), "name": part.name, "input": arguments_object(part.arguments) or {}}
    if part.provider != "anthropic":
        return None
    if part.redacted_data is not None:
        return {"type": "redacted_thinking", "data": part.redacted_data}
    if part.signature:
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    return None


def render_message(resp: ir.ChatResponse, model: str) -> dict[str, Any]:
    choice = resp.choices[0] if resp.choices else ir.Choice()
    content = [b for i, p in enumerate(choice.parts) if (b := part_to_block(p, i)) is not None]
    saw_tool = any(b["type"] == "tool_use" for b in content)
    reason = ir.consistent_finish(choice.finish_reason, saw_tool)
    stop_reason, stop_sequence = finish_out(reason, choice.raw_finish_reason, choice.stop_sequence)
    return {
        "id": message_id(resp.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_out(resp.usage),
    }


# --------------------------------------------------------------------------------------------------
# Errors


class _WireErrorObject(Struct):
    type: str = ""
    message: str = ""


class _WireError(Struct):
    error: _WireErrorObject | None = None


_error_decoder = jsonio.decoder(_WireError)


def error_body(err: ProxyError) -> tuple[int, dict[str, Any]]:
    status, etype = KIND_TO_ERROR[err.kind]
    return status, {"type": "error", "error": {"type": etype, "message": err.message}}


def error_from_object(etype: str, message: str, status: int | None, headers=None) -> ProxyError:
    """The ProxyError for an Anthropic error object (HTTP error body or in-band `event: error`)."""
    kind = ERROR_TO_KIND.get(etype)
    if kind is None:
        if status is None:
            kind = "server"
        else:
            return from_upstream(status, message, headers)
    if kind == "invalid_request" and looks_like_context_length(message):
        kind = "context_length"
    return ProxyError(
        kind,
        message or f"Anthropic error {etype}",
        code="context_length_exceeded" if kind == "context_length" else None,
        retry_after=parse_retry_after(headers) if headers is not None else None,
        upstream_status=status,
    )


def parse_error_body(status: int, headers, body: bytes) -> ProxyError:
    try:
        obj = _error_decoder.decode(body).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        obj = None
    if obj is None:
        return from_upstream(status, "", headers)
    return error_from_object(obj.type, obj.message, status, headers)


def decode_error_event(data: bytes) -> ProxyError:
    try:
        obj = _error_decoder.decode(data).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        obj = None
    if obj is None:
        return ProxyError("upstream_protocol", "Anthropic stream sent an unreadable error event")
    return error_from_object(obj.type, obj.message, None)
