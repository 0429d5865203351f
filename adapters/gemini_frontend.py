"""Google Gemini API (Generative Language API), client side: the frontend serving
`/v1beta/models/{m}:{action}`.

Split by concern: `gemini_request` (client body -> IR), `gemini_response` (rendering answers and
errors), `gemini_stream` (SSE both ways); the backend is `gemini_backend`.  This module holds the
frontend class and the URL/operation handling.

Quirks handled (what is dropped, renamed or synthesised):
- The model and the operation are in the URL, not the body; a stream is `:streamGenerateContent` with
  `?alt=sse` (without it Gemini answers one JSON array: the frontend refuses that with a 400, the
  backend always asks for SSE).  Streams have no terminator: they end when the connection closes
  after the chunk carrying `finishReason`.
- Frontend: thought parts -> reasoning (provider "gemini", with `thoughtSignature`); function calls
  without ids get deterministic ids, function responses are paired with calls by name and order;
  `{"output": x}` / `{"error": x}` responses -> tool result text / error flag; Gemini `Schema`
  parameters are converted to JSON Schema (`parametersJsonSchema` is taken as is); ANY with several
  allowedFunctionNames -> `required` over those tools only; VALIDATED -> auto (lossy);
  includeThoughts has no IR slot; built-in tools (googleSearch, codeExecution, urlContext), code
  execution parts and non-image inline data are refused (400 unsupported); safetySettings,
  cachedContent and other unknown top-level fields -> `extra` (sent again only to Gemini).
- Frontend output: tool calls are written whole (an `args` object; invalid JSON -> {}) at their
  block end; any provider's reasoning is shown as thought parts but only a Gemini signature is
  included; finish tool_calls/pause -> STOP, content_filter -> SAFETY (a raw Gemini value that maps
  to the same reason is kept); usage: candidatesTokenCount = output - reasoning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from . import ir, jsonio
from .jsonio import TopLevel
from .base import BEARER, X_RATELIMIT, ApiRoute, ChatOp, CountTokensOp, EmbeddingsOp, InUrl, KeyIn, Operation, Route
from .common import decode_client_body
from .errors import ProxyError, bad_request, unsupported
from .gemini_request import Content, parse_request, strip_models
from .gemini_response import error_object, render_response, usage_only
from .gemini_stream import GeminiStreamEncoder
from .sse import SSEEvent

__all__ = ["GeminiFrontend"]

# URL action -> (operation, stream)
ACTIONS: dict[str, tuple[str, bool]] = {
    "generateContent": ("generate", False),
    "streamGenerateContent": ("generate", True),
    "countTokens": ("count_tokens", False),
    "embedContent": ("embed", False),
    "batchEmbedContents": ("batch_embed", False),
}

# count_tokens estimate: ~4 characters a token; Gemini bills an image at 258 tokens.
CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 258

# --------------------------------------------------------------------------------------------------
# Frontend wire types beyond generateContent


class _EmbedRequest(msgspec.Struct):
    content: Content
    outputDimensionality: int | None = None
    taskType: str | None = None
    model: str | None = None


class _BatchEmbedRequest(msgspec.Struct):
    requests: list[_EmbedRequest]


class _CountTokensRequest(msgspec.Struct):
    contents: list[Content] = []
    generateContentRequest: dict[str, Any] | None = None


_embed_decoder = jsonio.decoder(_EmbedRequest)
_batch_decoder = jsonio.decoder(_BatchEmbedRequest)
_count_decoder = jsonio.decoder(_CountTokensRequest)


def _embed_text(r: _EmbedRequest, path: str) -> str:
    texts = []
    for j, p in enumerate(r.content.parts):
        if p.text is None:
            raise unsupported("only text can be embedded", param=f"{path}.content.parts[{j}]")
        texts.append(p.text)
    return "\n".join(texts)


class GeminiFrontend:
    """The Gemini API for clients (google-genai and REST).  Stateless."""

    name: ClassVar[str] = "gemini"
    stream_content_type: ClassVar[str] = "text/event-stream"
    # google-genai sends x-goog-api-key; the REST docs use ?key=; Google's APIs also take a bearer token.
    client_key = (KeyIn(header="x-goog-api-key"), KeyIn(query="key"), BEARER)
    rate_limit_headers = (X_RATELIMIT,)
    error_prefixes = ("/v1beta/",)
    stream_framing: ClassVar[str] = "sse"
    # Pass-through: only events containing one of these carry token counts worth decoding.
    usage_markers: ClassVar[tuple[bytes, ...]] = (b'"usageMetadata":{', b'"usageMetadata": {')

    def routes(self) -> list[Route]:
        ops: dict[str, Operation] = {
            "generate": ChatOp("generate", self.parse_chat, self.render_chat, self.stream_encoder,
                               (("generationConfig", "maxOutputTokens"),)),
            "count_tokens": CountTokensOp("count_tokens", self.count_tokens_estimate, self.render_token_count),
            "embed": EmbeddingsOp("embed", self.parse_embeddings, self.render_embeddings),
            "batch_embed": EmbeddingsOp("batch_embed", self.parse_batch_embeddings, self.render_batch_embeddings),
        }
        in_url = InUrl(ops, self.request_target)
        # POST only: GET /v1/models/{id} stays OpenAI's.
        return [ApiRoute("/v1beta/models/{target}", in_url), ApiRoute("/v1/models/{target}", in_url)]

    # -- URL ----------------------------------------------------------------------------------------
    def request_target(self, path_model_action: str, query: Mapping[str, str]) -> tuple[str, str, bool]:
        """`gemini-2.5-flash:streamGenerateContent` (the path after `/models/`) -> (model, op, stream);
        op is generate | count_tokens | embed | batch_embed.  The action follows the *last* colon, so
        model names with colons (`llama3.1:8b`) work."""
        model, sep, action = path_model_action.rpartition(":")
        if not sep or not model:
            raise ProxyError("not_found", "expected /models/{model}:{action}, e.g. gemini-2.5-flash:generateContent")
        if action not in ACTIONS:
            raise ProxyError("not_found", f"unknown action {action!r}; supported: {', '.join(ACTIONS)}")
        op, stream = ACTIONS[action]
        if stream and query.get("alt") != "sse":
            raise bad_request("streamGenerateContent needs ?alt=sse (the JSON-array framing is not supported)", param="alt")
        return strip_models(model), op, stream

    # -- requests -----------------------------------------------------------------------------------
    def parse_chat(self, body: bytes, raw: TopLevel | None = None) -> ir.ChatRequest:
        return parse_request(body, raw)

    def parse_embeddings(self, body: bytes) -> ir.EmbeddingRequest:
        """`:embedContent` body -> one input."""
        r: _EmbedRequest = decode_client_body(_embed_decoder, body, "embedContent request")
        return ir.EmbeddingRequest(model="", input=[_embed_text(r, "content")], dimensions=r.outputDimensionality)

    def parse_batch_embeddings(self, body: bytes) -> ir.EmbeddingRequest:
        """`:batchEmbedContents` body -> one input per request (all at the URL's model)."""
        b: _BatchEmbedRequest = decode_client_body(_batch_decoder, body, "batchEmbedContents request")
        dims = {r.outputDimensionality for r in b.requests}
        if len(dims) > 1:
            raise unsupported("all requests of a batch must ask for the same outputDimensionality", param="requests")
        texts = [_embed_text(r, f"requests[{i}]") for i, r in enumerate(b.requests)]
        return ir.EmbeddingRequest(model="", input=texts, dimensions=dims.pop() if dims else None)

    def count_tokens_estimate(self, body: bytes) -> int:
        """Estimated prompt tokens of a `:countTokens` body (`contents`, or a whole
        `generateContentRequest`); answer it as {"totalTokens": n}."""
        c: _CountTokensRequest = decode_client_body(_count_decoder, body, "countTokens request")
        if c.generateContentRequest is not None:
            req = parse_request(jsonio.dumps(c.generateContentRequest))
        else:
            req = parse_request(jsonio.dumps({"contents": [msgspec.to_builtins(x) for x in c.contents]}))
        chars = sum(len(t.text) for t in req.system)
        images = 0
        for m in req.messages:
            for p in m.parts:
                if isinstance(p, ir.Image):
                    images += 1
                elif isinstance(p, ir.ToolResult):
                    chars += sum(len(x.text) for x in p.content if isinstance(x, ir.Text))
                elif isinstance(p, ir.ToolCall):
                    chars += len(p.name) + len(p.arguments)
                else:
                    chars += len(p.text)  # type: ignore[union-attr]
        chars += sum(len(t.name) + len(t.description or "") + len(jsonio.dumps(t.parameters)) for t in req.tools)
        return math.ceil(chars / CHARS_PER_TOKEN) + images * IMAGE_TOKENS

    # -- responses ----------------------------------------------------------------------------------
    def render_chat(self, resp: ir.ChatResponse, model: str) -> bytes:
        return jsonio.dumps(render_response(resp, model))

    def render_embeddings(self, resp: ir.EmbeddingResponse, model: str, encoding_format: str | None = None) -> bytes:
        """`:embedContent` answer (Gemini has no encoding choice: always float values)."""
        return jsonio.dumps({"embedding": {"values": resp.data[0] if resp.data else []}})

    def render_batch_embeddings(self, resp: ir.EmbeddingResponse, model: str, encoding_format: str | None = None) -> bytes:
        return jsonio.dumps({"embeddings": [{"values": v} for v in resp.data]})

    def render_token_count(self, n: int) -> bytes:
        return jsonio.dumps({"totalTokens": n})

    def stream_encoder(self, req: ir.ChatRequest, model: str) -> GeminiStreamEncoder:
        return GeminiStreamEncoder(req, model)

    # -- errors and pass-through metrics --------------------------------------------------------------
    def render_error(self, err: ProxyError) -> tuple[int, bytes]:
        return err.status, jsonio.dumps({"error": error_object(err)})

    def usage_from_body(self, body: bytes) -> ir.Usage | None:
        return usage_only(body)

    def usage_from_event(self, data: bytes) -> ir.Usage | None:
        return usage_only(data)

    # Gemini streams always carry usageMetadata: the pass-through body is never changed.
    def prepare_passthrough(self, raw: dict[str, Any], stream: bool) -> bool:
        return False

    def is_stream_end(self, event: SSEEvent) -> bool:
        data = event.data
        return b'"finishReason"' in data or data.lstrip().startswith(b'{"error"')

    def is_usage_only(self, data: bytes) -> bool:
        return False


# --------------------------------------------------------------------------------------------------
