"""The OpenAI format, client side: the frontend for chat, completions and embeddings; the backend
family is `openai_backend`.

Module map (one concept each): `openai_request` parses client requests into the IR,
`openai_stream` encodes IR streams for clients and decodes upstream streams, `openai_response` holds the
upstream wire types and the usage / finish / error tables, `openai_backend` builds upstream
requests (with the table of OpenAI-compatible presets).

Rendering choices (IR -> OpenAI):
- Reasoning text goes to the non-standard `reasoning_content` (DeepSeek / llama.cpp spelling, which
  most OpenAI-compatible clients read).  A Gemini signature that sat on a function call goes on that
  tool call as `extra_content.google.thought_signature` (Google's own OpenAI-compatible convention,
  `openai_signatures`); Anthropic's signed and redacted thinking goes to `reasoning_details`
  (OpenRouter's convention); both are read back from the history.
- Finish `pause` (Anthropic pause_turn) renders as `stop` (lossy); the consistency rule forces
  `tool_calls` whenever a tool call is present.
- Several text parts are joined into one `content` string; `stop_sequence` is not expressible.
- Usage always carries `prompt_tokens_details.cached_tokens` and
  `completion_tokens_details.reasoning_tokens`.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from . import ir, jsonio
from .jsonio import TopLevel
from .base import BEARER, X_RATELIMIT, ApiRoute, ChatOp, EmbeddingsOp, InBody, ModelInfo, ModelList, Route
from .errors import ProxyError
from .sse import SSEEvent
from .openai_request import parse_chat, parse_completion, parse_embeddings
from .openai_signatures import call_signature, extra_content, reasoning_detail
from .openai_stream import ChatStreamEncoder, CompletionStreamEncoder
from .openai_response import FINISH_FROM_IR, error_object, floats_to_base64, usage_only, usage_to_wire

__all__ = ["OpenAIFrontend"]


def _finish(choice: ir.Choice) -> str:
    saw_tool = any(isinstance(p, ir.ToolCall) for p in choice.parts)
    return FINISH_FROM_IR[ir.consistent_finish(choice.finish_reason, saw_tool)]


def _message(choice: ir.Choice) -> dict[str, Any]:
    if len(choice.parts) == 1 and type(choice.parts[0]) is ir.Text:  # most answers: what the walk below gives
        return {"role": "assistant", "content": choice.parts[0].text, "refusal": None}
    texts = [p.text for p in choice.parts if isinstance(p, ir.Text)]
    thoughts = [p.text for p in choice.parts if isinstance(p, ir.Reasoning) and p.text]
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if thoughts:
        msg["reasoning_content"] = "".join(thoughts)
    details: list[dict[str, Any]] = []
    for p in choice.parts:
        if isinstance(p, ir.Reasoning) and (detail := reasoning_detail(p, len(details))) is not None:
            details.append(detail)
    if details:
        msg["reasoning_details"] = details
    calls: list[dict[str, Any]] = []
    held: str | None = None  # a Gemini signature for the call that follows it (openai_signatures)
    for p in choice.parts:
        if isinstance(p, ir.ToolCall):
            call: dict[str, Any] = {"id": p.id, "type": "function",
                                    "function": {"name": p.name, "arguments": p.arguments}}
            if held:
                call["extra_content"], held = extra_content(held), None
            calls.append(call)
        else:
            held = call_signature(p)
    if calls:
        msg["tool_calls"] = calls
    return msg


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "llm-proxy"}


class OpenAIFrontend:
    """OpenAI Chat Completions / Completions / Embeddings for clients.  Stateless."""

    name: ClassVar[str] = "openai"
    stream_content_type: ClassVar[str] = "text/event-stream"
    client_key = (BEARER,)
    rate_limit_headers = (X_RATELIMIT,)
    error_prefixes: ClassVar[tuple[str, ...]] = ()  # the registry's default frontend
    stream_framing: ClassVar[str] = "sse"
    # Pass-through: only events containing one of these carry token counts worth decoding
    # (OpenAI chunks carry "usage":null once usage is requested).
    usage_markers: ClassVar[tuple[bytes, ...]] = (b'"usage":{', b'"usage": {')

    # -- requests ------------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [
            ApiRoute("/v1/chat/completions", InBody(ChatOp(
                "chat", self.parse_chat, self.render_chat, self.stream_encoder,
                max_tokens_fields=(("max_completion_tokens",), ("max_tokens",))))),
            ApiRoute("/v1/completions", InBody(ChatOp("completions", self.parse_completion, self.render_completion,
                                                      self.completion_stream_encoder, (("max_tokens",),)))),
            ApiRoute("/v1/embeddings", InBody(EmbeddingsOp("embeddings", self.parse_embeddings, self.render_embeddings))),
            ModelList("/v1/models", self.render_models),
            ModelInfo("/v1/models/{model:.+}", self.render_model),
        ]

    def parse_chat(self, body: bytes, raw: TopLevel | None = None) -> ir.ChatRequest:
        return parse_chat(body, raw)

    def parse_completion(self, body: bytes, raw: TopLevel | None = None) -> ir.ChatRequest:
        return parse_completion(body, raw)

    def parse_embeddings(self, body: bytes) -> ir.EmbeddingRequest:
        return parse_embeddings(body)

    # -- responses -----------------------------------------------------------------------------------
    def _envelope(self, resp: ir.ChatResponse, model: str, obj: str) -> dict[str, Any]:
        return {"id": resp.id, "object": obj, "created": resp.created or int(time.time()), "model": model}

    def render_chat(self, resp: ir.ChatResponse, model: str) -> bytes:
        out = self._envelope(resp, model, "chat.completion")
        out["choices"] = [
            {"index": c.index, "message": _message(c), "logprobs": None, "finish_reason": _finish(c)}
            for c in resp.choices
        ]
        if resp.usage is not None:
            out["usage"] = usage_to_wire(resp.usage)
        return jsonio.dumps(out)

    def render_completion(self, resp: ir.ChatResponse, model: str) -> bytes:
        out = self._envelope(resp, model, "text_completion")
        out["choices"] = [
            {
                "index": c.index,
                "text": "".join(p.text for p in c.parts if isinstance(p, ir.Text)),
                "logprobs": None,
                "finish_reason": FINISH_FROM_IR[ir.consistent_finish(c.finish_reason, False)],
            }
            for c in resp.choices
        ]
        if resp.usage is not None:
            out["usage"] = usage_to_wire(resp.usage, details=False)
        return jsonio.dumps(out)

    def render_embeddings(
        self, resp: ir.EmbeddingResponse, model: str, encoding_format: str | None = None
    ) -> bytes:
        """`encoding_format` is the client's (EmbeddingRequest.encoding_format): "base64" packs
        little-endian float32 like OpenAI; anything else returns float lists."""
        b64 = encoding_format == "base64"
        data = [
            {"object": "embedding", "index": i, "embedding": floats_to_base64(v) if b64 else v}
            for i, v in enumerate(resp.data)
        ]
        u = resp.usage or ir.Usage()
        return jsonio.dumps({
            "object": "list",
            "model": model,
            "data": data,
            "usage": {"prompt_tokens": u.input_tokens, "total_tokens": u.input_tokens},
        })

    # -- streams -------------------------------------------------------------------------------------
    def render_models(self, names: list[str]) -> bytes:
        return jsonio.dumps({"object": "list", "data": [_model(n) for n in names]})

    def render_model(self, name: str) -> bytes:
        return jsonio.dumps(_model(name))

    def stream_encoder(self, req: ir.ChatRequest, model: str) -> ChatStreamEncoder:
        return ChatStreamEncoder(req, model)

    def completion_stream_encoder(self, req: ir.ChatRequest, model: str) -> CompletionStreamEncoder:
        return CompletionStreamEncoder(req, model)

    # -- errors and pass-through metrics -------------------------------------------------------------
    def render_error(self, err: ProxyError) -> tuple[int, bytes]:
        return err.status, jsonio.dumps({"error": error_object(err)})

    def usage_from_body(self, body: bytes) -> ir.Usage | None:
        return usage_only(body)

    def usage_from_event(self, data: bytes) -> ir.Usage | None:
        if data.startswith(b"[DONE]"):
            return None
        return usage_only(data)

    def prepare_passthrough(self, raw: dict[str, Any], stream: bool) -> bool:
        """Streams: ask the backend for the usage chunk even when the client did not (token metrics
        need it); the relay then hides that chunk from the client."""
        if not stream:
            return False
        opts = raw.get("stream_options")
        current = jsonio.loads(opts) if opts is not None else None
        if current is None:
            current = {}
        elif not isinstance(current, dict) or current.get("include_usage"):
            return False
        raw["stream_options"] = {**current, "include_usage": True}
        return True

    def is_stream_end(self, event: SSEEvent) -> bool:
        data = event.data
        return data.startswith(b"[DONE]") or data.startswith(b'{"error"')

    def is_usage_only(self, data: bytes) -> bool:
        return b'"choices":[]' in data or b'"choices": []' in data
