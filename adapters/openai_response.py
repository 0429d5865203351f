"""OpenAI Chat Completions answers: the wire types of responses, chunks and errors, and the small tables
shared by the OpenAI frontend and backend.

The msgspec Structs here describe what *upstream servers* answer (responses, stream chunks, error
bodies).  They are deliberately lenient -- every field optional, loosely typed where real servers
disagree (vLLM's integer error `code`, TGI's object `arguments`, llama.cpp's extra fields are simply
skipped) -- so one set of types reads OpenAI, vLLM, TGI, llama.cpp, Azure and the hosted clones.
The strict *client request* types live in `adapters.openai_request`.

Also here: usage conversion both ways (README 2.14), the finish-reason tables (2.15), and the
upstream error-body reader that every OpenAI-family backend shares.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any

from msgspec import Struct

from . import ir, jsonio
from .errors import ProxyError, from_upstream

# --------------------------------------------------------------------------------------------------
# Usage


class PromptDetails(Struct):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class CompletionDetails(Struct):
    reasoning_tokens: int | None = None


class UsageWire(Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: PromptDetails | None = None
    completion_tokens_details: CompletionDetails | None = None


def usage_to_ir(u: UsageWire) -> ir.Usage:
    pd, cd = u.prompt_tokens_details, u.completion_tokens_details
    return ir.Usage(
        input_tokens=u.prompt_tokens or 0,
        output_tokens=u.completion_tokens or 0,
        cached_input_tokens=(pd.cached_tokens or 0) if pd else 0,
        cache_write_tokens=(pd.cache_write_tokens or 0) if pd else 0,
        reasoning_tokens=(cd.reasoning_tokens or 0) if cd else 0,
    )


def usage_to_wire(u: ir.Usage, *, details: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
    }
    if details:
        out["prompt_tokens_details"] = {"cached_tokens": u.cached_input_tokens}
        out["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return out


class _UsageOnly(Struct):
    """Only `usage`: msgspec skips every other key without building it (pass-through metrics)."""

    usage: UsageWire | None = None


_usage_only = jsonio.decoder(_UsageOnly)


def usage_only(data: bytes) -> ir.Usage | None:
    """The usage in a body or chunk; the skip-scan also validates the JSON (pass-through relays
    nothing it could not parse)."""
    try:
        u = _usage_only.decode(data).usage
    except jsonio.ValidationError:
        return None
    except jsonio.DecodeError:
        raise ProxyError("upstream_protocol", "the backend answered with invalid JSON") from None
    return usage_to_ir(u) if u is not None else None


# --------------------------------------------------------------------------------------------------
# Responses and stream chunks (upstream side)


class FunctionWire(Struct):
    name: str | None = None
    arguments: Any = None  # a JSON string; TGI (older) and some clones send an object


class ToolCallWire(Struct):
    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: FunctionWire | None = None


class MessageWire(Struct):
    """A response `message` or a stream `delta` (the same fields, all optional)."""

    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallWire] | None = None
    function_call: FunctionWire | None = None


class ChoiceWire(Struct):
    index: int = 0
    message: MessageWire | None = None
    delta: MessageWire | None = None
    text: str | None = None  # /v1/completions
    finish_reason: str | None = None
    stop_reason: Any = None  # vLLM: the matched stop string (or token id)


class ErrorWire(Struct):
    message: str | None = None
    type: str | None = None
    param: Any = None
    code: Any = None  # a string (OpenAI, Azure) or the HTTP status as int (vLLM, llama.cpp)
    http_status_code: int | None = None  # TGI's in-stream shape


class ResponseWire(Struct):
    """A chat.completion, text_completion or chat.completion.chunk: they share this envelope."""

    id: str | None = None
    created: int | None = None
    model: str | None = None
    choices: list[ChoiceWire] = []
    usage: UsageWire | None = None
    error: ErrorWire | str | None = None


response_decoder = jsonio.decoder(ResponseWire)


def arguments_text(args: Any) -> str:
    """Tool-call arguments as the raw JSON string the IR keeps (objects re-encoded)."""
    if args is None:
        return ""
    if isinstance(args, str):
        return args
    return jsonio.dumps(args).decode()


# --------------------------------------------------------------------------------------------------
# Finish reasons (README 2.15)

# Backend value -> IR.  vLLM adds abort / error / repetition; TGI (old) and llama.cpp leak theirs.
FINISH_TO_IR: dict[str, ir.FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "eos_token": "stop",
    "eos": "stop",
    "stop_sequence": "stop",
    "repetition": "stop",
    "abort": "error",
    "error": "error",
}

# IR -> OpenAI.  `pause` has no equivalent (lossy: the client sees a normal stop); `error` reaches a
# streaming client as an in-band error event, a non-streaming one sees `stop`.
FINISH_FROM_IR: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "pause": "stop",
    "error": "stop",
}


def finish_to_ir(raw: str) -> ir.FinishReason:
    return FINISH_TO_IR.get(raw, "stop")


# --------------------------------------------------------------------------------------------------
# Errors


# ProxyError kind -> (OpenAI `error.type`, default `error.code`), as api.openai.com answers them.
ERROR_TYPES: dict[str, tuple[str, str | None]] = {
    "invalid_request": ("invalid_request_error", None),
    "unsupported": ("invalid_request_error", "unsupported_parameter"),
    "context_length": ("invalid_request_error", "context_length_exceeded"),
    "authentication": ("invalid_request_error", "invalid_api_key"),
    "permission": ("permission_error", None),
    "not_found": ("invalid_request_error", "model_not_found"),
    "request_timeout": ("invalid_request_error", "request_timeout"),
    "request_too_large": ("invalid_request_error", None),
    "rate_limit": ("requests", "rate_limit_exceeded"),
    "quota_exhausted": ("insufficient_quota", "insufficient_quota"),
    "server": ("server_error", None),
    "upstream_unavailable": ("server_error", None),
    "upstream_protocol": ("server_error", None),
    "overloaded": ("server_error", None),
    "timeout": ("server_error", None),
}


def error_object(err: ProxyError) -> dict[str, Any]:
    typ, code = ERROR_TYPES[err.kind]
    return {"message": err.message, "type": typ, "param": err.param, "code": err.code or code}


class ErrorBodyWire(Struct):
    """Every error body shape an OpenAI-compatible server sends (see parse_error_body)."""

    error: ErrorWire | str | None = None
    message: str | None = None  # vLLM (old) / Mistral flat shape
    type: str | None = None
    code: Any = None
    error_type: str | None = None  # TGI
    detail: Any = None  # FastAPI-based servers


_error_body_decoder = jsonio.decoder(ErrorBodyWire)


def _message_of(body: ErrorBodyWire) -> tuple[str, str | None, str | None]:
    """(message, type, string code) from whichever shape the body has."""
    err = body.error
    if isinstance(err, ErrorWire):
        code = err.code if isinstance(err.code, str) else None
        return err.message or "", err.type, code
    if isinstance(err, str):
        return err, body.error_type, None
    if isinstance(body.detail, str):
        return body.detail, body.type, None
    code = body.code if isinstance(body.code, str) else None
    return body.message or "", body.type, code


# Upstream `type` / `code` / TGI `error_type` values that decide the kind better than the status.
_KIND_BY_UPSTREAM_TYPE = {
    "insufficient_quota": "quota_exhausted",
    "overloaded": "overloaded",
    "exceed_context_size_error": "context_length",
    "context_length_exceeded": "context_length",
    "DeploymentNotFound": "not_found",
}


def parse_error_body(status: int, headers: Mapping[str, str] | None, body: bytes) -> ProxyError:
    """The ProxyError for an OpenAI-family error body (OpenAI, Azure, vLLM new/old, TGI, llama.cpp).

    Only the upstream's message field is used, never the raw body."""
    try:
        parsed = _error_body_decoder.decode(body) if body else ErrorBodyWire()
    except (jsonio.DecodeError, jsonio.ValidationError):
        parsed = ErrorBodyWire()
    message, typ, code = _message_of(parsed)
    return _refined(from_upstream(status, message, headers, code=code), typ, code)


def _refined(err: ProxyError, typ: str | None, code: str | None) -> ProxyError:
    for signal in (code, typ):
        kind = _KIND_BY_UPSTREAM_TYPE.get(signal or "")
        if kind and kind != err.kind:
            return ProxyError(
                kind,
                err.message,
                code="context_length_exceeded" if kind == "context_length" else err.code,
                retry_after=err.retry_after,
                upstream_status=err.upstream_status,
            )
    return err


def in_stream_error(err: ErrorWire | str) -> ProxyError:
    """An in-band `data: {"error": ...}` event: the status comes from vLLM's int code / TGI's field."""
    if isinstance(err, str):
        return from_upstream(500, err)
    status = err.http_status_code or (err.code if isinstance(err.code, int) else None) or 500
    code = err.code if isinstance(err.code, str) else None
    return _refined(from_upstream(status, err.message or "", code=code), err.type, code)


# --------------------------------------------------------------------------------------------------
# Embeddings


def floats_to_base64(vector: list[float]) -> str:
    """OpenAI's `encoding_format: base64`: little-endian float32 values, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def base64_to_floats(data: str) -> list[float]:
    raw = base64.b64decode(data)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))
