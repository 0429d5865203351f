"""Gemini responses and errors in both directions, plus the mapping tables both streams use.

Tables (shared/protocols/gemini.md §3.1 and §5, README §2.14-2.16): finishReason <-> IR finish,
usageMetadata <-> canonical usage (`candidatesTokenCount` excludes thoughts, the IR output total
includes them; `toolUsePromptTokenCount` is prompt), error `status` <-> ProxyError kind.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from msgspec import Struct

from . import ir, jsonio
from .common import arguments_object
from .errors import ProxyError, from_upstream, looks_like_context_length

# --------------------------------------------------------------------------------------------------
# Finish reasons

_CONTENT_FILTER = ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                   "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR")
_FAILED_CALL = ("MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "MALFORMED_RESPONSE",
                "MISSING_THOUGHT_SIGNATURE")

# Gemini finishReason -> IR.  Anything else (OTHER, LANGUAGE, FINISH_REASON_UNSPECIFIED, IMAGE_OTHER,
# NO_IMAGE, CONTINUATION, ESCALATION, PUP_LIMITED_DISABLED, future values) is `stop` (lossy, raw kept).
FINISH_TO_IR: dict[str, ir.FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **{r: "content_filter" for r in _CONTENT_FILTER},
    **{r: "error" for r in _FAILED_CALL},
}

# IR -> Gemini.  tool_calls is STOP (Gemini's own way: the functionCall parts say it); `error` only
# reaches a non-streaming client whose answer arrived complete; OTHER is the nearest value.
FINISH_FROM_IR: dict[str, str] = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "content_filter": "SAFETY",
    "pause": "STOP",
    "error": "OTHER",
}


def finish_to_ir(raw: str | None) -> ir.FinishReason:
    return FINISH_TO_IR.get(raw or "", "stop")


def finish_out(reason: ir.FinishReason, raw: str | None) -> str:
    """A raw Gemini value that maps to the same IR reason is kept (RECITATION stays RECITATION)."""
    if raw in FINISH_TO_IR and FINISH_TO_IR[raw] == reason:
        return raw  # type: ignore[return-value]
    return FINISH_FROM_IR[reason]


# --------------------------------------------------------------------------------------------------
# Usage


class UsageMetadata(Struct):
    promptTokenCount: int = 0
    candidatesTokenCount: int = 0
    thoughtsTokenCount: int = 0
    toolUsePromptTokenCount: int = 0
    cachedContentTokenCount: int = 0
    totalTokenCount: int = 0


def usage_to_ir(u: UsageMetadata) -> ir.Usage:
    return ir.Usage(
        input_tokens=u.promptTokenCount + u.toolUsePromptTokenCount,
        output_tokens=u.candidatesTokenCount + u.thoughtsTokenCount,
        cached_input_tokens=u.cachedContentTokenCount,
        reasoning_tokens=u.thoughtsTokenCount,
    )


def usage_out(u: ir.Usage) -> dict[str, int]:
    out = {
        "promptTokenCount": u.input_tokens,
        "candidatesTokenCount": max(0, u.output_tokens - u.reasoning_tokens),
        "totalTokenCount": u.input_tokens + u.output_tokens,
    }
    if u.reasoning_tokens:
        out["thoughtsTokenCount"] = u.reasoning_tokens
    if u.cached_input_tokens:
        out["cachedContentTokenCount"] = u.cached_input_tokens
    return out


# --------------------------------------------------------------------------------------------------
# Response wire Structs (lenient: unknown part kinds and fields are skipped)


class WireFunctionCall(Struct):
    name: str = ""
    args: Any = None
    id: str | None = None


class WirePart(Struct):
    text: str | None = None
    thought: bool | None = None
    thoughtSignature: str | None = None
    functionCall: WireFunctionCall | None = None


class WireContent(Struct):
    parts: list[WirePart] = []
    role: str | None = None


class WireCandidate(Struct):
    content: WireContent | None = None
    finishReason: str | None = None
    index: int = 0


class PromptFeedback(Struct):
    blockReason: str | None = None


class WireErrorObject(Struct):
    code: int | None = None
    message: str = ""
    status: str = ""
    details: list[dict[str, Any]] = []


class WireResponse(Struct):
    candidates: list[WireCandidate] = []
    promptFeedback: PromptFeedback | None = None
    usageMetadata: UsageMetadata | None = None
    modelVersion: str | None = None
    responseId: str | None = None
    error: WireErrorObject | None = None


response_decoder = jsonio.decoder(WireResponse)


class _UsageOnly(Struct):
    usageMetadata: UsageMetadata | None = None


_usage_decoder = jsonio.decoder(_UsageOnly)


def usage_only(data: bytes) -> ir.Usage | None:
    """The usage a response body or stream chunk carries (pass-through metrics)."""
    try:
        u = _usage_decoder.decode(data).usageMetadata
    except msgspec.ValidationError:
        return None
    except msgspec.DecodeError:
        raise ProxyError("upstream_protocol", "the backend answered with invalid JSON") from None
    return usage_to_ir(u) if u is not None else None


# --------------------------------------------------------------------------------------------------
# IR -> Gemini parts (frontend rendering)


def render_parts(parts: list[ir.Part]) -> list[dict[str, Any]]:
    """Gemini parts for a client.  Reasoning becomes thought parts; only a Gemini signature is shown
    (no other provider's signature means anything to Gemini), and an empty signed Reasoning puts its
    signature on the part after it (see gemini_request's conventions)."""
    out: list[dict[str, Any]] = []
    held: str | None = None
    for p in parts:
        if isinstance(p, ir.Reasoning):
            sig = p.signature if p.provider == "gemini" else None
            if not p.text:
                held = sig or held
                continue
            part: dict[str, Any] = {"text": p.text, "thought": True}
            if sig:
                part["thoughtSignature"] = sig
            out.append(part)
            continue
        if isinstance(p, ir.Text):
            part = {"text": p.text}
        elif isinstance(p, ir.ToolCall):
            part = {"functionCall": function_call(p.id, p.name, p.arguments)}
        else:
            continue  # images, tool results: not in answers
        if held:
            part["thoughtSignature"], held = held, None
        out.append(part)
    if held:
        out.append({"text": "", "thoughtSignature": held})
    return out


def function_call(call_id: str | None, name: str, arguments: str) -> dict[str, Any]:
    """A functionCall object; arguments that are not a JSON object (a model's mistake) become {}."""
    fc: dict[str, Any] = {"name": name, "args": arguments_object(arguments) or {}}
    if call_id:
        fc["id"] = call_id
    return fc


def render_response(resp: ir.ChatResponse, model: str) -> dict[str, Any]:
    choice = resp.choices[0] if resp.choices else ir.Choice()
    parts = render_parts(choice.parts)
    candidate = {
        "content": {"role": "model", "parts": parts},
        "finishReason": finish_out(choice.finish_reason, choice.raw_finish_reason),
        "index": 0,
    }
    out: dict[str, Any] = {"candidates": [candidate], "modelVersion": model}
    if resp.usage is not None:
        out["usageMetadata"] = usage_out(resp.usage)
    if resp.id:
        out["responseId"] = resp.id
    return out


# --------------------------------------------------------------------------------------------------
# Errors

# ProxyError kind -> Gemini `status` (google.rpc.Code names), for Gemini-format clients.
KIND_TO_STATUS: dict[str, str] = {
    "invalid_request": "INVALID_ARGUMENT",
    "unsupported": "INVALID_ARGUMENT",
    "context_length": "INVALID_ARGUMENT",
    "authentication": "UNAUTHENTICATED",
    "permission": "PERMISSION_DENIED",
    "not_found": "NOT_FOUND",
    "request_timeout": "DEADLINE_EXCEEDED",
    "request_too_large": "INVALID_ARGUMENT",
    "rate_limit": "RESOURCE_EXHAUSTED",
    "quota_exhausted": "RESOURCE_EXHAUSTED",
    "server": "INTERNAL",
    "upstream_unavailable": "UNAVAILABLE",
    "upstream_protocol": "INTERNAL",
    "overloaded": "UNAVAILABLE",
    "timeout": "DEADLINE_EXCEEDED",
}

# Gemini `status` -> kind (backend direction).  INVALID_ARGUMENT is refined by reason and wording.
STATUS_TO_KIND: dict[str, str] = {
    "INVALID_ARGUMENT": "invalid_request",
    "FAILED_PRECONDITION": "invalid_request",
    "OUT_OF_RANGE": "invalid_request",
    "UNAUTHENTICATED": "authentication",
    "PERMISSION_DENIED": "permission",
    "NOT_FOUND": "not_found",
    "RESOURCE_EXHAUSTED": "rate_limit",
    "INTERNAL": "server",
    "UNKNOWN": "server",
    "UNAVAILABLE": "overloaded",
    "DEADLINE_EXCEEDED": "timeout",
    "CANCELLED": "server",
}

# ErrorInfo reasons that say "bad key" although the status is 400 INVALID_ARGUMENT.
_AUTH_REASONS = ("API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_MISSING")
# Gemini's own context-length wording, which errors.CONTEXT_LENGTH_PHRASES does not cover:
# "The input token count (1205731) exceeds the maximum number of tokens allowed (1048576)."
_CONTEXT_PHRASE = "exceeds the maximum number of tokens"
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


def error_object(err: ProxyError) -> dict[str, Any]:
    return {"code": err.status, "message": err.message, "status": KIND_TO_STATUS[err.kind]}


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    """google.rpc.RetryInfo `retryDelay` ("37s") from the error details."""
    for d in details:
        m = _DELAY.match(str(d.get("retryDelay", ""))) if isinstance(d, dict) else None
        if m:
            return float(m.group(1))
    return None


def error_from_object(obj: WireErrorObject, status: int | None, headers=None) -> ProxyError:
    """The ProxyError for a Gemini error object (HTTP error body or in-band stream error)."""
    http = status if status is not None else obj.code
    base = from_upstream(http or 500, obj.message, headers)
    kind = STATUS_TO_KIND.get(obj.status, base.kind)
    reasons = {d.get("reason") for d in obj.details if isinstance(d, dict)}
    if reasons & set(_AUTH_REASONS):
        kind = "authentication"
    elif kind == "invalid_request" and (looks_like_context_length(obj.message) or _CONTEXT_PHRASE in obj.message):
        kind = "context_length"
    return ProxyError(
        kind,
        obj.message or f"Gemini error {obj.status or http}",
        code="context_length_exceeded" if kind == "context_length" else obj.status or None,
        retry_after=base.retry_after if base.retry_after is not None else _retry_delay(obj.details),
        upstream_status=status,
    )


class _ErrorBody(Struct):
    error: WireErrorObject | None = None


_error_decoder = jsonio.decoder(_ErrorBody)


def parse_error_body(status: int, headers, body: bytes) -> ProxyError:
    try:
        obj = _error_decoder.decode(body).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        obj = None
    if obj is None:  # not Gemini's shape (a proxy in front of it): the status decides
        return from_upstream(status, "", headers)
    return error_from_object(obj, status, headers)
