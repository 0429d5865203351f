"""AWS Bedrock Runtime backend (provider `bedrock`): Converse, ConverseStream, and InvokeModel for
embeddings.

Quirks:
- `POST /model/{modelId}/converse` and `/converse-stream`, the model id (`...-v2:0`, an inference
  profile, an ARN) percent-encoded in the path (`:` -> `%3A`, `/` -> `%2F`).  Requests are signed
  with SigV4 (service `bedrock`, the backend's `region`) by the proxy's `aws-sigv4` auth step, over
  these exact path bytes; a Bedrock API key given as `api_key` is sent as a bearer token instead.
- The endpoint is `https://bedrock-runtime.{region}.amazonaws.com` unless `base_url` overrides it
  (VPC endpoints, tests); the signature covers the host actually called.
- The answer stream is AWS's binary event stream (adapters/bedrock_stream.py).
- Parameters: `max_tokens`, `temperature`, `top_p`, `stop` in `inferenceConfig`; `top_k` and
  Claude's `thinking` in `additionalModelRequestFields` (a model's `params` merge into it, and add
  top-level Converse fields such as `guardrailConfig` or `performanceConfig`);
  `response_format` as `outputConfig` structured output; no seed, penalties or logprobs in Converse.
  Reasoning is honoured for Claude models (their `thinking` field); other models reason (or not) on
  their own.
- Embeddings through InvokeModel for Titan and Cohere embed models (adapters/bedrock_embed.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from msgspec import Struct

from . import bedrock_embed, ir, jsonio
from .base import Backend, HttpRequest, Target
from .bedrock_build import build_body, is_claude
from .bedrock_response import chat_response, parse_error
from .bedrock_stream import BedrockStreamDecoder
from .common import bearer_auth, merge_params, path_segment
from .errors import ProxyError

_REGION = re.compile(r"[a-z0-9-]{1,32}")


class BedrockOptions(Struct, forbid_unknown_fields=True, kw_only=True):
    region: str
    # Absent (or empty): the standard AWS credential chain.  An empty session token means none.
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    embed_input_type: str = "search_document"  # Cohere embed models' required input_type


class BedrockBackend(Backend):
    provider: ClassVar[str] = "bedrock"
    Options = BedrockOptions
    auth_scheme: ClassVar[str | None] = "aws-sigv4"
    signing_name: ClassVar[str] = "bedrock"  # SigV4 service name (not "bedrock-runtime")
    default_base_url: ClassVar[str | None] = "https://bedrock-runtime.{region}.amazonaws.com"
    supported_params: ClassVar[frozenset[str]] = frozenset(
        {"temperature", "top_p", "top_k", "stop", "reasoning", "tools", "tool_choice", "response_format"}
    )
    renamed_params: ClassVar[Mapping[str, str]] = {
        "max_tokens": "inferenceConfig.maxTokens",
        "temperature": "inferenceConfig.temperature",
        "top_p": "inferenceConfig.topP",
        "stop": "inferenceConfig.stopSequences",
        "top_k": "additionalModelRequestFields.top_k",
        "reasoning": "additionalModelRequestFields.thinking (Claude models)",
        "tools": "toolConfig.tools[].toolSpec",
        "tool_choice": "toolConfig.toolChoice (auto / any / tool; none keeps tools only for tool history)",
        "response_format": "outputConfig.textFormat (json_schema; json_object as an object schema)",
    }

    options: BedrockOptions

    def __init__(self, base_url: str, api_key: str | None, headers: Mapping[str, str], options: BedrockOptions) -> None:
        if not _REGION.fullmatch(options.region):
            raise ValueError(f"region {options.region!r} is not an AWS region name")
        super().__init__(base_url or self.default_base_url.format(region=options.region), api_key, headers, options)  # type: ignore[union-attr]
        if self.api_key:  # a Bedrock API key: bearer auth, nothing to sign
            self.auth_scheme = None  # type: ignore[misc]
        self._headers = {"Content-Type": "application/json", **bearer_auth(self.api_key), **self.extra_headers}

    def _url(self, model: str, action: str) -> str:
        return f"{self.base_url}/model/{path_segment(model)}/{action}"

    # -- chat -------------------------------------------------------------------------------------
    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        body = build_body(req, target.model, target.default_max_tokens)
        merge_params(body, target.params, nested="additionalModelRequestFields")
        action = "converse-stream" if req.stream else "converse"
        return HttpRequest(url=self._url(target.model, action), body=jsonio.dumps(body), headers=dict(self._headers),
                           stream=req.stream)

    def chat_response(self, body: bytes, req: ir.ChatRequest, target: Target) -> ir.ChatResponse:
        return chat_response(body, target.model, is_claude(target.model))

    def stream_decoder(self, req: ir.ChatRequest, target: Target) -> BedrockStreamDecoder:
        return BedrockStreamDecoder(is_claude(target.model))

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
        return parse_error(status, headers, body)

    def prompt_tokens_from_headers(self, headers: Mapping[str, str]) -> int | None:
        value = headers.get(bedrock_embed.TOKEN_COUNT_HEADER)
        return int(value) if value is not None and value.isdigit() else None

    # -- embeddings -------------------------------------------------------------------------------
    def embeddings_request(self, req: ir.EmbeddingRequest, target: Target) -> list[HttpRequest]:
        params: dict[str, Any] = dict(target.params)
        input_type = params.pop("input_type", self.options.embed_input_type)
        url = self._url(target.model, "invoke")
        return [HttpRequest(url=url, body=body, headers=dict(self._headers))
                for body in bedrock_embed.bodies(req, target.model, input_type, params)]

    def embeddings_response(self, body: bytes, req: ir.EmbeddingRequest) -> ir.EmbeddingResponse:
        return bedrock_embed.response(body, req.model)
