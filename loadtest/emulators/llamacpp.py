"""Emulated llama.cpp `llama-server` native API, written from llama.cpp's tools/server/README.md
(there is no official Python client; tests check the documented shapes with raw HTTP).

Routes:

    POST /completion, /completions   prompt -> content (SSE stream with "stream": true)
    GET  /health                     {"status": "ok"} (503 "Loading model" under status=503)
    GET  /props                      default generation settings, n_ctx, chat template, modalities
    POST /tokenize                   {"content"} -> {"tokens": [...]} (about four characters a token)

The prompt is whatever the caller rendered.  The default reply echoes the *last user text* found in
it: template markers (`<|...|>`, `[INST]`, `<s>`) become line breaks, role-name lines are skipped and
the last remaining line is taken, so ChatML, Llama 3 and Mistral prompts all echo the user's words.
A `json_schema` makes the reply JSON.  The reply is cut at the first `stop` string (stop_type "word",
`stopping_word`), or at `n_predict` tokens (stop_type "limit"); otherwise stop_type is "eos".
Streams are `data: {...}` events with `content` and `"stop": false`; the last has `"stop": true`, empty content and the full field set
(`stop_type`, `stopping_word`, `tokens_evaluated`, `tokens_predicted`, `timings`); no `[DONE]`.
Errors are `{"error": {"code", "message", "type"}}`.

The scenario comes from the `x-emulate` header or an optional `model` field in the body.  Keys
(behaviour.py): status/retry_after, context_length (400 `exceed_context_size_error`), chunks, text,
reasoning (`<think>...</think>` in the content, as a raw /completion returns it), first_byte,
chunk_delay, hang, reset_after, truncate_after, error_after (`data: {"error": {...}}` mid-stream),
malformed, max_tokens (stop_type "limit"), usage_in/usage_out (tokens_evaluated / tokens_predicted).
`tools` does not apply: /completion has no tool calling.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .behaviour import (Behaviour, LatencyProfile, before_first_byte, behaviour_for, count_tokens, reply_text,
                        json_reply, split_text, write_stream)

MODEL_PATH = "/models/emulated-7b-q4_k_m.gguf"
N_CTX = 4096
ROLE_LINES = {"system", "user", "assistant", "model", "<start_of_turn>user", "<start_of_turn>model"}
MARKERS = re.compile(r"<\|[^|<>]*\|>|\[/?INST\]|</?s>|<start_of_turn>|<end_of_turn>")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    501: "not_supported_error",
    503: "unavailable_error",
}
STREAM_ERROR = "emulated failure while decoding"
MALFORMED_EVENT = b'data: {"content":"","stop":tr\n\n'


def last_user_text(prompt: str) -> str:
    """The user's words in a rendered chat prompt (or the raw prompt itself)."""
    lines = [ln.strip() for ln in MARKERS.sub("\n", prompt).splitlines()]
    content = [ln for ln in lines if ln and ln.lower() not in ROLE_LINES]
    return content[-1] if content else ""


def _error_body(code: int, message: str, type_: str | None = None, **extra: Any) -> dict[str, Any]:
    kind = type_ or ERROR_TYPES.get(code, "server_error" if code >= 500 else "invalid_request_error")
    return {"error": {"code": code, "message": message, "type": kind, **extra}}


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


@dataclass
class _Completion:
    """What the emulated model answers to one /completion request."""

    prompt: str
    content: str
    stop_type: str
    stopping_word: str
    tokens_evaluated: int
    tokens_predicted: int

    @classmethod
    def build(cls, b: Behaviour, body: dict[str, Any]) -> "_Completion":
        prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
        text = reply_text(b, last_user_text(prompt))
        if isinstance(body.get("json_schema"), dict):  # grammar-constrained: the output matches the schema
            text = json_reply(text, body["json_schema"])
        if b.reasoning:
            text = "<think>\nThe user wants an echo.\n</think>\n\n" + text
        stop_type, word = "eos", ""
        hits = [(text.index(s), s) for s in body.get("stop") or () if isinstance(s, str) and s and s in text]
        if hits:
            pos, word = min(hits)
            text, stop_type = text[:pos], "word"
        limit = body.get("n_predict")
        if isinstance(limit, int) and limit >= 0 and count_tokens(text) > limit:
            text, stop_type, word = text[: limit * 4], "limit", ""
        if b.max_tokens:
            stop_type, word = "limit", ""
        evaluated = b.usage_in if b.usage_in is not None else count_tokens(prompt)
        predicted = b.usage_out if b.usage_out is not None else count_tokens(text)
        return cls(prompt, text, stop_type, word, evaluated, predicted)

    def final(self, body: dict[str, Any], content: str) -> dict[str, Any]:
        cached = self.tokens_evaluated // 2 if body.get("cache_prompt", True) else 0
        return {
            "index": 0,
            "content": content,
            "tokens": [],
            "id_slot": 0,
            "stop": True,
            "model": MODEL_PATH,
            "tokens_predicted": self.tokens_predicted,
            "tokens_evaluated": self.tokens_evaluated,
            "generation_settings": {
                "n_predict": body.get("n_predict", -1),
                "temperature": body.get("temperature", 0.8),
                "top_k": body.get("top_k", 40),
                "top_p": body.get("top_p", 0.95),
                "stop": body.get("stop") or [],
                "stream": bool(body.get("stream")),
            },
            "prompt": self.prompt,
            "has_new_line": "\n" in self.content,
            "truncated": False,
            "stop_type": self.stop_type,
            "stopping_word": self.stopping_word,
            "tokens_cached": self.tokens_evaluated + self.tokens_predicted,
            "timings": {
                "cache_n": cached,
                "prompt_n": self.tokens_evaluated - cached,
                "prompt_ms": 1.5 * (self.tokens_evaluated - cached),
                "predicted_n": self.tokens_predicted,
                "predicted_ms": 20.0 * self.tokens_predicted,
            },
        }


class LlamaCppEmulator:
    def __init__(self, profile: LatencyProfile | None) -> None:
        self.profile = profile or LatencyProfile()
        self.rng = random.Random(0)

    def _behaviour(self, request: web.Request, body: dict[str, Any] | None = None) -> Behaviour:
        model = body.get("model") if body and isinstance(body.get("model"), str) else None
        return behaviour_for(model, request.headers)

    async def _prelude(self, b: Behaviour) -> web.Response | None:
        await before_first_byte(b, self.profile, self.rng)
        headers = {"retry-after": f"{b.retry_after:g}"} if b.retry_after is not None else {}
        if b.context_length:
            body = _error_body(
                400,
                "the request exceeds the available context size, try increasing it",
                "exceed_context_size_error",
                n_prompt_tokens=N_CTX + 904,
                n_ctx=N_CTX,
            )
            return web.json_response(body, status=400, headers=headers)
        if b.status is not None:
            message = "Loading model" if b.status == 503 else f"emulated error {b.status}"
            return web.json_response(_error_body(b.status, message), status=b.status, headers=headers)
        return None

    async def completion(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response(_error_body(400, "Failed to parse the request body as JSON"), status=400)
        if not isinstance(body, dict) or "prompt" not in body:
            return web.json_response(_error_body(400, '"prompt" must be provided'), status=400)
        b = self._behaviour(request, body)
        err = await self._prelude(b)
        if err is not None:
            return err
        done = _Completion.build(b, body)
        if body.get("stream"):
            return await self._stream(request, b, body, done)
        if b.malformed:
            return web.Response(body=b'{"index":0,"content":"ec', content_type="application/json")
        return web.json_response(done.final(body, done.content))

    async def _stream(self, request: web.Request, b: Behaviour, body: dict[str, Any], done: _Completion):
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        pieces = [p for p in split_text(done.content, b.chunks) if p]
        events = [
            {"index": 0, "content": p, "tokens": [], "stop": False, "id_slot": 0, "tokens_predicted": i + 1,
             "tokens_evaluated": done.tokens_evaluated}
            for i, p in enumerate(pieces)
        ]
        events.append(done.final(body, ""))
        gap = b.chunk_delay + self.profile.chunk_gap()
        error = _sse(_error_body(500, STREAM_ERROR, "server_error"))
        await write_stream(request, resp, b, [_sse(ev) for ev in events], gap, error, MALFORMED_EVENT)
        return resp

    async def health(self, request: web.Request) -> web.Response:
        b = self._behaviour(request)
        if b.status == 503:
            return web.json_response(_error_body(503, "Loading model"), status=503)
        return web.json_response({"status": "ok"})

    async def props(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "default_generation_settings": {
                    "n_ctx": N_CTX,
                    "params": {"n_predict": -1, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05},
                },
                "total_slots": 1,
                "model_path": MODEL_PATH,
                "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                "{% endfor %}<|im_start|>assistant\n",
                "modalities": {"vision": False, "audio": False},
                "build_info": "b6000-emulated",
            }
        )

    async def tokenize(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response(_error_body(400, "Failed to parse the request body as JSON"), status=400)
        content = body.get("content") if isinstance(body, dict) and isinstance(body.get("content"), str) else ""
        tokens = [zlib.crc32(content[i : i + 4].encode()) % 32000 for i in range(0, len(content), 4)]
        return web.json_response({"tokens": tokens})


def create_app(profile: LatencyProfile | None = None) -> web.Application:
    emu = LlamaCppEmulator(profile)
    app = web.Application()
    app.router.add_post("/completion", emu.completion)
    app.router.add_post("/completions", emu.completion)
    app.router.add_get("/health", emu.health)
    app.router.add_get("/props", emu.props)
    app.router.add_post("/tokenize", emu.tokenize)
    return app
