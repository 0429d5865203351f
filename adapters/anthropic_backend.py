"""Anthropic Messages API, backend side: the provider "anthropic" (`/v1/messages`).

Split by concern: `anthropic_build` (IR -> request body, structured output), `anthropic_response`
(answers, usage, stop reasons, errors), `anthropic_stream` (SSE decoding); the frontend is
`anthropic_frontend`.

Quirks handled (what is dropped, renamed or synthesised):
- `max_tokens` is always sent (client value, else `Target.default_max_tokens`, else
  `Options.default_max_tokens`, else a model-aware default: 4096 for the Claude 3.0 family, whose
  output limit it is, 8192 otherwise); temperature is clamped to 0..1; `user` -> `metadata.user_id`;
  reasoning -> `thinking` (effort table in anthropic_build); system messages anywhere are lifted into
  `system`; response_format via the forced-tool trick (anthropic_build docstring).  Not supported by
  Anthropic (left to the drop/error policy): seed, penalties, logit_bias, logprobs, n>1, min_p.
  Reasoning parts are forwarded only when Anthropic signed them.  `req.extra` is merged only for
  Anthropic-format clients.  Server-tool blocks in responses are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from . import ir, jsonio
from .anthropic_build import build_body
from .anthropic_response import parse_error_body, response_to_ir
from .anthropic_stream import AnthropicStreamDecoder
from .base import Backend, HttpRequest, Target
from .common import forwardable
from .errors import ProxyError

DEFAULT_VERSION = "2023-06-01"


class AnthropicOptions(msgspec.Struct, forbid_unknown_fields=True):
    anthropic_version: str = DEFAULT_VERSION
    default_max_tokens: int | None = None  # None: model-aware (see the module docstring)
    beta: list[str] = []


def model_default_max_tokens(model: str) -> int:
    """4096 for Claude 3.0 models (their output limit); 8192 for everything newer or unknown."""
    if model.startswith("claude-3-") and not model.startswith(("claude-3-5", "claude-3-7")):
        return 4096
    return 8192


class AnthropicBackend(Backend):
    provider: ClassVar[str] = "anthropic"
    family: ClassVar[str | None] = "anthropic"
    Options = AnthropicOptions
    supported_params: ClassVar[frozenset[str]] = frozenset(
        {"temperature", "top_p", "top_k", "stop", "response_format", "reasoning", "user", "tools", "tool_choice",
         "parallel_tool_calls"}
    )
    renamed_params: ClassVar[Mapping[str, str]] = {
        "stop": "stop_sequences",
        "user": "metadata.user_id",
        "reasoning": "thinking",
        "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
        "response_format": "tools (forced tool)",
    }

    def _headers(self, version: str, betas: list[str]) -> dict[str, str]:
        headers = {**self.extra_headers, "content-type": "application/json", "anthropic-version": version}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        if betas:
            headers["anthropic-beta"] = ",".join(betas)
        return headers

    def message_body(self, req: ir.ChatRequest, target: Target) -> dict[str, Any]:
        """The Messages API body for `req` (also what Claude on Vertex AI takes, minus `model`)."""
        opts: AnthropicOptions = self.options  # type: ignore[assignment]
        client_max = req.max_tokens is not None
        max_tokens = req.max_tokens or target.default_max_tokens or opts.default_max_tokens
        body = build_body(req, target.model, max_tokens or model_default_max_tokens(target.model), client_max)
        body.update(target.params)
        return body

    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        opts: AnthropicOptions = self.options  # type: ignore[assignment]
        return HttpRequest(
            url=f"{self.base_url}/v1/messages",
            body=jsonio.dumps(self.message_body(req, target)),
            headers=self._headers(opts.anthropic_version, list(opts.beta)),
            stream=req.stream,
        )

    def chat_response(self, body: bytes, req: ir.ChatRequest, target: Target) -> ir.ChatResponse:
        return response_to_ir(body, req)

    def stream_decoder(self, req: ir.ChatRequest, target: Target) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(req)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
        return parse_error_body(status, headers, body)

    def passthrough_request(
        self, op: str, body: bytes, stream: bool, target: Target, client_headers: Mapping[str, str]
    ) -> HttpRequest:
        paths = {"messages": "/v1/messages", "count_tokens": "/v1/messages/count_tokens"}
        if op not in paths:
            raise ProxyError("not_found", f"operation {op!r} is not available on Anthropic backends")
        opts: AnthropicOptions = self.options  # type: ignore[assignment]
        version = _header(client_headers, "anthropic-version") or opts.anthropic_version
        betas: list[str] = []
        for value in [*(_header(client_headers, "anthropic-beta") or "").split(","), *opts.beta]:
            if value.strip() and value.strip() not in betas:
                betas.append(value.strip())
        return HttpRequest(url=self.base_url + paths[op], body=body, headers=self._headers(version, betas), stream=stream)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup (the proxy may hand over a plain dict); only a value fit to forward."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return forwardable(value)


__all__ = ["AnthropicBackend", "AnthropicOptions", "model_default_max_tokens"]
