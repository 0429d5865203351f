"""Emulated Ollama native API, written from Ollama's API docs (api.md, streaming and errors pages) and
checked against the official `ollama` Python client.

Routes:

    POST /api/chat       messages -> message (content, thinking, tool_calls), NDJSON stream by default
    POST /api/generate   prompt -> response (raw or not: the prompt is echoed as given)
    POST /api/embed      input (string or list) -> embeddings (deterministic, L2-normalised)
    GET  /api/tags       installed models
    POST /api/show       one model's details and capabilities
    GET  /api/version    server version

Like the real server, `stream` defaults to *true* when the body omits it.  Streams are NDJSON
(`application/x-ndjson`): thinking lines, content lines (`chunks` of them), tool calls whole in one
line, then a `done: true` line with `done_reason`, the token counts and durations in nanoseconds.
Errors are `{"error": "<string>"}`; the model `missing` (any tag) answers 404 "not found, try pulling
it first", as does `status=404`.  Default reply: `echo: <last user text>`, cut at the first
`options.stop` string (done_reason stop) or at `options.num_predict` tokens (done_reason length).
`format` ("json" or a schema) makes the reply JSON.  Tool calls (whole, in the message) for the tools the last user message names (behaviour.tools_to_call).

Scenario keys (behaviour.py): status/retry_after, context_length (400 with Ollama's wording), chunks,
text, tools (a call to the first tool offered, else `get_weather`), reasoning (`message.thinking`,
also when the request sets `think`), first_byte, chunk_delay, hang, reset_after, truncate_after,
error_after (an `{"error": ...}` line after a 200), malformed, max_tokens (done_reason length),
usage_in/usage_out (prompt_eval_count / eval_count).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import string
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from .behaviour import (Behaviour, LatencyProfile, before_first_byte, behaviour_for, count_tokens, reply_text,
                        json_reply, split_text, tools_to_call, write_stream)

VERSION = "0.12.6"
CONTEXT_MESSAGE = "the input length exceeds the context length"
STREAM_ERROR = "an error was encountered while running the model: emulated failure"
MALFORMED_LINE = b'{"model":"x","message":{"role":"assist\n'
DEFAULT_DIMENSIONS = 16
MODELS = [
    ("llama3.2:latest", "llama", "3.2B", ["completion", "tools"]),
    ("qwen3:8b", "qwen3", "8.2B", ["completion", "tools", "thinking"]),
    ("llava:7b", "llama", "7B", ["completion", "vision"]),
    ("nomic-embed-text:latest", "nomic-bert", "137M", ["embedding"]),
]
NS_PER_TOKEN = 20_000_000  # emulated 50 tokens/s, reported in the duration fields


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _is_missing(model: str) -> bool:
    return model.split("::", 1)[0].split(":", 1)[0] == "missing"


def _not_found(model: str) -> web.Response:
    name = model.split("::", 1)[0]
    return web.json_response({"error": f'model "{name}" not found, try pulling it first'}, status=404)


def _tool_calls(body: dict[str, Any], b: Behaviour) -> list[dict[str, Any]]:
    """The calls the model makes (behaviour.tools_to_call; Ollama has no tool_choice): "Paris" for each
    declared property, get_weather(city) under the `tools` key when nothing is offered."""
    fns = {str(f.get("name")): f for t in body.get("tools") or [] if isinstance(t, dict)
           for f in [t.get("function") or {}] if isinstance(f, dict) and f.get("name")}
    # System messages after the user's turn (an agent's reminders) are context, not a turn.
    msgs = [m for m in body.get("messages") or [] if not (isinstance(m, dict) and m.get("role") == "system")]
    last = msgs[-1] if msgs and isinstance(msgs[-1], dict) else {}
    last_user = _content(last.get("content")) if last.get("role") == "user" else None
    calls = []
    for i, name in enumerate(tools_to_call(list(fns), "auto", last_user, b.tools)):
        props = ((fns[name].get("parameters") or {}).get("properties") or {}) if name in fns else {"city": {}}
        call_id = "call_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
        calls.append({"id": call_id, "function": {"index": i, "name": name, "arguments": {p: "Paris" for p in props}}})
    return calls


@dataclass
class _Reply:
    """What the emulated model answers to one /api/chat or /api/generate request."""

    text: str
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    done_reason: str = "stop"
    prompt_tokens: int = 0
    eval_tokens: int = 0

    @classmethod
    def build(cls, b: Behaviour, body: dict[str, Any], last_user: str, prompt_text: str) -> "_Reply":
        options = body.get("options") or {}
        fmt = body.get("format")
        text = reply_text(b, last_user)
        reply = cls(text=json_reply(text, fmt if isinstance(fmt, dict) else None) if fmt else text)
        if b.reasoning or body.get("think") not in (None, False):
            reply.thinking = f"The user wrote {len(last_user)} characters; answer briefly."
        reply.tool_calls = _tool_calls(body, b)
        if reply.tool_calls:
            reply.text = ""
        for stop in options.get("stop") or ():
            if stop and stop in reply.text:
                reply.text = reply.text[: reply.text.index(stop)]
        limit = options.get("num_predict")
        if isinstance(limit, int) and limit >= 0 and count_tokens(reply.text) > limit:
            reply.text, reply.done_reason = reply.text[: limit * 4], "length"
        if b.max_tokens:
            reply.done_reason = "length"
        reply.prompt_tokens = b.usage_in if b.usage_in is not None else count_tokens(prompt_text)
        generated = reply.thinking + reply.text + json.dumps(reply.tool_calls) * bool(reply.tool_calls)
        reply.eval_tokens = b.usage_out if b.usage_out is not None else count_tokens(generated)
        return reply

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "done": True,
            "done_reason": self.done_reason,
            "total_duration": (self.prompt_tokens + self.eval_tokens) * NS_PER_TOKEN + 1_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_duration": self.prompt_tokens * NS_PER_TOKEN // 10,
            "eval_count": self.eval_tokens,
            "eval_duration": self.eval_tokens * NS_PER_TOKEN,
        }
        if self.prompt_tokens:  # omitempty in Go: a fully cached prompt has no count at all
            out["prompt_eval_count"] = self.prompt_tokens
        return out


def _content(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _ndjson(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


class OllamaEmulator:
    def __init__(self, profile: LatencyProfile | None) -> None:
        self.profile = profile or LatencyProfile()
        self.rng = random.Random(0)

    async def _read(self, request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None, web.json_response({"error": "invalid character in request body"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
            return None, web.json_response({"error": "model is required"}, status=400)
        return body, None

    async def _prelude(self, b: Behaviour, model: str) -> web.Response | None:
        """First-byte delay, hang, and the error answers that come before any body."""
        await before_first_byte(b, self.profile, self.rng)
        headers = {"retry-after": f"{b.retry_after:g}"} if b.retry_after is not None else {}
        if _is_missing(model) or b.status == 404:
            return _not_found(model)
        if b.context_length:
            return web.json_response({"error": CONTEXT_MESSAGE}, status=400, headers=headers)
        if b.status is not None:
            return web.json_response({"error": f"emulated error {b.status}"}, status=b.status, headers=headers)
        return None

    # -- generation ------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, err = await self._read(request)
        if err is not None:
            return err
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        users = [_content(m.get("content")) for m in messages if m.get("role") == "user"]
        prompt_text = "\n".join(_content(m.get("content")) for m in messages)
        return await self._generate(request, body, users[-1] if users else "", prompt_text, chat=True)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body, err = await self._read(request)
        if err is not None:
            return err
        prompt = _content(body.get("prompt"))
        return await self._generate(request, body, prompt, prompt, chat=False)

    async def _generate(
        self, request: web.Request, body: dict[str, Any], last_user: str, prompt_text: str, chat: bool
    ) -> web.StreamResponse:
        model = body["model"]
        b = behaviour_for(model, request.headers)
        err = await self._prelude(b, model)
        if err is not None:
            return err
        reply = _Reply.build(b, body, last_user, prompt_text)
        if body.get("stream", True) is not False:
            return await self._stream(request, b, self._lines(model, reply, chat, b.chunks))
        if b.malformed:
            return web.Response(body=b'{"model": "m", "message": {"ro', content_type="application/json")
        return web.json_response(self._whole(model, reply, chat))

    @staticmethod
    def _piece(model: str, chat: bool, content: str = "", thinking: str = "", calls: Any = None) -> dict[str, Any]:
        line: dict[str, Any] = {"model": model, "created_at": _now()}
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            line["message"] = message
        else:
            line["response"] = content
            if thinking:
                line["thinking"] = thinking
        line["done"] = False
        return line

    def _lines(self, model: str, reply: _Reply, chat: bool, chunks: int) -> list[dict[str, Any]]:
        lines = [self._piece(model, chat, thinking=t) for t in split_text(reply.thinking, 2) if t]
        lines += [self._piece(model, chat, content=t) for t in split_text(reply.text, chunks) if t]
        if reply.tool_calls:
            lines.append(self._piece(model, chat, calls=reply.tool_calls))
        last = self._piece(model, chat)
        last.update(reply.metrics())
        if not chat:
            last["context"] = [1, 2, 3]
        return [*lines, last]

    def _whole(self, model: str, reply: _Reply, chat: bool) -> dict[str, Any]:
        out = self._piece(model, chat, reply.text, reply.thinking, reply.tool_calls)
        out.update(reply.metrics())
        return out

    async def _stream(self, request: web.Request, b: Behaviour, lines: list[dict[str, Any]]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
        await resp.prepare(request)
        gap = b.chunk_delay + self.profile.chunk_gap()
        frames = [_ndjson(line) for line in lines]
        await write_stream(request, resp, b, frames, gap, _ndjson({"error": STREAM_ERROR}), MALFORMED_LINE)
        return resp

    # -- embeddings ------------------------------------------------------------------------------
    async def embed(self, request: web.Request) -> web.Response:
        body, err = await self._read(request)
        if err is not None:
            return err
        model = body["model"]
        b = behaviour_for(model, request.headers)
        err = await self._prelude(b, model)
        if err is not None:
            return err
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else [_content(t) for t in inputs or []]
        dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) else DEFAULT_DIMENSIONS
        if b.malformed:
            return web.Response(body=b'{"embeddings": [[0.1,', content_type="application/json")
        tokens = b.usage_in if b.usage_in is not None else sum(count_tokens(t) for t in texts)
        return web.json_response(
            {
                "model": model,
                "embeddings": [_vector(t, dims) for t in texts],
                "total_duration": 5_000_000,
                "load_duration": 1_000_000,
                "prompt_eval_count": tokens,
            }
        )

    # -- model metadata --------------------------------------------------------------------------
    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [_model_entry(*m[:3]) for m in MODELS]})

    async def show(self, request: web.Request) -> web.Response:
        body, err = await self._read(request)
        if err is not None:
            return err
        model = body["model"]
        if _is_missing(model):
            return _not_found(model)
        base = model.split("::", 1)[0]
        entry = next((m for m in MODELS if m[0] == base or m[0].split(":")[0] == base), MODELS[0])
        return web.json_response(
            {
                "modelfile": f"FROM {entry[0]}\n",
                "parameters": 'stop "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": _model_entry(*entry[:3])["details"],
                "model_info": {"general.architecture": entry[1], f"{entry[1]}.context_length": 131072},
                "capabilities": entry[3],
                "modified_at": "2025-07-07T20:43:37.688511Z",
            }
        )

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": VERSION})


def _vector(text: str, dims: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [digest[i % len(digest)] / 255.0 - 0.5 for i in range(max(1, dims))]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def _model_entry(name: str, family: str, size: str) -> dict[str, Any]:
    """An /api/tags entry (capabilities are listed by /api/show only)."""
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-07-07T20:43:37.688511Z",
        "size": 2_019_393_189,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": size,
            "quantization_level": "Q4_K_M",
        },
    }


def create_app(profile: LatencyProfile | None = None) -> web.Application:
    emu = OllamaEmulator(profile)
    app = web.Application()
    app.router.add_post("/api/chat", emu.chat)
    app.router.add_post("/api/generate", emu.generate)
    app.router.add_post("/api/embed", emu.embed)
    app.router.add_get("/api/tags", emu.tags)
    app.router.add_post("/api/show", emu.show)
    app.router.add_get("/api/version", emu.version)
    return app
