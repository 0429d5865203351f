"""Backend "cohere": Cohere's v2 API (`POST /v2/chat`, `POST /v2/embed`), bearer-key auth.

Split by concern: `cohere_build` (IR -> body), `cohere_response` (answers, finish reasons, usage,
errors, embeddings), `cohere_stream` (SSE -> IR).  This module holds the adapter class.

Quirks handled (what is dropped, renamed or synthesised):
- Cohere refuses unknown fields (422): OpenAI's per-tool `strict` is dropped; nothing the client
  sent outside the IR (`req.extra`) is forwarded.  `top_p` -> `p`, `top_k` -> `k`, `stop` ->
  `stop_sequences`, `reasoning` -> `thinking` (enabled + token_budget, or disabled), response
  formats -> `json_object` (+ `json_schema`).  `tool_choice` is only REQUIRED / NONE: auto is
  omitted, a named tool is REQUIRED with only that tool offered.  Not expressible (left to the
  drop/error policy): min_p, repetition_penalty, logit_bias, logprobs, top_logprobs, user, metadata,
  parallel_tool_calls, n > 1, raw-prompt completions.
- Answers: `tool_plan` -> text before the tool calls (and back to `tool_plan` on the next turn);
  finish COMPLETE / STOP_SEQUENCE -> stop, MAX_TOKENS -> length, TOOL_CALL -> tool_calls,
  TIMEOUT -> error, ERROR -> a server error (in-stream error event after headers); usage from
  `usage.tokens`; citations dropped.  Errors are `{"message"}`; 498 (invalid token) ->
  authentication; Cohere's "too many tokens" wording -> context_length.
- Embeddings: `/v2/embed` needs `input_type` (option `embed_input_type`, default
  `search_document`); floats only (the OpenAI frontend re-encodes base64); `dimensions` ->
  `output_dimension`; token-array inputs are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import msgspec

from . import ir, jsonio
from .base import Backend, HttpRequest, Target
from .cohere_build import build_body
from .cohere_response import embeddings_to_ir, parse_error_body, response_to_ir
from .cohere_stream import CohereStreamDecoder
from .common import json_headers
from .errors import ProxyError, unsupported

InputType = Literal["search_document", "search_query", "classification", "clustering"]


class CohereOptions(msgspec.Struct, forbid_unknown_fields=True):
    embed_input_type: InputType = "search_document"  # /v2/embed requires one; OpenAI clients send none


class CohereBackend(Backend):
    provider: ClassVar[str] = "cohere"
    Options = CohereOptions
    default_base_url: ClassVar[str | None] = "https://api.cohere.com"
    supported_params: ClassVar[frozenset[str]] = frozenset(
        {"temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty", "seed", "stop",
         "response_format", "reasoning", "tools", "tool_choice"}
    )
    renamed_params: ClassVar[Mapping[str, str]] = {
        "top_p": "p",
        "top_k": "k",
        "stop": "stop_sequences",
        "reasoning": "thinking",
        "response_format": "response_format (json_object + json_schema)",
        "tool_choice": "tool_choice (REQUIRED / NONE)",
    }

    options: CohereOptions

    def _post(self, path: str, body: dict, stream: bool = False) -> HttpRequest:
        return HttpRequest(url=f"{self.base_url}{path}", body=jsonio.dumps(body),
                           headers=json_headers(self.api_key, self.extra_headers), stream=stream)

    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        if req.prompt is not None:
            raise unsupported("the cohere backend has no raw-prompt completion endpoint", param="prompt")
        max_tokens = req.max_tokens if req.max_tokens is not None else target.default_max_tokens
        return self._post("/v2/chat", build_body(req, target.model, max_tokens, dict(target.params)), req.stream)

    def chat_response(self, body: bytes, req: ir.ChatRequest, target: Target) -> ir.ChatResponse:
        return response_to_ir(body, target.model, req.stop)

    def stream_decoder(self, req: ir.ChatRequest, target: Target) -> CohereStreamDecoder:
        return CohereStreamDecoder(target.model, req.stop)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
        return parse_error_body(status, headers, body)

    def embeddings_request(self, req: ir.EmbeddingRequest, target: Target) -> HttpRequest:
        if any(not isinstance(item, str) for item in req.input):
            raise unsupported("the cohere backend embeds text only, not token arrays", param="input")
        body = {"model": target.model, "texts": req.input, "input_type": self.options.embed_input_type,
                "embedding_types": ["float"]}
        if req.dimensions is not None:
            body["output_dimension"] = req.dimensions
        return self._post("/v2/embed", body)

    def embeddings_response(self, body: bytes, req: ir.EmbeddingRequest) -> ir.EmbeddingResponse:
        return embeddings_to_ir(body, req.model)
