"""The closed set of errors the gateway can report, independent of any wire format.

Anything that goes wrong -- a bad client request, a parameter a backend cannot honour, an upstream
that refuses, times out, answers with an error status or breaks its protocol -- becomes one
`ProxyError` with a `kind` from `KINDS`.  The client-side adapter renders it in the caller's own
format (`render_error` before headers are sent, an in-stream error event after), in exactly one place.

Messages must never contain a backend URL or key: adapters build messages from the upstream's own
`message` field (never the raw body) and the relay adds nothing but the backend's *name*.
"""

from __future__ import annotations

# kind -> HTTP status sent to OpenAI-format clients (Anthropic renders `overloaded` as 529).
KINDS: dict[str, int] = {
    "invalid_request": 400,
    "unsupported": 400,  # valid request, but the routed backend cannot do it (policy `error`)
    "context_length": 400,
    "authentication": 401,
    "permission": 403,
    "not_found": 404,
    "request_timeout": 408,  # the client did not send its whole request in time
    "request_too_large": 413,
    "rate_limit": 429,
    "quota_exhausted": 429,
    "server": 500,
    "upstream_unavailable": 502,  # connection refused / reset before any byte
    "upstream_protocol": 502,  # the upstream answered something we cannot parse
    "overloaded": 503,
    "timeout": 504,
}

# Kinds a router may retry on another deployment (before the first byte reached the client).
RETRYABLE_KINDS = frozenset({"rate_limit", "server", "upstream_unavailable", "overloaded", "timeout"})


class ProxyError(Exception):
    """One error, in the gateway's own vocabulary.

    `status` defaults from `kind`; `upstream_status` keeps what the backend said (for logs/metrics);
    `retry_after` is in seconds (from `retry-after` / `retry-after-ms`); `param` names the offending
    request field, in the client's spelling, when there is one.
    """

    __slots__ = ("kind", "message", "status", "param", "code", "retry_after", "upstream_status")

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        upstream_status: int | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status if status is not None else KINDS[kind]
        self.param = param
        self.code = code
        self.retry_after = retry_after
        self.upstream_status = upstream_status

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def __repr__(self) -> str:
        return f"ProxyError({self.kind!r}, {self.message!r}, status={self.status})"


def bad_request(message: str, param: str | None = None) -> ProxyError:
    return ProxyError("invalid_request", message, param=param)


def unsupported(message: str, param: str | None = None) -> ProxyError:
    return ProxyError("unsupported", message, param=param, code="unsupported_parameter")


# Upstream HTTP status -> kind, for backends whose body does not say more.
_STATUS_KINDS = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    408: "timeout",
    409: "invalid_request",
    413: "request_too_large",
    422: "invalid_request",
    424: "server",
    429: "rate_limit",
    500: "server",
    501: "server",
    502: "upstream_unavailable",
    503: "overloaded",
    504: "timeout",
    529: "overloaded",
}

# Lower-cased phrases by which backends say "the prompt is longer than the context window".
# vLLM / OpenAI: "maximum context length"; Anthropic: "prompt is too long"; TGI: "must have less than";
# llama.cpp: "exceeds the available context size"; Ollama: "context length"; Mistral/Together variants.
CONTEXT_LENGTH_PHRASES = (
    "maximum context length",
    "context_length_exceeded",
    "context length",
    "context window",
    "prompt is too long",
    "input is too long",
    "too many tokens",
    "must have less than",
    "exceeds the available context size",
    "input validation error: `inputs` tokens + `max_new_tokens`",
    "reduce the length of the messages",
    "exceeds the maximum number of tokens",  # Gemini: "The input token count (N) exceeds ..."
)


def looks_like_context_length(message: str) -> bool:
    low = message.lower()
    return any(p in low for p in CONTEXT_LENGTH_PHRASES)


def parse_retry_after(headers) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (delta-seconds; HTTP dates ignored)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra:
        try:
            return max(0.0, float(ra))
        except ValueError:
            return None
    return None


def from_upstream(status: int, message: str, headers=None, *, code: str | None = None) -> ProxyError:
    """The error for an upstream HTTP error status whose message an adapter extracted.

    Adapters with richer bodies (an error `type`) may build the ProxyError themselves; this is the
    shared fallback and the one place where context-length wording is recognised.
    """
    kind = _STATUS_KINDS.get(status) or ("server" if status >= 500 else "invalid_request")
    if kind == "invalid_request" and looks_like_context_length(message):
        kind = "context_length"
        code = code or "context_length_exceeded"
    retry_after = parse_retry_after(headers) if headers is not None else None
    return ProxyError(
        kind,
        message or f"upstream returned HTTP {status}",
        code=code,
        retry_after=retry_after,
        upstream_status=status,
    )
