"""The two adapter contracts: a *frontend* speaks a client's format, a *backend* speaks a provider's.

How a request flows (the proxy does the I/O, adapters only convert):

    client bytes --Frontend.parse_chat--> ChatRequest --params.apply_policy--> ChatRequest
        --Backend.chat_request--> HttpRequest ==proxy sends==> upstream
    upstream bytes --Backend.chat_response / stream_decoder().feed--> ChatResponse / [Event]
        --Frontend.render_chat / stream_encoder().feed--> client bytes

Each frontend declares its routes (`Frontend.routes`: path, operation, where the model and the stream
flag are); the proxy serves whatever the registry lists.  When the frontend is also a `Passthrough`
and its `name` equals the backend's `family` (OpenAI client on an OpenAI-compatible server, Anthropic
on Anthropic, Ollama on Ollama) the proxy skips the IR entirely: it rewrites only `model` in the body
and relays the upstream bytes (`Backend.passthrough_request`).

Errors: every method may raise `adapters.errors.ProxyError`; nothing else may escape for bad input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import msgspec

from . import ir
from .jsonio import TopLevel
from .errors import ProxyError, unsupported
from .sse import SSEEvent


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


# --------------------------------------------------------------------------------------------------
# Frontends: what a client format serves, declared by the format itself.  The proxy wires every route
# a registered frontend lists and calls the typed callables below; it knows no format by name.


@dataclass(frozen=True, slots=True)
class ChatOp:
    """A generation (chat, legacy completion, Responses): body -> ChatRequest, answer -> body/stream."""

    name: str  # the operation as `Backend.passthrough_request` receives it
    # (body, its top level as the gateway already split it) -> request; the split is reused for the
    # unknown fields kept in `extra`, so the body is split once.
    parse: Callable[[bytes, TopLevel], ir.ChatRequest]
    render: Callable[[ir.ChatResponse, str], bytes]  # (answer, client model) -> body
    stream_encoder: Callable[[ir.ChatRequest, str], StreamEncoder]
    # Where the client's cap on completion tokens is (top-level field paths, first found wins): the
    # gateway reserves that many tokens against a key's limits before the answer counts them.
    max_tokens_fields: tuple[tuple[str, ...], ...] = ()
    # A format whose answer depends on the request (the Responses API names calls as the client
    # declared its tools, and repeats the request's settings) renders with it instead of `render`.
    render_with_request: Callable[[ir.ChatResponse, str, ir.ChatRequest], bytes] | None = None
    # A format with server-side state (stored answers, continuations): the proxy plans, loads what
    # the plan names, builds the request with it, and stores the finished `Turn`.
    stored: StoredFormat | None = None


@dataclass(slots=True)
class Turn:
    """One generation as the gateway stores it (formats with server-side state: the Responses API).

    The frontend's `StoredFormat.build` makes it and puts it on the request; its renderer and stream
    encoder answer with `response_id` and set `final` (the answer object, output items carrying their
    ids) when the answer is complete; the proxy then stores it for the caller's key."""

    response_id: str
    store: bool
    input_items: list[dict[str, Any]]  # this request's own input, each item with an "id"
    history: list[str]  # ids of the stored items the request continued (before `input_items`)
    previous_response_id: str | None = None
    conversation_id: str | None = None
    instructions: str | None = None  # echoed on the answer (never carried to a continuation)
    final: dict[str, Any] | None = None


@dataclass(slots=True)
class StatePlan:
    """What a request needs from the store before it can be built (read by the proxy)."""

    body: Any  # the decoded request, for `StoredFormat.build`
    store: bool
    previous_response_id: str | None = None
    conversation_id: str | None = None
    references: list[str] = field(default_factory=list)  # item ids the input refers to


@dataclass(frozen=True, slots=True)
class EmbeddingsOp:
    name: str
    parse: Callable[[bytes], ir.EmbeddingRequest]
    render: Callable[[ir.EmbeddingResponse, str, str | None], bytes]  # (answer, model, encoding_format)


@dataclass(frozen=True, slots=True)
class CountTokensOp:
    """Forwarded as is to a backend of the frontend's own family; estimated by the gateway on any
    other (decided per attempt, so a fallback to another family still answers a count)."""

    name: str
    estimate: Callable[[bytes], int]
    render: Callable[[int], bytes]


Operation = ChatOp | EmbeddingsOp | CountTokensOp


@dataclass(frozen=True, slots=True)
class InBody:
    """The model (a required string) and the stream flag are top-level fields of the JSON body."""

    operation: Operation
    stream_default: bool = False  # when the body has no (boolean) stream field
    model_field: str = "model"
    stream_field: str = "stream"


@dataclass(frozen=True, slots=True)
class InUrl:
    """The model, the operation and the stream flag are in the URL: the route's `{target}` path
    variable and the query go through `locate` -> (model, operation name, stream)."""

    operations: Mapping[str, Operation]
    locate: Callable[[str, Mapping[str, str]], tuple[str, str, bool]]


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """`POST path`: one API call in this format.  The client's key is read from the places its
    frontend declares (`Frontend.client_key`), as for every other route of that frontend."""

    path: str  # an aiohttp path pattern; `InUrl` routes name a `{target}` variable
    target: InBody | InUrl
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class ModelList:
    """`GET path`: the configured models (those the caller's key may use) in this format.  When two
    formats list models on the same path, the one with `when_header` answers requests carrying it."""

    path: str
    render: Callable[[list[str]], bytes]
    when_header: str | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """`GET path` with a `{model}` variable: one configured model in this format."""

    path: str
    render: Callable[[str], bytes]


@dataclass(frozen=True, slots=True)
class StaticInfo:
    """`GET path`: a fixed document (Ollama's /api/version)."""

    path: str
    render: Callable[[], bytes]


class StoredFormat(Protocol):
    """The pure half of a format's server-side state; `proxy/stored.py` does the reads and writes.

    Ids from a client (URL, body) are checked by `check_id` before any lookup.  Stored objects are
    the answer object of a `Turn`, items (JSON objects with an "id"), and containers (objects with
    an ordered list of item ids: the Responses API's conversations)."""

    def plan(self, body: bytes) -> StatePlan: ...

    def build(self, plan: StatePlan, context: list[dict[str, Any]], found: dict[str, dict[str, Any]]) -> ir.ChatRequest:
        """The request: `context` (the stored items it continues, in order) before its own input, whose
        references are resolved from `found` (id -> item; a missing one is the format's to judge)."""
        ...

    def turn(self, req: ir.ChatRequest) -> Turn | None: ...

    def check_id(self, value: str, param: str) -> str: ...

    def not_found(self, what: str, oid: str, param: str | None) -> ProxyError: ...

    def new_items(self, body: bytes, limit: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """(items with ids, metadata) from a body adding items to a container (or creating one)."""
        ...

    def metadata(self, body: bytes) -> dict[str, Any]: ...

    def container(self, cid: str, created_at: int, metadata: dict[str, Any]) -> dict[str, Any]: ...

    def new_container_id(self) -> str: ...

    def page(self, items: list[dict[str, Any]], query: Mapping[str, str]) -> bytes: ...  # a list's page

    def deleted(self, what: str, oid: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class StoreRoute:
    """`method path`: an operation on what the gateway stored for the caller's key.  `action` is one
    of `proxy.stored.ACTIONS`; `{id}` / `{item_id}` path variables go through `stored.check_id`."""

    method: str
    path: str
    action: str
    stored: StoredFormat


Route = ApiRoute | ModelList | ModelInfo | StaticInfo | StoreRoute


@dataclass(frozen=True, slots=True)
class KeyIn:
    """One place a format's clients send their API key: a header (whose value starts with `scheme`,
    e.g. "Bearer", when it names one) or a query parameter."""

    header: str | None = None
    scheme: str | None = None
    query: str | None = None


BEARER = KeyIn(header="Authorization", scheme="Bearer")


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """One dialect of rate-limit response headers; `{kind}` in a name is "requests" or "tokens".
    `reset_value(seconds, now)`: how the dialect writes the time until the window is back to its
    initial state (`seconds` from `now`, epoch seconds)."""

    limit: str
    remaining: str
    reset: str
    reset_value: Callable[[float, float], str]


def _duration(seconds: float, now: float) -> str:
    """OpenAI's reset format: 20ms, 1s, 6m0s."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s}s"


# OpenAI's headers, which most OpenAI-compatible servers copy: every frontend sends them unless it
# declares otherwise.
X_RATELIMIT = RateLimitHeaders("x-ratelimit-limit-{kind}", "x-ratelimit-remaining-{kind}",
                               "x-ratelimit-reset-{kind}", _duration)  # fmt: skip


class Frontend(Protocol):
    """A client-facing API format: what it serves (`routes`) and how it reports errors."""

    name: ClassVar[str]
    stream_content_type: ClassVar[str]
    # Where its clients send their key, first found wins (every route of the format reads these).
    client_key: ClassVar[tuple[KeyIn, ...]]
    # The rate-limit headers a limited key's answers carry, in every dialect its clients read.
    rate_limit_headers: ClassVar[tuple[RateLimitHeaders, ...]]
    # Paths outside its routes whose errors (404, 405, 401 on the gateway's own endpoints) are
    # rendered in this format; a path no frontend claims gets the registry's default frontend's.
    error_prefixes: ClassVar[tuple[str, ...]]

    def routes(self) -> Sequence[Route]: ...

    def render_error(self, err: ProxyError) -> tuple[int, bytes]: ...


@runtime_checkable
class Passthrough(Protocol):
    """A frontend whose format some backend family speaks natively (`Backend.family == name`): the
    relay then sends the client's bytes with only the model rewritten and relays the answer's bytes,
    reading only what metrics need.  `stream_framing` says how its streams are cut into events."""

    name: ClassVar[str]
    stream_framing: ClassVar[str]  # "sse" | "ndjson"
    usage_markers: ClassVar[tuple[bytes, ...]]  # bytes that flag an event worth reading usage from

    # Both raise ProxyError("upstream_protocol") for data that is not valid JSON.
    def usage_from_body(self, body: bytes) -> ir.Usage | None: ...

    def usage_from_event(self, data: bytes) -> ir.Usage | None: ...

    def prepare_passthrough(self, raw: dict[str, Any], stream: bool) -> bool:
        """Adjust the top-level fields of a pass-through body (values are `msgspec.Raw`); return True
        when the client must not see usage-only events it did not ask for (`is_usage_only`)."""
        ...

    def is_stream_end(self, event: SSEEvent) -> bool:
        """Whether this upstream event (an NDJSON line arrives as an event's data) ends the stream:
        a terminator or an in-band error."""
        ...

    def is_usage_only(self, data: bytes) -> bool: ...


@dataclass(slots=True, frozen=True)
class LoadMetricNames:
    """The Prometheus gauges in which a model server reports its own load, for load-aware routing.

    Each signal lists the names it has had across server versions, newest first (the first one a
    scrape finds wins); an empty tuple means the server does not report that signal."""

    waiting: tuple[str, ...] = ()  # requests queued for a batch slot
    running: tuple[str, ...] = ()  # requests in the running batch
    kv_cache: tuple[str, ...] = ()  # fraction (0..1) of the KV cache in use


class Backend:
    """Base class of provider adapters.  Subclasses set the class attributes and override methods.

    Constructed once per configured backend at start-up, with the backend's config; must not do I/O.
    """

    provider: ClassVar[str]
    # Wire family for byte pass-through: the name of the frontend that speaks this backend's API
    # ("openai", "anthropic", "gemini", "ollama"), None when no frontend does.
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
    # Model servers: the gauges of their /metrics page that tell their load (None: not a model server).
    load_metrics: LoadMetricNames | None = None

    def __init__(
        self, base_url: str, api_key: str | None, headers: Mapping[str, str], options: msgspec.Struct
    ) -> None:
        self.base_url = (base_url or self.default_base_url or "").rstrip("/")
        self.api_key = api_key or None
        self.extra_headers = dict(headers)
        self.options = options

    def family_for(self, target: Target) -> str | None:
        """The wire family of this model (pass-through when it is the client's format); a backend
        fronting several model families (Vertex AI: Gemini and Claude) answers per target."""
        return self.family

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
