"""Emulated text-generation-inference (TGI) server, plus the Hugging Face serverless Inference API shape.

Written from TGI's router (`/generate`, `/generate_stream`, the compat route `/`, `/info`, `/health`)
and huggingface_hub's `InferenceClient.text_generation` / `feature_extraction`:

    POST /generate                  {"inputs", "parameters"} -> {"generated_text", "details"?}
    POST /generate_stream           SSE `data:{token event}` (no space, no [DONE]); the last event has
                                    the full `generated_text` and (with details) `details`
    POST /                          TGI's compat route: `"stream": true` -> SSE, else a LIST [{...}]
    POST /models/{model}            HF serverless: text-generation like `/` (list answer), or
                                    feature-extraction when `inputs` is a list, the model name
                                    contains "embed" / "sentence-transformers", or the path ends in
                                    /pipeline/feature-extraction
    GET  /info, /health

TGI serves one model and ignores names, so the scenario comes from the `x-emulate` header (or the
`{model}` path segment: `/models/llama::status=503`).  Default reply: `echo: <last user text>`, the
last user turn found in the prompt by the usual template markers (Llama 3, ChatML, [INST], Gemma,
Phi-3), else the whole prompt.  Like TGI, a matched stop sequence stays in the text (finish reason
`stop_sequence`), `max_new_tokens` cuts the reply (`length`), `grammar` `{"type": "json"}` makes it
JSON, and an eos ending sends a special `</s>` token last.  Headers `x-prompt-tokens` / `x-generated-tokens` on non-stream answers.

Scenario keys: status (+retry_after) -> `{"error", "error_type"}` with TGI's error_type for the status
(HF serverless 503: `{"error": "Model ... is currently loading", "estimated_time"}`); context_length ->
422 validation with TGI's `inputs` tokens + `max_new_tokens` wording; chunks, text, first_byte,
chunk_delay, hang, reset_after, truncate_after, error_after (in-band `{"error", "error_type":
"generation"}`), malformed, max_tokens (`length`), usage_in/usage_out; tools -> a Hermes-style
`<tool_call>` JSON text (the native API has no tool calls); reasoning -> a `<think>...</think>` prefix.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

from aiohttp import web

from .behaviour import (Behaviour, LatencyProfile, before_first_byte, behaviour_for, count_tokens, last_user_text,
                        json_reply, reply_text, split_text, write_stream)

MODEL_ID = "emulated/tgi-model"
MAX_TOTAL_TOKENS = 4096
EMBEDDING_DIM = 8
EOS = "</s>"
ERROR_TYPES = {400: "validation", 422: "validation", 424: "generation", 429: "overloaded", 500: "incomplete_generation"}
GENERATION_ERROR = "Request failed during generation: Server error: emulated generation failure"
MALFORMED_EVENT = b'data:{"index":1,"token":{"id"\n\n'

def _tool_name(prompt: str) -> str:
    m = re.search(r'"function":\s*\{\s*"name":\s*"([^"]+)"', prompt)
    return m.group(1) if m else "get_weather"


class _Generation:
    """The reply for one request: text (stop / max_new_tokens applied like TGI), finish, counts."""

    def __init__(self, b: Behaviour, inputs: str, params: dict[str, Any]) -> None:
        text = reply_text(b, last_user_text(inputs))
        grammar = params.get("grammar") if isinstance(params.get("grammar"), dict) else {}
        if grammar.get("type") == "json":  # TGI's guided decoding: the output matches the schema
            text = json_reply(text, grammar.get("value"))
        if b.tools:
            text = '<tool_call>\n{"name": "%s", "arguments": {"location": "Paris"}}\n</tool_call>' % _tool_name(inputs)
        if b.reasoning:
            text = "<think>Let me think about this.</think>" + text
        self.finish = "eos_token"
        # TGI stops at the first stop sequence generated and keeps its text in the output.
        ends = [text.find(s) + len(s) for s in params.get("stop") or [] if s and s in text]
        if ends:
            text, self.finish = text[: min(ends)], "stop_sequence"
        limit = params.get("max_new_tokens")
        if b.max_tokens:
            text, self.finish = text[: max(1, len(text) // 2)], "length"
        elif limit and count_tokens(text) > limit:
            text, self.finish = text[: limit * 4], "length"
        self.text = text
        self.prompt_tokens = b.usage_in if b.usage_in is not None else count_tokens(inputs)
        self.tokens = b.usage_out if b.usage_out is not None else count_tokens(text)
        self.seed = params.get("seed")

    def details(self, prefill: bool) -> dict[str, Any]:
        return {
            "finish_reason": self.finish,
            "generated_tokens": self.tokens,
            "seed": self.seed,
            "prefill": [{"id": i, "text": "t", "logprob": None} for i in range(self.prompt_tokens)] if prefill else [],
            "tokens": [],
            "top_tokens": None,
            "best_of_sequences": None,
        }

    def body(self, params: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"generated_text": self.text}
        if params.get("details"):
            out["details"] = self.details(bool(params.get("decoder_input_details")))
        return out


def _event(index: int, text: str, special: bool = False) -> dict[str, Any]:
    token = {"id": index, "text": text, "logprob": -0.1, "special": special}
    return {"index": index, "token": token, "generated_text": None, "details": None, "top_tokens": None}


def _sse(obj: Any) -> bytes:
    return b"data:" + json.dumps(obj).encode() + b"\n\n"


class TGIEmulator:
    def __init__(self, profile: LatencyProfile | None) -> None:
        self.profile = profile or LatencyProfile()
        self.rng = random.Random(0)

    # -- scenario plumbing -----------------------------------------------------------------------
    async def _prelude(self, b: Behaviour) -> None:
        await before_first_byte(b, self.profile, self.rng)

    def _error(self, b: Behaviour, serverless_model: str | None) -> web.Response | None:
        headers = {"retry-after": f"{b.retry_after:g}"} if b.retry_after is not None else {}
        if b.context_length:
            msg = (
                f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {MAX_TOTAL_TOKENS}. "
                "Given: 5000 `inputs` tokens and 100 `max_new_tokens`"
            )
            return web.json_response({"error": msg, "error_type": "validation"}, status=422, headers=headers)
        if b.status is None:
            return None
        if serverless_model is not None and b.status == 503:
            body: dict[str, Any] = {
                "error": f"Model {serverless_model.split('::')[0]} is currently loading",
                "estimated_time": b.retry_after if b.retry_after is not None else 20.0,
            }
        else:
            body = {"error": f"emulated error {b.status}"}
            if b.status in ERROR_TYPES:
                body["error_type"] = ERROR_TYPES[b.status]
        return web.json_response(body, status=b.status, headers=headers)

    # -- text generation -------------------------------------------------------------------------
    async def _generate(
        self, request: web.Request, body: dict[str, Any], stream: bool, as_list: bool, model: str | None
    ) -> web.StreamResponse:
        b = behaviour_for(model, request.headers)
        await self._prelude(b)
        err = self._error(b, model)
        if err is not None:
            return err
        params = body.get("parameters") or {}
        gen = _Generation(b, str(body.get("inputs") or ""), params)
        if stream:
            return await self._stream(request, b, gen, params)
        if b.malformed:
            return web.Response(body=b'{"generated_text": "trunc', content_type="application/json")
        out: Any = gen.body(params)
        headers = {"x-prompt-tokens": str(gen.prompt_tokens), "x-generated-tokens": str(gen.tokens)}
        return web.json_response([out] if as_list else out, headers=headers)

    async def _stream(
        self, request: web.Request, b: Behaviour, gen: _Generation, params: dict[str, Any]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        pieces = split_text(gen.text, b.chunks) if gen.text else []
        # An eos ending adds the special EOS token last; otherwise the last text token ends the stream.
        events = [_event(i + 1, p) for i, p in enumerate(pieces)]
        if gen.finish == "eos_token" or not events:
            events.append(_event(len(events) + 1, EOS, special=True))
        last = events[-1]
        last["generated_text"] = gen.text
        if params.get("details"):
            last["details"] = {
                "finish_reason": gen.finish,
                "generated_tokens": gen.tokens,
                "seed": gen.seed,
                "input_length": gen.prompt_tokens,
            }
        gap = b.chunk_delay + self.profile.chunk_gap()
        error = _sse({"error": GENERATION_ERROR, "error_type": "generation"})
        await write_stream(request, resp, b, [_sse(ev) for ev in events], gap, error, MALFORMED_EVENT)
        return resp

    # -- feature extraction ----------------------------------------------------------------------
    @staticmethod
    def _vector(text: str) -> list[float]:
        digest = hashlib.sha256(text.encode()).digest()
        return [round(digest[i] / 255.0, 6) for i in range(EMBEDDING_DIM)]

    async def _embed(self, request: web.Request, body: dict[str, Any], model: str) -> web.Response:
        b = behaviour_for(model, request.headers)
        await self._prelude(b)
        err = self._error(b, model)
        if err is not None:
            return err
        if b.malformed:
            return web.Response(body=b"[[0.1, 0.2", content_type="application/json")
        inputs = body.get("inputs")
        if isinstance(inputs, list):
            return web.json_response([self._vector(str(t)) for t in inputs])
        return web.json_response(self._vector(str(inputs)))  # one sentence: a bare vector

    # -- handlers --------------------------------------------------------------------------------
    async def _json(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or "inputs" not in body:
            return web.json_response(
                {"error": "Failed to deserialize the JSON body into the target type", "error_type": "validation"},
                status=422,
            )
        return body

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        return await self._generate(request, body, False, False, None)

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        return await self._generate(request, body, True, False, None)

    async def compat(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        return await self._generate(request, body, bool(body.get("stream")), True, None)

    async def serverless(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        pipeline = model.endswith("/pipeline/feature-extraction")
        model = model.removesuffix("/pipeline/feature-extraction")
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        name = model.lower()
        if pipeline or isinstance(body.get("inputs"), list) or "embed" in name or "sentence-transformers" in name:
            return await self._embed(request, body, model)
        return await self._generate(request, body, bool(body.get("stream")), True, model)

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "model_id": MODEL_ID,
                "model_sha": None,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": MAX_TOTAL_TOKENS - 1,
                "max_total_tokens": MAX_TOTAL_TOKENS,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": "3.0.0",
                "sha": None,
                "docker_label": None,
            }
        )

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)


def create_app(profile: LatencyProfile | None = None) -> web.Application:
    emu = TGIEmulator(profile)
    app = web.Application()
    app.router.add_post("/generate", emu.generate)
    app.router.add_post("/generate_stream", emu.generate_stream)
    app.router.add_post("/", emu.compat)
    app.router.add_post("/models/{model:.+}", emu.serverless)
    app.router.add_get("/info", emu.info)
    app.router.add_get("/health", emu.health)
    return app
