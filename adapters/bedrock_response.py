"""Bedrock Converse answers -> IR: the response body, stop reasons, usage, and errors.

Errors are named by AWS's exception (the `x-amzn-ErrorType` header, `ValidationException:...`, or
the body's `__type`), in a non-stream answer as in a stream's exception event; the message is the
body's `message` (or `Message`).  A ValidationException in Bedrock's context-length wording ("Input
is too long for requested model.", "... prompt is too long: N tokens > M maximum") is a
context-length error, so `context_window_fallbacks` work.  ModelNotReadyException (a model being
loaded) is retryable: a 429 with a short Retry-After.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import Struct

from . import ir, jsonio
from .anthropic_response import STOP_TO_IR as ANTHROPIC_STOP_TO_IR
from .errors import ProxyError, from_upstream, looks_like_context_length, parse_retry_after

# Bedrock's stopReason values are Claude's (Anthropic's, same spelling) plus Bedrock's own.
STOP_TO_IR: dict[str, ir.FinishReason] = {
    **ANTHROPIC_STOP_TO_IR,
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "malformed_model_output": "error",
    "malformed_tool_use": "error",
}

# AWS exception -> the error kind.
EXCEPTION_KINDS: dict[str, str] = {
    "ValidationException": "invalid_request",
    "AccessDeniedException": "permission",
    "ResourceNotFoundException": "not_found",
    "ThrottlingException": "rate_limit",
    "ServiceQuotaExceededException": "rate_limit",
    "ModelNotReadyException": "rate_limit",
    "ServiceUnavailableException": "overloaded",
    "ModelTimeoutException": "timeout",
    "ModelErrorException": "server",
    "ModelStreamErrorException": "server",
    "InternalServerException": "server",
    # The gateway's own AWS credentials were refused: the client's problem only in that it cannot
    # be served; reported as an authentication failure, as for other backends' 401s.
    "UnrecognizedClientException": "authentication",
    "InvalidSignatureException": "authentication",
    "ExpiredTokenException": "authentication",
    "IncompleteSignatureException": "authentication",
    "MissingAuthenticationTokenException": "authentication",
}
MODEL_NOT_READY_RETRY_AFTER = 2.0  # seconds; AWS's own SDKs retry ModelNotReady after a short wait


def exception_name(raw: str | None) -> str:
    """`ValidationException:http://internal...` / `com.amazon...#ValidationException` /
    `validationException` (stream events) -> `ValidationException`."""
    if not raw:
        return ""
    name = raw.split(":", 1)[0].rsplit("#", 1)[-1]
    return name[:1].upper() + name[1:]


def exception_error(name: str, message: str, status: int | None = None, headers: Mapping[str, str] | None = None) -> ProxyError:
    kind = EXCEPTION_KINDS.get(name)
    if kind is None:
        return from_upstream(status or 500, message, headers, code=name or None)
    code = name
    retry_after = parse_retry_after(headers) if headers is not None else None
    if kind == "invalid_request" and looks_like_context_length(message):
        kind, code = "context_length", "context_length_exceeded"
    if name == "ModelNotReadyException":
        retry_after = retry_after if retry_after is not None else MODEL_NOT_READY_RETRY_AFTER
    return ProxyError(kind, message or name, code=code, retry_after=retry_after, upstream_status=status)


class _ErrorBody(Struct):
    message: str | None = None
    Message: str | None = None
    type_: str | None = msgspec.field(default=None, name="__type")


_error_decoder = jsonio.decoder(_ErrorBody)


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
    try:
        err = _error_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        err = _ErrorBody()
    message = err.message or err.Message or ""
    name = exception_name(headers.get("x-amzn-ErrorType") or err.type_)
    if not name:
        return from_upstream(status, message, headers)
    return exception_error(name, message, status, headers)


# --------------------------------------------------------------------------------------------------
# Usage


class WireUsage(Struct):
    inputTokens: int = 0
    outputTokens: int = 0
    cacheReadInputTokens: int = 0
    cacheWriteInputTokens: int = 0


def usage_to_ir(u: WireUsage) -> ir.Usage:
    """Bedrock's `inputTokens` excludes cache reads and writes (as Anthropic's input_tokens); the
    IR's input count includes them."""
    return ir.Usage(
        input_tokens=u.inputTokens + u.cacheReadInputTokens + u.cacheWriteInputTokens,
        output_tokens=u.outputTokens,
        cached_input_tokens=u.cacheReadInputTokens,
        cache_write_tokens=u.cacheWriteInputTokens,
    )


def finish(stop_reason: str, additional: Any) -> ir.Finish:
    """The IR finish for a `stopReason` (+ `additionalModelResponseFields.stop_sequence`, which
    Anthropic models report when asked)."""
    reason = STOP_TO_IR.get(stop_reason, "stop")
    stop_sequence = additional.get("stop_sequence") if isinstance(additional, dict) else None
    return ir.Finish(reason=reason, raw=stop_reason,
                     stop_sequence=stop_sequence if isinstance(stop_sequence, str) else None)


# --------------------------------------------------------------------------------------------------
# Converse response body


class WireReasoningText(Struct):
    text: str = ""
    signature: str | None = None


class WireReasoning(Struct):
    reasoningText: WireReasoningText | None = None
    redactedContent: str | None = None


class WireToolUse(Struct):
    toolUseId: str
    name: str
    input: Any = None


class WireBlock(Struct):
    text: str | None = None
    toolUse: WireToolUse | None = None
    reasoningContent: WireReasoning | None = None


class WireMessage(Struct):
    content: list[WireBlock] = []


class WireOutput(Struct):
    message: WireMessage | None = None


class WireResponse(Struct):
    output: WireOutput
    stopReason: str
    usage: WireUsage | None = None
    additionalModelResponseFields: Any = None


_response_decoder = jsonio.decoder(WireResponse)


def _part(block: WireBlock, claude: bool) -> ir.Text | ir.Reasoning | ir.ToolCall | None:
    if block.text is not None:
        return ir.Text(text=block.text)
    if block.toolUse is not None:
        t = block.toolUse
        return ir.ToolCall(id=t.toolUseId, name=t.name, arguments=jsonio.dumps(t.input if t.input is not None else {}).decode())
    r = block.reasoningContent
    if r is None:
        return None  # citations, guard content, ...: nothing the IR carries
    provider = "anthropic" if claude else None  # a Claude model's signature is Anthropic's
    if r.redactedContent is not None:
        return ir.Reasoning(redacted_data=r.redactedContent, provider=provider)
    text = r.reasoningText or WireReasoningText()
    return ir.Reasoning(text=text.text, signature=text.signature, provider=provider if text.signature else None)


def chat_response(body: bytes, model: str, claude: bool) -> ir.ChatResponse:
    try:
        w = _response_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ProxyError("upstream_protocol", "Bedrock sent a Converse answer that cannot be parsed") from None
    blocks = w.output.message.content if w.output.message is not None else []
    parts = [p for p in (_part(b, claude) for b in blocks) if p is not None]
    fin = finish(w.stopReason, w.additionalModelResponseFields)
    saw_tool = any(isinstance(p, ir.ToolCall) for p in parts)
    return ir.ChatResponse(
        id="",
        model=model,
        created=0,
        choices=[ir.Choice(parts=parts, finish_reason=ir.consistent_finish(fin.reason, saw_tool),
                           raw_finish_reason=fin.raw, stop_sequence=fin.stop_sequence)],
        usage=usage_to_ir(w.usage) if w.usage is not None else None,
    )
