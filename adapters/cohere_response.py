"""Cohere v2 answers -> IR: the chat response, finish reasons, usage, errors and embeddings.

Usage comes from `usage.tokens` (what the model processed), not `usage.billed_units` (what was
charged, which leaves out e.g. the prompt template's tokens); `cached_tokens` -> cached input.
`tool_plan` (the model's stated plan before its tool calls) becomes text ahead of the calls, the
same place an Anthropic model's preamble sits; `thinking` content is reasoning (provider "cohere").
Citations have no IR slot and are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
from msgspec import Struct

from . import ir, jsonio
from .cohere_build import PROVIDER
from .errors import ProxyError, from_upstream

# Cohere finish_reason -> IR.  ERROR is not a finish: it raises (see `finish_or_error`).
FINISH_REASONS: dict[str, ir.FinishReason] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "TIMEOUT": "error",
    "ERROR": "error",
}

# Cohere-specific HTTP statuses (the rest follow errors.from_upstream).
STATUS_KINDS = {498: "authentication", 499: "invalid_request"}


class UsageTokens(Struct):
    input_tokens: float | None = None
    output_tokens: float | None = None


class WireUsage(Struct):
    tokens: UsageTokens | None = None
    cached_tokens: float | None = None


def usage_to_ir(u: WireUsage) -> ir.Usage:
    t = u.tokens or UsageTokens()
    return ir.Usage(input_tokens=int(t.input_tokens or 0), output_tokens=int(t.output_tokens or 0),
                    cached_input_tokens=int(u.cached_tokens or 0))


def finish_or_error(raw: str | None, error: str | None) -> ir.FinishReason:
    """The IR finish reason; a Cohere ERROR (with its `error` text) is raised as a server error."""
    if raw == "ERROR" or error:
        raise ProxyError("server", error or "Cohere reported an error while generating")
    return FINISH_REASONS.get(raw or "", "stop")


class WireFunction(Struct):
    name: str | None = None
    arguments: str | None = None


class WireToolCall(Struct):
    id: str | None = None
    function: WireFunction | None = None


class WireContent(Struct):
    type: str = "text"
    text: str | None = None
    thinking: str | None = None


class WireMessage(Struct):
    content: list[WireContent] | None = None
    tool_plan: str | None = None
    tool_calls: list[WireToolCall] | None = None


class WireResponse(Struct):
    id: str = ""
    finish_reason: str | None = None
    message: WireMessage | None = None
    usage: WireUsage | None = None


_response_decoder = jsonio.decoder(WireResponse)


def named_stop(raw: str | None, stops: Sequence[str]) -> str | None:
    """The stop sequence behind a STOP_SEQUENCE finish.  Cohere does not name it; when the request sent
    exactly one, it is that one (so an Anthropic client gets stop_reason stop_sequence with it)."""
    return stops[0] if raw == "STOP_SEQUENCE" and len(stops) == 1 else None


def response_to_ir(body: bytes, model: str, stops: Sequence[str] = ()) -> ir.ChatResponse:
    try:
        r = _response_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ProxyError("upstream_protocol", "Cohere answer is not a valid chat response") from None
    reason = finish_or_error(r.finish_reason, None)
    msg = r.message or WireMessage()
    parts: list[ir.Text | ir.Reasoning | ir.ToolCall] = []
    for c in msg.content or []:
        if c.type == "thinking" and c.thinking:
            parts.append(ir.Reasoning(text=c.thinking, provider=PROVIDER))
        elif c.type == "text" and c.text:
            parts.append(ir.Text(text=c.text))
    if msg.tool_plan:
        parts.append(ir.Text(text=msg.tool_plan))
    for call in msg.tool_calls or []:
        fn = call.function or WireFunction()
        parts.append(ir.ToolCall(id=call.id or "", name=fn.name or "", arguments=fn.arguments or "{}"))
    reason = ir.consistent_finish(reason, any(isinstance(p, ir.ToolCall) for p in parts))
    choice = ir.Choice(parts=parts, finish_reason=reason, raw_finish_reason=r.finish_reason,
                       stop_sequence=named_stop(r.finish_reason, stops))
    usage = usage_to_ir(r.usage) if r.usage is not None else None
    return ir.ChatResponse(id=r.id, model=model, created=0, choices=[choice], usage=usage)


class _ErrorBody(Struct):
    message: str | None = None


_error_decoder = jsonio.decoder(_ErrorBody)


def parse_error_body(status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
    """Cohere errors are `{"id"?, "message": "..."}`; only the message is quoted."""
    try:
        message = _error_decoder.decode(body).message or ""
    except (msgspec.DecodeError, msgspec.ValidationError):
        message = ""
    err = from_upstream(status, message, headers)
    kind = STATUS_KINDS.get(status)
    if kind is not None:
        err = ProxyError(kind, err.message, upstream_status=status)
    return err


class _Embeddings(Struct):
    float_: list[list[float]] | None = msgspec.field(default=None, name="float")


class _BilledUnits(Struct):
    input_tokens: float | None = None


class _Meta(Struct):
    tokens: UsageTokens | None = None
    billed_units: _BilledUnits | None = None


class _EmbedResponse(Struct):
    embeddings: _Embeddings
    meta: _Meta | None = None


_embed_decoder = jsonio.decoder(_EmbedResponse)


def embeddings_to_ir(body: bytes, model: str) -> ir.EmbeddingResponse:
    """`/v2/embed` answer -> float vectors; input tokens from `meta.tokens`, else the billed units."""
    try:
        r = _embed_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ProxyError("upstream_protocol", "Cohere sent an embeddings answer that cannot be parsed") from None
    if r.embeddings.float_ is None:
        raise ProxyError("upstream_protocol", "Cohere embeddings answer has no float embeddings")
    meta = r.meta or _Meta()
    counted = meta.tokens.input_tokens if meta.tokens is not None else None
    if counted is None and meta.billed_units is not None:
        counted = meta.billed_units.input_tokens
    usage = ir.Usage(input_tokens=int(counted)) if counted is not None else None
    return ir.EmbeddingResponse(model=model, data=r.embeddings.float_, usage=usage)
