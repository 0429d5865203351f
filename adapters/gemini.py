"""Google Gemini API (Generative Language API): the client-facing frontend (`/v1beta/models/{m}:{action}`)
and the backend family "gemini".

Split by concern: `gemini_request` (client body -> IR), `gemini_build` (IR -> request body),
`gemini_response` (responses, usage, finish reasons, errors), `gemini_stream` (SSE both ways).  This
module holds the two adapter classes and the URL/operation handling.

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
- Backend: see `gemini_build` for roles, tool results, images and signatures.  `stop` is cut to the
  first 5 sequences (Gemini's limit); `response_format` -> responseMimeType application/json
  (+ responseJsonSchema); reasoning -> thinkingConfig (budget, effort table in gemini_build, 0 = off,
  includeThoughts so the reasoning reaches clients).  Not expressible (left to the drop/error
  policy): min_p, repetition_penalty, logit_bias, logprobs, top_logprobs, user, metadata,
  parallel_tool_calls, n > 1.
- Backend answers: STOP with function calls -> tool_calls; MAX_TOKENS -> length; the safety family
  -> content_filter; MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS,
  MALFORMED_RESPONSE, MISSING_THOUGHT_SIGNATURE -> error; a blocked prompt (no candidates,
  promptFeedback.blockReason) -> content_filter with no content; tool-call ids are synthesised;
  usage: output = candidates + thoughts, input = prompt + tool-use prompt.  Errors: the `status`
  decides the kind; 400 with reason API_KEY_INVALID -> authentication; RetryInfo.retryDelay is read
  when there is no Retry-After header.  A multi-line raw JSON error in a stream (not a `data:`
  event) is not parsed: the stream then ends without finishReason (upstream_protocol).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import msgspec

from . import ir, jsonio
from .base import Backend, HttpRequest, Target
from .common import decode_client_body, merge_params
from .errors import ProxyError, bad_request, unsupported
from .gemini_build import MAX_STOP, build_contents, build_tools, generation_config
from .gemini_request import Content, parse_request
from .gemini_response import error_object, parse_error_body, render_response, response_decoder, usage_only
from .gemini_stream import GeminiStreamDecoder, GeminiStreamEncoder
from .sse import SSEEvent

__all__ = ["GeminiFrontend", "GeminiBackend", "GeminiOptions", "MAX_STOP"]

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


def _strip_models(model: str) -> str:
    return model[len("models/"):] if model.startswith("models/") else model


class GeminiFrontend:
    """The Gemini API for clients (google-genai and REST).  Stateless."""

    name: ClassVar[str] = "gemini"
    stream_content_type: ClassVar[str] = "text/event-stream"
    # Pass-through: only events containing one of these carry token counts worth decoding.
    usage_markers: ClassVar[tuple[bytes, ...]] = (b'"usageMetadata":{', b'"usageMetadata": {')

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
        return _strip_models(model), op, stream

    # -- requests -----------------------------------------------------------------------------------
    def parse_chat(self, body: bytes) -> ir.ChatRequest:
        return parse_request(body)

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
# Backend


class GeminiOptions(msgspec.Struct, forbid_unknown_fields=True):
    api_version: str = "v1beta"
    safety_settings: list[dict[str, Any]] | None = None  # sent as is with every generate request
    include_thoughts: bool = True  # ask for thought summaries whenever reasoning is enabled
    thinking_budget: int | None = None  # thinkingBudget when the request says nothing about reasoning


class GeminiBackend(Backend):
    provider: ClassVar[str] = "gemini"
    family: ClassVar[str | None] = "gemini"
    Options = GeminiOptions
    default_base_url: ClassVar[str | None] = "https://generativelanguage.googleapis.com"
    supported_params: ClassVar[frozenset[str]] = frozenset(
        {"temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty", "seed", "stop",
         "response_format", "reasoning", "tools", "tool_choice"}
    )
    renamed_params: ClassVar[Mapping[str, str]] = {
        "max_tokens": "generationConfig.maxOutputTokens",
        "temperature": "generationConfig.temperature",
        "top_p": "generationConfig.topP",
        "top_k": "generationConfig.topK",
        "presence_penalty": "generationConfig.presencePenalty",
        "frequency_penalty": "generationConfig.frequencyPenalty",
        "seed": "generationConfig.seed",
        "stop": "generationConfig.stopSequences (at most 5)",
        "response_format": "generationConfig.responseMimeType + responseJsonSchema",
        "reasoning": "generationConfig.thinkingConfig",
        "tools": "tools[].functionDeclarations",
        "tool_choice": "toolConfig.functionCallingConfig",
    }

    options: GeminiOptions

    def _url(self, model: str, action: str) -> str:
        return f"{self.base_url}/{self.options.api_version}/models/{quote(_strip_models(model), safe='-._~:')}:{action}"

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", **self.extra_headers}
        if self.api_key:
            headers["x-goog-api-key"] = self.api_key
        return headers

    def _generate_url(self, model: str, stream: bool) -> str:
        return self._url(model, "streamGenerateContent") + "?alt=sse" if stream else self._url(model, "generateContent")

    # -- chat -----------------------------------------------------------------------------------------
    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        if req.prompt is not None:
            raise unsupported("the gemini backend has no raw-prompt completion endpoint", param="prompt")
        contents, system = build_contents(req)
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": system}
        tools, tool_config = build_tools(req)
        if tools:
            body["tools"] = tools
        if tool_config is not None:
            body["toolConfig"] = tool_config
        reasoning = req.reasoning
        if reasoning is None and self.options.thinking_budget is not None:
            reasoning = ir.ReasoningConfig(enabled=self.options.thinking_budget != 0, budget_tokens=self.options.thinking_budget or None)
        max_tokens = req.max_tokens if req.max_tokens is not None else target.default_max_tokens
        gen = generation_config(msgspec.structs.replace(req, reasoning=reasoning), max_tokens, self.options.include_thoughts)
        if gen:
            body["generationConfig"] = gen
        if self.options.safety_settings is not None:
            body["safetySettings"] = self.options.safety_settings
        if req.source_format == "gemini":
            body.update(req.extra)  # the client's safetySettings, cachedContent, ...
        merge_params(body, target.params, nested="generationConfig")
        return HttpRequest(url=self._generate_url(target.model, req.stream), body=jsonio.dumps(body),
                           headers=self._headers(), stream=req.stream)

    def chat_response(self, body: bytes, req: ir.ChatRequest, target: Target) -> ir.ChatResponse:
        try:
            chunk = response_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise ProxyError("upstream_protocol", "Gemini answer is not a valid GenerateContentResponse") from None
        decoder = GeminiStreamDecoder()
        events: list[ir.Event] = []
        decoder.apply(chunk, events)
        if not decoder.done:
            raise ProxyError("upstream_protocol", "Gemini answer has neither a finishReason nor a blockReason")
        return ir.fold_events(events, model=target.model, id=decoder.id or "", created=0)

    def stream_decoder(self, req: ir.ChatRequest, target: Target) -> GeminiStreamDecoder:
        return GeminiStreamDecoder()

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
        return parse_error_body(status, headers, body)

    # -- embeddings -------------------------------------------------------------------------------------
    def embeddings_request(self, req: ir.EmbeddingRequest, target: Target) -> HttpRequest:
        if any(not isinstance(item, str) for item in req.input):
            raise unsupported("the gemini backend embeds text only, not token arrays", param="input")
        model = "models/" + _strip_models(target.model)
        requests = []
        for text in req.input:
            r: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
            if req.dimensions is not None:
                r["outputDimensionality"] = req.dimensions
            requests.append(r)
        return HttpRequest(url=self._url(target.model, "batchEmbedContents"), body=jsonio.dumps({"requests": requests}),
                           headers=self._headers())

    def embeddings_response(self, body: bytes, req: ir.EmbeddingRequest) -> ir.EmbeddingResponse:
        try:
            data = _embeddings_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise ProxyError("upstream_protocol", "Gemini sent an embeddings answer that cannot be parsed") from None
        return ir.EmbeddingResponse(model=req.model, data=[e.values for e in data.embeddings])

    # -- same-format pass-through -------------------------------------------------------------------------
    def passthrough_request(
        self, op: str, body: bytes, stream: bool, target: Target, client_headers: Mapping[str, str]
    ) -> HttpRequest:
        """`op` from `GeminiFrontend.request_target`.  The model is in the URL; only a batch embedding
        names it in the body too (`requests[].model`), rewritten to the backend's model."""
        if op == "generate":
            url = self._generate_url(target.model, stream)
        elif op == "count_tokens":
            url = self._url(target.model, "countTokens")
        elif op == "embed":
            url = self._url(target.model, "embedContent")
        elif op == "batch_embed":
            url = self._url(target.model, "batchEmbedContents")
            body = _rename_batch_model(body, "models/" + _strip_models(target.model))
        else:
            raise ProxyError("not_found", f"operation {op!r} is not available on Gemini backends")
        return HttpRequest(url=url, body=body, headers=self._headers(), stream=stream)


class _Embedding(msgspec.Struct):
    values: list[float]


class _Embeddings(msgspec.Struct):
    embeddings: list[_Embedding]


_embeddings_decoder = jsonio.decoder(_Embeddings)


def _rename_batch_model(body: bytes, model: str) -> bytes:
    try:
        obj = jsonio.loads(body)
    except jsonio.DecodeError:
        raise bad_request("request body is not valid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("requests"), list):
        raise bad_request("batchEmbedContents needs a `requests` list", param="requests")
    for r in obj["requests"]:
        if isinstance(r, dict):
            r["model"] = model
    return jsonio.dumps(obj)
