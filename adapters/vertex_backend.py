"""Backend "vertex": Google Vertex AI, serving Gemini (publisher google) and Claude (publisher
anthropic) under one project, with an OAuth2 access token added by the proxy's "google-oauth" auth
step (proxy/auth_google.py, from the service-account file in `credentials` or ADC).

This adapter only builds URLs and picks the translation; the bodies and answers are the Gemini and
Anthropic adapters' own (`GeminiBackend.generate_body`, `AnthropicBackend.message_body`, their
decoders and error parsers), so both stay one implementation.

Quirks handled:
- URL: `{host}/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{action}`.
  The host is `{location}-aiplatform.googleapis.com`, `aiplatform.googleapis.com` for the `global`
  location, `aiplatform.{us,eu}.rep.googleapis.com` for the multi-regional ones; `base_url` replaces it (scheme, host and port: VPC endpoints, tests).  A model
  entry may set `location:` (Claude and Gemini live in different regions) and `publisher:`;
  otherwise the publisher is anthropic for `claude*` model ids, google for the rest.
- Gemini: `:generateContent`, `:streamGenerateContent?alt=sse`, the Gemini body as is.
- Claude: `:rawPredict`, `:streamRawPredict` with the Messages body minus `model` (it is in the URL)
  plus `anthropic_version` (option; default the value the official AnthropicVertex client sends);
  `"stream": true` stays in the body for streamRawPredict.
- Errors: Vertex answers 401/403/429 in Google's format (`{"error": {"code", "message",
  "status"}}`) even for Claude, and Claude's own 400/500/529 in Anthropic's: the body's shape picks
  the parser.
- Parameters: the Gemini or the Anthropic table, per model (`supported_params_for`); the class's
  `supported_params` (the parity table) is their union.
- Same format (`family_for`): Anthropic clients on Claude and Gemini clients on Gemini are relayed
  byte for byte (Claude: `model` moved from the body into the URL, `anthropic_version` added,
  `anthropic-beta` forwarded; count_tokens at Vertex's `count-tokens:rawPredict`); other clients are
  translated.  Not offered: Gemini clients' embed operations (Vertex has no embedContent).
- Embeddings (OpenAI clients): `:predict` with `{"instances": [{"content"}], "parameters":
  {"outputDimensionality"}}` for Google's embedding models; usage from `statistics.token_count`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote

import msgspec

from . import ir, jsonio
from .anthropic_backend import AnthropicBackend, AnthropicOptions
from .anthropic_response import parse_error_body as anthropic_error
from .anthropic_stream import AnthropicStreamDecoder
from .base import Backend, HttpRequest, Target
from .common import path_segment
from .errors import ProxyError, unsupported
from .gemini_backend import GeminiBackend, GeminiOptions
from .gemini_response import parse_error_body as google_error
from .gemini_stream import GeminiStreamDecoder

# What anthropic-python's AnthropicVertex puts in the body (anthropic/lib/vertex/_client.py sets
# `anthropic_version` to the SDK's ANTHROPIC_API_VERSION; older SDKs sent "vertex-2023-10-16").
ANTHROPIC_VERSION = "2026-10-21"
GLOBAL_HOST = "https://aiplatform.googleapis.com"
API_VERSION = "v1"

# Location and project ids go into the URL path: only what Google's ids are made of.
Location = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]*$")]
Project = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9.:-]*$")]
Publisher = Literal["google", "anthropic"]


class VertexOptions(msgspec.Struct, forbid_unknown_fields=True):
    project: Project
    location: Location = "us-central1"
    credentials: str | None = None  # service-account JSON file; None = Application Default Credentials
    anthropic_version: str = ANTHROPIC_VERSION
    default_max_tokens: int | None = None  # Claude requires max_tokens (else model-aware, see anthropic)


class VertexModelOptions(msgspec.Struct, forbid_unknown_fields=True):
    location: Location | None = None
    publisher: Publisher | None = None


def host_for(location: str) -> str:
    """Google's host for a location: the global endpoint, the multi-regional `us` / `eu` ones (as the
    official clients pick them), or the regional `{location}-aiplatform`."""
    if location == "global":
        return GLOBAL_HOST
    if location in ("us", "eu"):
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def publisher_of(target: Target) -> Publisher:
    opts: VertexModelOptions | None = target.options
    if opts is not None and opts.publisher is not None:
        return opts.publisher
    return "anthropic" if target.model.startswith("claude") else "google"


class _Statistics(msgspec.Struct):
    token_count: float = 0


class _Embedding(msgspec.Struct):
    values: list[float]
    statistics: _Statistics | None = None


class _Prediction(msgspec.Struct):
    embeddings: _Embedding


class _Predictions(msgspec.Struct):
    predictions: list[_Prediction]


_predictions = jsonio.decoder(_Predictions)


class _ErrorType(msgspec.Struct):
    type: str | None = None


_error_type = jsonio.decoder(_ErrorType)


class VertexBackend(Backend):
    provider: ClassVar[str] = "vertex"
    Options = VertexOptions
    ModelOptions = VertexModelOptions
    auth_scheme: ClassVar[str | None] = "google-oauth"
    default_base_url: ClassVar[str | None] = GLOBAL_HOST  # replaced per location unless base_url is set
    supported_params: ClassVar[frozenset[str]] = GeminiBackend.supported_params | AnthropicBackend.supported_params
    renamed_params: ClassVar[Mapping[str, str]] = {
        "stop": "generationConfig.stopSequences / stop_sequences",
        "top_p": "generationConfig.topP / top_p",
        "top_k": "generationConfig.topK / top_k",
        "temperature": "generationConfig.temperature / temperature",
        "reasoning": "generationConfig.thinkingConfig / thinking",
        "response_format": "responseMimeType + responseJsonSchema / forced tool",
        "tools": "functionDeclarations / tools",
        "tool_choice": "toolConfig / tool_choice",
        "seed": "generationConfig.seed (Gemini only)",
        "presence_penalty": "generationConfig.presencePenalty (Gemini only)",
        "frequency_penalty": "generationConfig.frequencyPenalty (Gemini only)",
        "user": "metadata.user_id (Claude only)",
        "parallel_tool_calls": "tool_choice.disable_parallel_tool_use (Claude only)",
    }

    options: VertexOptions

    def __init__(self, base_url: str, api_key: str | None, headers: Mapping[str, str], options: msgspec.Struct) -> None:
        super().__init__(base_url, None, headers, options)
        self._host_override = base_url.rstrip("/") or None
        self._headers = {"content-type": "application/json", **self.extra_headers}
        # The translations, configured as Vertex needs them (no key: the auth step adds the token).
        self.gemini = GeminiBackend("", None, {}, GeminiOptions())
        self.claude = AnthropicBackend("", None, {}, AnthropicOptions(default_max_tokens=self.options.default_max_tokens))
        self._prefix = f"/{API_VERSION}/projects/{quote(self.options.project, safe='')}/locations/"
        self._anthropic_version = jsonio.Raw(jsonio.dumps(self.options.anthropic_version))

    def _url(self, target: Target, publisher: Publisher, action: str) -> str:
        opts: VertexModelOptions | None = target.options
        location = (opts.location if opts is not None else None) or self.options.location
        host = self._host_override or host_for(location)
        # One path segment (a wildcard route puts client text here); `@` stays literal as in
        # Vertex's own ids (claude-3-5-sonnet-v2@20241022): it is a path character.
        model = path_segment(target.model).replace("%40", "@")
        return f"{host}{self._prefix}{location}/publishers/{publisher}/models/{model}:{action}"

    def family_for(self, target: Target) -> str:
        """Anthropic clients on Claude and Gemini clients on Gemini are relayed byte for byte."""
        return "anthropic" if publisher_of(target) == "anthropic" else "gemini"

    def supported_params_for(self, target: Target) -> frozenset[str]:
        return (self.claude if publisher_of(target) == "anthropic" else self.gemini).supported_params

    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        if publisher_of(target) == "anthropic":
            body: dict[str, Any] = self.claude.message_body(req, target)
            del body["model"]
            body["anthropic_version"] = self.options.anthropic_version
            url = self._url(target, "anthropic", "streamRawPredict" if req.stream else "rawPredict")
        else:
            body = self.gemini.generate_body(req, target)
            url = self._url(target, "google", "streamGenerateContent?alt=sse" if req.stream else "generateContent")
        return HttpRequest(url=url, body=jsonio.dumps(body), headers=dict(self._headers), stream=req.stream)

    def chat_response(self, body: bytes, req: ir.ChatRequest, target: Target) -> ir.ChatResponse:
        delegate = self.claude if publisher_of(target) == "anthropic" else self.gemini
        return delegate.chat_response(body, req, target)

    def stream_decoder(self, req: ir.ChatRequest, target: Target) -> AnthropicStreamDecoder | GeminiStreamDecoder:
        delegate = self.claude if publisher_of(target) == "anthropic" else self.gemini
        return delegate.stream_decoder(req, target)

    # -- embeddings (publisher google: text-embedding-*, gemini-embedding-*) -------------------------
    def embeddings_request(self, req: ir.EmbeddingRequest, target: Target) -> HttpRequest:
        if publisher_of(target) != "google":
            raise unsupported("Claude on Vertex AI offers no embeddings", param="model")
        if any(not isinstance(item, str) for item in req.input):
            raise unsupported("the vertex backend embeds text only, not token arrays", param="input")
        body: dict[str, Any] = {"instances": [{"content": text} for text in req.input]}
        if req.dimensions is not None:
            body["parameters"] = {"outputDimensionality": req.dimensions}
        return HttpRequest(url=self._url(target, "google", "predict"), body=jsonio.dumps(body), headers=dict(self._headers))

    def embeddings_response(self, body: bytes, req: ir.EmbeddingRequest) -> ir.EmbeddingResponse:
        try:
            predictions = _predictions.decode(body).predictions
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise ProxyError("upstream_protocol", "Vertex AI sent an embeddings answer that cannot be parsed") from None
        tokens = sum(int(p.embeddings.statistics.token_count) for p in predictions if p.embeddings.statistics)
        return ir.EmbeddingResponse(model=req.model, data=[p.embeddings.values for p in predictions],
                                    usage=ir.Usage(input_tokens=tokens))

    def passthrough_request(
        self, op: str, body: bytes, stream: bool, target: Target, client_headers: Mapping[str, str]
    ) -> HttpRequest:
        """Same-format requests: the client's body, with Vertex's URL (and, for Claude messages, the
        body's `model` moved into the URL and `anthropic_version` added)."""
        headers = dict(self._headers)
        if publisher_of(target) == "anthropic":
            if op not in ("messages", "count_tokens"):
                raise ProxyError("not_found", f"operation {op!r} is not available for Claude on Vertex AI")
            raw = jsonio.top_level_raw(body)
            raw["anthropic_version"] = self._anthropic_version
            if op == "messages":
                raw.pop("model", None)
                url = self._url(target, "anthropic", "streamRawPredict" if stream else "rawPredict")
            else:  # Vertex counts tokens at one fixed "model", naming the real one in the body
                url = self._url(Target(model="count-tokens", options=target.options), "anthropic", "rawPredict")
            beta = next((v for k, v in client_headers.items() if k.lower() == "anthropic-beta"), None)
            if beta:
                headers["anthropic-beta"] = beta
            return HttpRequest(url=url, body=jsonio.encode_raw_object(raw), headers=headers, stream=stream)
        actions = {"generate": "streamGenerateContent?alt=sse" if stream else "generateContent", "count_tokens": "countTokens"}
        if op not in actions:
            raise ProxyError("not_found", f"operation {op!r} is not available for Gemini on Vertex AI")
        return HttpRequest(url=self._url(target, "google", actions[op]), body=body, headers=headers, stream=stream)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
        """Anthropic's shape (`"type": "error"`) from Claude itself, else Google's from Vertex."""
        try:
            anthropic_shaped = _error_type.decode(body).type == "error"
        except (msgspec.DecodeError, msgspec.ValidationError):
            anthropic_shaped = False
        return (anthropic_error if anthropic_shaped else google_error)(status, headers, body)
