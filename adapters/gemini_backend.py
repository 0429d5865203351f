"""Google Gemini API (Generative Language API), backend side: the provider "gemini".

Split by concern: `gemini_build` (IR -> request body), `gemini_response` (answers, usage, finish
reasons, errors), `gemini_stream` (SSE decoding); the frontend is `gemini_frontend`.

Quirks handled (what is dropped, renamed or synthesised):
- The model and the operation are in the URL, not the body; the backend always asks for SSE
  (`:streamGenerateContent?alt=sse`).  Streams have no terminator: they end when the connection closes
  after the chunk carrying `finishReason`.
- Requests: see `gemini_build` for roles, tool results, images and signatures.  `stop` is cut to the
  first 5 sequences (Gemini's limit); `response_format` -> responseMimeType application/json
  (+ responseJsonSchema); reasoning -> thinkingConfig (budget, effort table in gemini_build, 0 = off,
  includeThoughts so the reasoning reaches clients).  Not expressible (left to the drop/error
  policy): min_p, repetition_penalty, logit_bias, logprobs, top_logprobs, user, metadata,
  parallel_tool_calls, n > 1.
- Answers: STOP with function calls -> tool_calls; MAX_TOKENS -> length; the safety family
  -> content_filter; MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS,
  MALFORMED_RESPONSE, MISSING_THOUGHT_SIGNATURE -> error; a blocked prompt (no candidates,
  promptFeedback.blockReason) -> content_filter with no content; tool-call ids are synthesised;
  usage: output = candidates + thoughts, input = prompt + tool-use prompt.  Errors: the `status`
  decides the kind; 400 with reason API_KEY_INVALID -> authentication; RetryInfo.retryDelay is read
  when there is no Retry-After header.  A multi-line raw JSON error in a stream (not a `data:`
  event) is not parsed: the stream then ends without finishReason (upstream_protocol).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from . import ir, jsonio
from .base import Backend, HttpRequest, Target
from .common import merge_client_extra, merge_params, path_segment
from .errors import ProxyError, bad_request, unsupported
from .gemini_build import MAX_STOP, build_contents, build_tools, generation_config
from .gemini_request import strip_models
from .gemini_response import parse_error_body, response_decoder
from .gemini_stream import GeminiStreamDecoder

__all__ = ["GeminiBackend", "GeminiOptions", "MAX_STOP"]


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
        return f"{self.base_url}/{self.options.api_version}/models/{path_segment(strip_models(model))}:{action}"

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", **self.extra_headers}
        if self.api_key:
            headers["x-goog-api-key"] = self.api_key
        return headers

    def _generate_url(self, model: str, stream: bool) -> str:
        return self._url(model, "streamGenerateContent") + "?alt=sse" if stream else self._url(model, "generateContent")

    # -- chat -----------------------------------------------------------------------------------------
    def generate_body(self, req: ir.ChatRequest, target: Target) -> dict[str, Any]:
        """The generateContent body for `req` (also what Gemini on Vertex AI takes)."""
        if req.prompt is not None:
            raise unsupported(f"the {self.provider} backend has no raw-prompt completion endpoint", param="prompt")
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
        merge_client_extra(body, req, "gemini")  # the client's safetySettings, cachedContent, ...
        merge_params(body, target.params, nested="generationConfig")
        return body

    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        body = self.generate_body(req, target)
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
        model = "models/" + strip_models(target.model)
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
            body = _rename_batch_model(body, "models/" + strip_models(target.model))
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
