"""Emulated OpenAI-compatible server (OpenAI, vLLM, llama.cpp /v1, ...) plus the three Azure URL styles.

Written from the OpenAI API reference and checked with the official `openai` client (AsyncOpenAI and
AsyncAzureOpenAI); it never imports adapters/.

    POST /v1/chat/completions    chat (stream or not; n > 1 non-streaming; tools; reasoning_content)
    POST /v1/completions         legacy text completion (stream or not)
    POST /v1/embeddings          deterministic vectors (float or base64 float32 LE)
    GET  /v1/models, /v1/models/{id}
    Azure:  /openai/deployments/{deployment}/{chat/completions|completions|embeddings}?api-version=...
            /openai/v1/{chat/completions|completions|embeddings}        (api-version optional)
            /models/{chat/completions|embeddings}?api-version=...      (Azure AI model inference)
            need an `api-key` header or a Bearer token (401 otherwise); missing api-version -> 404.
            Azure streams start with a `choices: []` chunk carrying `prompt_filter_results`.

Default reply `echo: <last user text>`, cut by `max_tokens` / `max_completion_tokens` (finish
`length`) or before a `stop` string (named in vLLM's `choices[].stop_reason`, null otherwise); JSON
for `response_format` (json_schema: a value built from the schema); token `logprobs` on request; `reasoning_content` for `reasoning_effort`; a model named
`no-such-model...` is a 404.  Tools (behaviour.tools_to_call): the functions the last user turn names,
or forced by `tool_choice` (required / named; none suppresses), or the `tools` key; arguments built
from each schema's properties, streamed in several fragments, one index per call.  Scenario keys
(behaviour.py): status/retry_after, context_length (OpenAI's wording and code), chunks, text, tools,
reasoning (`reasoning_content` deltas), first_byte, chunk_delay, hang, reset_after (transport aborted),
truncate_after (clean EOF, no finish, no [DONE]), error_after (`data: {"error": ...}`, no [DONE]),
malformed (a truncated body; in a stream, an event that is not JSON where [DONE] belongs), max_tokens
(finish `length`), usage_in/usage_out.  The N of reset/truncate/error_after counts the events
written, the role chunk included and Azure's filter-results chunk not.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
import time
from typing import Any

from aiohttp import web

from . import defects
from .behaviour import (Behaviour, LatencyProfile, before_first_byte, behaviour_for, count_tokens, cut_reply,
                        json_reply, reply_text, schema_example, split_text, tools_to_call, unknown_model,
                        write_stream)
from .defects import request_hook, stream_hook

PROFILE = web.AppKey("profile", LatencyProfile)
RNG = web.AppKey("rng", random.Random)
AZURE = web.RequestKey("azure", str)  # which Azure URL style served the request, if any

MODELS = ("emulated-gpt", "emulated-embedding")
EMBEDDING_DIM = 8
CONTEXT_MESSAGE = (
    "This model's maximum context length is 4096 tokens. However, your messages resulted in 5000 tokens. "
    "Please reduce the length of the messages."
)
STREAM_ERROR = {"error": {"message": "The server had an error while processing your request.", "type": "server_error",
                           "param": None, "code": None}}
STATUS_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def error_response(status: int, message: str, *, code: str | None = None, param: str | None = None,
                   retry_after: float | None = None) -> web.Response:
    typ, default_code = STATUS_ERRORS.get(status, ("server_error", None))
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
    body = {"error": {"message": message, "type": typ, "param": param, "code": code or default_code}}
    return web.json_response(body, status=status, headers=headers)


def _id(prefix: str) -> str:
    return prefix + "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=24))


# --------------------------------------------------------------------------------------------------
# Requests


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _check_messages(messages: Any) -> web.Response | None:
    if not isinstance(messages, list) or not messages:
        return error_response(400, "'messages' must be a non-empty array", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool",
                                                              "function"):
            return error_response(400, f"Invalid value for 'messages[{i}].role'", param=f"messages[{i}].role")
    # Like the real API: a tool message must answer a call of the assistant turn before it.
    calls: set[str] = set()
    for i, m in enumerate(messages):
        if m["role"] == "tool" and m.get("tool_call_id") not in calls:
            return error_response(
                400, f"Invalid parameter: 'tool_call_id' of '{m.get('tool_call_id')}' not found in 'tool_calls' "
                     "of previous message.", param=f"messages.[{i}].tool_call_id")
        if m["role"] == "assistant":
            calls = {c.get("id") for c in m.get("tool_calls") or [] if isinstance(c, dict)}
        elif m["role"] != "tool":
            calls = set()
    return None


def _functions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The offered functions by name, in order."""
    out: dict[str, dict[str, Any]] = {}
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out[fn["name"]] = fn
    return out


def _tool_mode(body: dict[str, Any]) -> str:
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        return str((choice.get("function") or {}).get("name"))
    return choice if choice in ("none", "required") else "auto"


def _tool_calls(body: dict[str, Any], b: Behaviour, last_user: str | None) -> list[tuple[str, str]]:
    """(name, arguments JSON) of the calls the model makes (`tools_to_call`); arguments follow the
    function's schema, `{"city": "Paris"}` for the default get_weather."""
    fns = _functions(body)
    calls = []
    for name in tools_to_call(list(fns), _tool_mode(body), last_user, b.tools):
        params = (fns.get(name) or {}).get("parameters") or {"type": "object", "properties": {}}
        calls.append((name, json.dumps(schema_example(params, "arg")) if name in fns else json.dumps({"city": "Paris"})))
    return calls


def _answer_text(body: dict[str, Any], b: Behaviour, last_text: str) -> str:
    """The reply text; a JSON object when response_format asks for one (json_schema: one matching it)."""
    fmt = body.get("response_format") if isinstance(body.get("response_format"), dict) else {}
    if fmt.get("type") in ("json_schema", "json_object"):
        return json_reply(reply_text(b, last_text), (fmt.get("json_schema") or {}).get("schema"))
    return reply_text(b, last_text)


def _logprobs(text: str, top: Any) -> dict[str, Any]:
    """Token logprobs for `text` in four-character tokens, each with `top` alternatives."""
    tokens = [text[i:i + 4] for i in range(0, len(text), 4)]

    def entry(tok: str) -> dict[str, Any]:
        return {"token": tok, "logprob": -0.25, "bytes": list(tok.encode())}

    n = top if isinstance(top, int) and top > 0 else 0
    return {"content": [{**entry(t), "top_logprobs": [entry(t)] * n} for t in tokens], "refusal": None}


class Reply:
    """What the emulated model answers for one request."""

    def __init__(self, body: dict[str, Any], b: Behaviour, prompt_text: str, last_text: str,
                 last_is_user: bool = True) -> None:
        self.id = _id("chatcmpl-")
        self.created = int(time.time())
        self.model = str(body.get("model") or MODELS[0])
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        self.text, cut, self.stop_string = cut_reply(_answer_text(body, b, last_text), body.get("stop"), limit)
        thinks = b.reasoning or body.get("reasoning_effort") not in (None, "none")
        self.reasoning = f"Thinking about: {last_text or 'the request'}" if thinks else ""
        self.calls = [(name, args, _id("call_")) for name, args in
                      _tool_calls(body, b, last_text if last_is_user else None)]
        self.logprobs = _logprobs(self.text, body.get("top_logprobs")) if body.get("logprobs") else None
        self.finish = "length" if b.max_tokens or cut == "length" else "tool_calls" if self.calls else "stop"
        out_text = self.text + self.reasoning + "".join(c[1] for c in self.calls)
        self.prompt_tokens = b.usage_in if b.usage_in is not None else count_tokens(prompt_text)
        self.completion_tokens = b.usage_out if b.usage_out is not None else count_tokens(out_text)

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": count_tokens(self.reasoning) if self.reasoning else 0},
        }

    def message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": None if self.calls else self.text, "refusal": None}
        if self.reasoning:
            msg["reasoning_content"] = self.reasoning
        if self.calls:
            msg["tool_calls"] = [{"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                                 for name, args, cid in self.calls]
        return msg

    def deltas(self, chunks: int) -> list[dict[str, Any]]:
        """The chat deltas after the role chunk: reasoning, then text or the tool call in fragments."""
        out: list[dict[str, Any]] = [{"reasoning_content": p} for p in split_text(self.reasoning, chunks)
                                     if self.reasoning]
        for i, (name, args, cid) in enumerate(self.calls):
            first = {"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}
            out.append({"tool_calls": [first]})
            out += [{"tool_calls": [{"index": i, "function": {"arguments": p}}]}
                    for p in split_text(args, max(3, chunks))]
        if not self.calls:
            out += [{"content": p} for p in split_text(self.text, chunks)]
        return out


# --------------------------------------------------------------------------------------------------
# Streaming


def _data(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def _stream(request: web.Request, b: Behaviour, envelope: dict[str, Any],
                  chunks: list[dict[str, Any]]) -> web.StreamResponse:
    """Write `chunks` in the envelope, then [DONE]; all are counted for the chunk-based scenarios
    (a `defect` may rewrite the list first)."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "x-request-id": _id("req_")})
    await resp.prepare(request)
    gap = b.chunk_delay or request.app[PROFILE].chunk_gap()
    if request.get(AZURE):
        await resp.write(_data({"id": "", "object": "", "created": 0, "model": "", "choices": [],
                                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}))
    events = stream_hook(b, "openai", [{**envelope, **chunk} for chunk in chunks] + ["[DONE]"])
    frames = [_data(e) if isinstance(e, dict) else b"data: [DONE]\n\n" for e in events]
    await write_stream(request, resp, b, frames, gap, _data(STREAM_ERROR), b"data: {not json\n\n")
    return resp


def _include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and bool(opts.get("include_usage"))


# --------------------------------------------------------------------------------------------------
# Handlers


async def _read(
    request: web.Request, model_from_path: str | None = None
) -> tuple[dict[str, Any], Behaviour] | web.Response:
    """Parse the body and apply the scenario's delay / hang / error replies."""
    try:
        body = json.loads(await request.read())
    except ValueError:
        return error_response(400, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return error_response(400, "The request body must be a JSON object.")
    if model_from_path is not None:
        body.setdefault("model", model_from_path)
    if not isinstance(body.get("model"), str):
        return error_response(400, "you must provide a model parameter", param="model")
    b = behaviour_for(model_from_path or body["model"], request.headers)
    body = request_hook(b, "openai", body)
    await before_first_byte(b, request.app[PROFILE], request.app[RNG])
    if unknown_model(body["model"]):
        return error_response(404, f"The model `{body['model']}` does not exist or you do not have access to it.",
                              code="model_not_found")
    if b.status is not None:
        return error_response(b.status, f"emulated error {b.status}", retry_after=b.retry_after)
    if b.context_length:
        return error_response(400, CONTEXT_MESSAGE, code="context_length_exceeded", param="messages")
    return body, b


def _malformed() -> web.Response:
    return web.Response(body=b'{"id": "chatcmpl-broken", "choices": [', content_type="application/json")


async def chat(request: web.Request, model_from_path: str | None = None) -> web.StreamResponse:
    got = await _read(request, model_from_path)
    if isinstance(got, web.Response):
        return got
    body, b = got
    bad = _check_messages(body.get("messages"))
    if bad is not None:
        return bad
    msgs = body["messages"]
    last_user = next((_text_of(m.get("content")) for m in reversed(msgs) if m.get("role") == "user"), "")
    # System messages after the user's turn (an agent's reminders) are context, not a turn.
    turns = [m for m in msgs if m.get("role") != "system"] or msgs
    reply = Reply(body, b, "".join(_text_of(m.get("content")) for m in msgs), last_user,
                  last_is_user=turns[-1].get("role") == "user")
    envelope = {"id": reply.id, "object": "chat.completion.chunk", "created": reply.created, "model": reply.model,
                "system_fingerprint": "fp_emulated"}
    if body.get("stream"):
        usage = _include_usage(body)
        if usage:
            envelope["usage"] = None
        events = [{"role": "assistant", "content": ""}] + reply.deltas(b.chunks)
        choices = [{"choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": None}]} for d in events]
        tail = [{"choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reply.finish,
                              "stop_reason": reply.stop_string}]}]
        if usage:
            tail.append({"choices": [], "usage": reply.usage()})
        return await _stream(request, b, envelope, choices + tail)
    if b.malformed:
        return _malformed()
    n = body.get("n") or 1
    choice = {"message": reply.message(), "logprobs": reply.logprobs, "finish_reason": reply.finish,
              "stop_reason": reply.stop_string}
    return web.json_response({**envelope, "object": "chat.completion",
                              "choices": [{"index": i, **choice} for i in range(n)], "usage": reply.usage()})


async def completions(request: web.Request, model_from_path: str | None = None) -> web.StreamResponse:
    got = await _read(request, model_from_path)
    if isinstance(got, web.Response):
        return got
    body, b = got
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        return error_response(400, "'prompt' must be a string or an array of strings", param="prompt")
    b.tools = b.reasoning = False  # no slot for them in text completions
    reply = Reply({k: v for k, v in body.items() if k not in ("tools", "reasoning_effort")}, b, prompt, prompt)
    envelope = {"id": _id("cmpl-"), "object": "text_completion", "created": reply.created, "model": reply.model}
    if body.get("stream"):
        events = [{"choices": [{"index": 0, "text": p, "logprobs": None, "finish_reason": None}]}
                  for p in [""] + split_text(reply.text, b.chunks)]
        tail = [{"choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": reply.finish}]}]
        if _include_usage(body):
            tail.append({"choices": [], "usage": reply.usage()})
        return await _stream(request, b, envelope, events + tail)
    if b.malformed:
        return _malformed()
    choice = {"index": 0, "text": reply.text, "logprobs": None, "finish_reason": reply.finish}
    return web.json_response({**envelope, "choices": [choice], "usage": reply.usage()})


def embedding_for(text: str, dim: int) -> list[float]:
    """A deterministic unit-ish vector from the text's hash."""
    digest = hashlib.sha256(text.encode()).digest()
    while len(digest) < dim:
        digest += hashlib.sha256(digest).digest()
    return [round(byte / 255.0 - 0.5, 6) for byte in digest[:dim]]


async def embeddings(request: web.Request, model_from_path: str | None = None) -> web.StreamResponse:
    got = await _read(request, model_from_path)
    if isinstance(got, web.Response):
        return got
    body, _ = got
    inp = body.get("input")
    inputs = [inp] if isinstance(inp, str) else inp
    if not isinstance(inputs, list) or not inputs:
        return error_response(400, "'input' must be a non-empty string or array", param="input")
    dim = body.get("dimensions") or EMBEDDING_DIM
    b64 = body.get("encoding_format") == "base64"
    data = []
    for i, item in enumerate(inputs):
        vec = embedding_for(json.dumps(item), dim)
        emb: Any = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode() if b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(count_tokens(json.dumps(x)) for x in inputs)
    return web.json_response({"object": "list", "model": body["model"], "data": data,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _model(mid: str) -> dict[str, Any]:
    return {"id": mid, "object": "model", "created": 1700000000, "owned_by": "emulator"}


async def list_models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [_model(m) for m in MODELS]})


async def get_model(request: web.Request) -> web.Response:
    return web.json_response(_model(request.match_info["model"]))


# --------------------------------------------------------------------------------------------------
# Azure


_AZURE_OPS = {"chat/completions": chat, "completions": completions, "embeddings": embeddings}


def _azure_check(request: web.Request, need_version: bool) -> web.Response | None:
    auth = request.headers.get("authorization", "")
    if not request.headers.get("api-key") and not auth.lower().startswith("bearer "):
        return web.json_response({"error": {"code": "401", "message": "Access denied due to invalid subscription key "
                                            "or wrong API endpoint."}}, status=401)
    if need_version and not request.query.get("api-version"):
        return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)
    return None


def _azure(style: str) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        op = _AZURE_OPS.get(request.match_info["op"])
        if op is None:
            return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)
        bad = _azure_check(request, need_version=style != "v1")
        if bad is not None:
            return bad
        request[AZURE] = style
        return await op(request, request.match_info.get("deployment"))

    return handler


def create_app(profile: LatencyProfile | None = None) -> web.Application:
    app = web.Application(middlewares=[defects.middleware("openai")])
    app[PROFILE] = profile or LatencyProfile()
    app[RNG] = random.Random(0)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_post("/openai/deployments/{deployment}/{op:.+}", _azure("deployments"))
    app.router.add_post("/openai/v1/{op:.+}", _azure("v1"))
    app.router.add_post("/models/{op:.+}", _azure("models"))
    return app
