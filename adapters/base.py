"""The two adapter contracts: a *frontend* speaks a client's format, a *backend* speaks a provider's.

How a request flows (the proxy does the I/O, adapters only convert):

    client bytes --Frontend.parse_chat--> ChatRequest --params.apply_policy--> ChatRequest
        --Backend.chat_request--> HttpRequest ==proxy sends==> upstream
    upstream bytes --Backend.chat_response / stream_decoder().feed--> ChatResponse / [Event]
        --Frontend.render_chat / stream_encoder().feed--> client bytes

When the frontend's `name` equals the backend's `family` (OpenAI client on an OpenAI-compatible
server, Anthropic client on an Anthropic server) the proxy skips the IR entirely: it rewrites only
`model` in the body and relays the upstream bytes (`Backend.passthrough_request`).

Errors: every method may raise `adapters.errors.ProxyError`; nothing else may escape for bad input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import msgspec

from . import ir
from .errors import ProxyError, unsupported


@dataclass(slots=True)
class HttpRequest:
    """One upstream HTTP request, fully built (the proxy adds only tracing headers, and the auth
    headers of a backend that declares an `auth_scheme`)."""

    url: str  # already percent-encoded: a signed request is sent with exactly these path bytes
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    # The response body is a stream for the decoder, not one document.  Exactly when the client
    # asked for a stream: a streaming request's exchange ends in a stream (directly or through a
    # FollowUp), a non-streaming one in `chat_response`'s one document.
    stream: bool = False


@dataclass(slots=True)
class FollowUp:
    """Returned by `chat_response` when the answer needs another request (Replicate: poll the
    prediction, or open its stream URL).  The proxy waits `delay` seconds, sends `request`, and hands
    the result back to `chat_response` (or, for `request.stream`, to a fresh `stream_decoder`)."""

    request: HttpRequest
    delay: float = 0.0


@dataclass(slots=True, frozen=True)
class Target:
    """What routing resolved for one model: built once at config load (wildcards copy it per request)."""

    model: str  # the model id sent to the backend
    unsupported_params: str = "drop"  # "drop" | "error"
    default_max_tokens: int | None = None  # used by backends that require max_tokens (Anthropic)
    chat_template: Any = None  # adapters.chat_templates.ChatTemplate for prompt-only backends
    params: Mapping[str, Any] = field(default_factory=dict)  # per-model fixed backend fields
    options: Any = None  # the backend's per-model settings: an instance of `Backend.ModelOptions`


class StreamDecoder(Protocol):
    """Backend stream bytes -> IR events.  One object per request; state lives in attributes.

    `feed` gets raw body bytes exactly as read (it does its own SSE/NDJSON framing) and returns the
    events they completed.  `close` is called at end of body: it returns the final events, or raises
    ProxyError("upstream_protocol") when the stream ended without its terminal event (truncation).
    An in-band error event from the upstream raises the matching ProxyError from `feed`.
    """

    def feed(self, chunk: bytes) -> list[ir.Event]: ...

    def close(self) -> list[ir.Event]: ...


class StreamEncoder(Protocol):
    """IR events -> client stream bytes (SSE in the client's dialect).  One object per request.

    `feed` returns the bytes to write for one event (b"" when it only updates state, e.g. an
    Anthropic encoder holding Finish until Usage is known).  `error` returns the in-stream error event
    for a failure after headers were sent; nothing is written after it.
    """

    def feed(self, event: ir.Event) -> bytes: ...

    def error(self, err: ProxyError) -> bytes: ...


class Frontend(Protocol):
    """A client-facing API format (`openai`, `anthropic`)."""

    name: ClassVar[str]
    stream_content_type: ClassVar[str]
    usage_markers: ClassVar[tuple[bytes, ...]]  # pass-through: bytes that flag an event with usage

    def parse_chat(self, body: bytes) -> ir.ChatRequest: ...

    def render_chat(self, resp: ir.ChatResponse, model: str) -> bytes: ...

    def stream_encoder(self, req: ir.ChatRequest, model: str) -> StreamEncoder: ...

    def render_error(self, err: ProxyError) -> tuple[int, bytes]: ...

    # Same-format pass-through: cheap usage extraction for metrics, without decoding the rest.
    # Both raise ProxyError("upstream_protocol") for data that is not valid JSON.
    def usage_from_body(self, body: bytes) -> ir.Usage | None: ...

    def usage_from_event(self, data: bytes) -> ir.Usage | None: ...

    def prepare_passthrough(self, raw: dict[str, Any], stream: bool) -> bool:
        """Adjust the top-level fields of a pass-through body (values are `msgspec.Raw`); return True
        when the client must not see usage-only events it did not ask for (`is_usage_only`)."""
        ...

    def is_stream_end(self, event: Any) -> bool:
        """Whether this upstream SSE event ends the stream (a terminator or an in-band error)."""
        ...

    def is_usage_only(self, data: bytes) -> bool: ...


class NoPassthrough:
    """The pass-through hooks of a frontend whose format no backend speaks natively (so every
    request is translated and these are never consulted)."""

    usage_markers: ClassVar[tuple[bytes, ...]] = ()

    def usage_from_body(self, body: bytes) -> ir.Usage | None:
        return None

    def usage_from_event(self, data: bytes) -> ir.Usage | None:
        return None

    def prepare_passthrough(self, raw: dict[str, Any], stream: bool) -> bool:
        return False

    def is_stream_end(self, event: Any) -> bool:
        return False

    def is_usage_only(self, data: bytes) -> bool:
        return False


class Backend:
    """Base class of provider adapters.  Subclasses set the class attributes and override methods.

    Constructed once per configured backend at start-up, with the backend's config; must not do I/O.
    """

    provider: ClassVar[str]
    # Wire family for byte pass-through: "openai" or "anthropic", None when the format is native.
    family: ClassVar[str | None] = None
    # Provider-specific config keys, decoded from the backend's config block (unknown keys rejected).
    Options: ClassVar[type[msgspec.Struct]]
    # Provider-specific keys of a *model entry* routed to this backend (e.g. Vertex's `location`),
    # decoded into `Target.options`; None = the provider has none (such keys are a config error).
    ModelOptions: ClassVar[type[msgspec.Struct] | None] = None
    # IR optional parameters (see ir.OPTIONAL_PARAMS, plus "n") this backend can honour.  The rest are
    # dropped or rejected per the model's `unsupported_params` policy before chat_request is called.
    supported_params: ClassVar[frozenset[str]] = frozenset()
    # Parameters renamed on the way, for the parity table in the docs: IR name -> backend field.
    renamed_params: ClassVar[Mapping[str, str]] = {}
    # Prompt-only backends (TGI, llama.cpp /completion, Replicate prompt models) render chat messages
    # with the model's chat template; the config loader then fills `Target.chat_template`.
    uses_chat_template: ClassVar[bool] = False
    # Where the provider's public API lives, for configs that give no `base_url`.
    default_base_url: ClassVar[str | None] = None
    # Requests need a per-request credential step the proxy applies just before sending (signing,
    # a fetched OAuth token): a scheme of proxy/upstream_auth.py, e.g. "aws-sigv4".  The adapter
    # still builds the whole request (method, exact encoded URL, headers, body) and does no I/O.
    auth_scheme: ClassVar[str | None] = None

    def __init__(
        self, base_url: str, api_key: str | None, headers: Mapping[str, str], options: msgspec.Struct
    ) -> None:
        self.base_url = (base_url or self.default_base_url or "").rstrip("/")
        self.api_key = api_key or None
        self.extra_headers = dict(headers)
        self.options = options

    def supported_params_for(self, target: Target) -> frozenset[str]:
        """The parameters honoured for this model; a backend fronting several model families
        (Vertex AI: Gemini and Claude) narrows `supported_params` per target."""
        return self.supported_params

    # -- chat ------------------------------------------------------------------------------------
    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        raise NotImplementedError

    def chat_response(self, body: bytes, req: ir.ChatRequest, target: Target) -> ir.ChatResponse | FollowUp:
        raise NotImplementedError

    def stream_decoder(self, req: ir.ChatRequest, target: Target) -> StreamDecoder:
        raise NotImplementedError

    def prompt_tokens_from_headers(self, headers: Mapping[str, str]) -> int | None:
        """For backends that report the prompt token count only in a response header (TGI's
        `x-prompt-tokens`): the relay fills a missing `usage.input_tokens` from it."""
        return None

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
        raise NotImplementedError

    # -- embeddings (optional) -------------------------------------------------------------------
    def embeddings_request(self, req: ir.EmbeddingRequest, target: Target) -> HttpRequest | list[HttpRequest]:
        """One request, or a list when the provider embeds one input (or batch) per call (Bedrock
        Titan): the proxy sends them concurrently, parses each answer with `embeddings_response`
        (a missing token count filled from `prompt_tokens_from_headers`) and joins them in order."""
        raise unsupported(f"provider {self.provider!r} does not offer embeddings", param="model")

    def embeddings_response(self, body: bytes, req: ir.EmbeddingRequest) -> ir.EmbeddingResponse:
        raise unsupported(f"provider {self.provider!r} does not offer embeddings", param="model")

    # -- same-format pass-through (only when `family` is set) ------------------------------------
    def passthrough_request(
        self, op: str, body: bytes, stream: bool, target: Target, client_headers: Mapping[str, str]
    ) -> HttpRequest:
        """`op` is the frontend operation: "chat", "completions", "embeddings" (OpenAI family) or
        "messages", "count_tokens" (Anthropic family).  `body` already carries `target.model`.
        `client_headers` lets a family forward what its protocol expects (e.g. `anthropic-beta`)."""
        raise NotImplementedError
