"""Emulated Cohere v2 API, written from Cohere's API reference and checked against the official
`cohere` SDK's ClientV2.

Routes:

    POST /v2/chat     a chat response, or SSE with `"stream": true`
    POST /v2/embed    {"id", "embeddings": {"float": [...]}, "texts", "meta"}

Like the real API: every route needs `Authorization: Bearer <key>` (else 401); fields outside the
request schema are refused with 422 (top level, messages, tools, tool calls), so an adapter that
forwards OpenAI's `strict` or another stray field fails here as it would there; `tool_choice` is
only REQUIRED / NONE; a tool message must answer a tool call of the assistant turn before it;
`/v2/embed` needs `input_type` (400).  Errors are `{"id", "message"}`.

Stream (SSE with `event:` lines, the type repeated in the data): message-start, then either
content-start / content-delta... / content-end for the text (after a thinking block under
`reasoning`), or tool-plan-delta pieces and tool-call-start (arguments "") / tool-call-delta... /
tool-call-end for a tool call, then message-end with finish_reason and usage (billed_units and
tokens, which differ as on the real API: billed input leaves out the prompt template).

Scenario keys (behaviour.py): status / retry_after, context_length ("too many tokens: ..."),
chunks, text, tools (or tool_choice REQUIRED), reasoning, first_byte, chunk_delay, hang,
reset_after / truncate_after / error_after (counted in content / tool-call delta events;
error_after sends message-end with finish_reason ERROR and delta.error), malformed, max_tokens
(MAX_TOKENS), usage_in / usage_out.  A `stop_sequences` entry found in the reply text cuts it there
(finish_reason STOP_SEQUENCE), `max_tokens` at that many tokens (MAX_TOKENS).  Without the `tools`
key, a tool the last user message names is called (behaviour.tools_to_call; NONE suppresses).
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

from aiohttp import web

from .behaviour import (Behaviour, LatencyProfile, before_first_byte, behaviour_for, count_tokens, cut_reply,
                        example_value, reply_text, split_text, tools_to_call, unit_vector, write_stream)

PROFILE = web.AppKey("cohere_profile", LatencyProfile)
RNG = web.AppKey("cohere_rng", random.Random)

CHAT_FIELDS = frozenset({
    "model", "messages", "tools", "strict_tools", "documents", "citation_options", "response_format",
    "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed", "frequency_penalty",
    "presence_penalty", "k", "p", "logprobs", "tool_choice", "thinking", "priority", "stream",
})
EMBED_FIELDS = frozenset({"model", "texts", "images", "inputs", "input_type", "max_tokens", "output_dimension",
                          "embedding_types", "truncate", "priority"})
MESSAGE_FIELDS = {
    "system": frozenset({"role", "content"}),
    "user": frozenset({"role", "content"}),
    "assistant": frozenset({"role", "content", "tool_plan", "tool_calls", "citations"}),
    "tool": frozenset({"role", "tool_call_id", "content"}),
}
TOOL_FIELDS = frozenset({"type", "function"})
FUNCTION_FIELDS = frozenset({"name", "description", "parameters"})
CALL_FIELDS = frozenset({"id", "type", "function"})
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")
CONTEXT_MESSAGE = ("too many tokens: size limit exceeded by 1045 tokens. Try using shorter or fewer inputs, "
                   "or setting prompt_truncation='AUTO'.")
THINKING = "The user wants an answer. I will give it."
TOOL_PLAN = "I will call the tool to answer this."
TEMPLATE_TOKENS = 7  # what the prompt template adds to `tokens` but not to `billed_units`
DEFAULT_DIMENSIONS = 16
MALFORMED_EVENT = b"event: content-delta\ndata: {not json\n\n"


def _id() -> str:
    return str(uuid.uuid4())


def error_response(status: int, message: str, retry_after: float | None = None) -> web.Response:
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else None
    return web.json_response({"id": _id(), "message": message}, status=status, headers=headers)


def _unknown(obj: dict[str, Any], allowed: frozenset[str], where: str) -> web.Response | None:
    extra = sorted(set(obj) - allowed)
    if extra:
        return error_response(422, f"invalid request: unknown field: parameter {where}{extra[0]} is not a valid field")
    return None


# --------------------------------------------------------------------------------------------------
# Request checks


def _check_tools(body: dict[str, Any]) -> web.Response | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        return error_response(400, "invalid request: tools must be a list")
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or not isinstance(t.get("function"), dict):
            return error_response(400, f"invalid request: tools[{i}].function is required")
        bad = _unknown(t, TOOL_FIELDS, f"tools[{i}].") or _unknown(t["function"], FUNCTION_FIELDS, f"tools[{i}].function.")
        if bad is not None:
            return bad
        if not t["function"].get("name"):
            return error_response(400, f"invalid request: tools[{i}].function.name is required")
    if body.get("tool_choice") is not None and body["tool_choice"] not in ("REQUIRED", "NONE"):
        return error_response(400, "invalid request: tool_choice must be one of REQUIRED, NONE")
    return None


def _check_message(i: int, m: Any, previous_calls: set[str]) -> web.Response | None:
    if not isinstance(m, dict) or m.get("role") not in MESSAGE_FIELDS:
        return error_response(400, f"invalid request: messages[{i}].role must be one of system, user, assistant, tool")
    bad = _unknown(m, MESSAGE_FIELDS[m["role"]], f"messages[{i}].")
    if bad is not None:
        return bad
    role = m["role"]
    if role in ("system", "user") and "content" not in m:
        return error_response(400, f"invalid request: messages[{i}].content is required")
    if role == "assistant":
        calls = m.get("tool_calls") or []
        if not calls and not m.get("content"):
            return error_response(400, f"invalid request: messages[{i}]: assistant message needs content or tool_calls")
        for j, c in enumerate(calls):
            if not isinstance(c, dict):
                return error_response(400, f"invalid request: messages[{i}].tool_calls[{j}] must be an object")
            bad = _unknown(c, CALL_FIELDS, f"messages[{i}].tool_calls[{j}].")
            if bad is not None:
                return bad
    if role == "tool" and m.get("tool_call_id") not in previous_calls:
        return error_response(400, f"invalid request: messages[{i}].tool_call_id {m.get('tool_call_id')!r} does not "
                                   "match a tool call of the preceding assistant message")
    return None


def _check_chat(body: dict[str, Any]) -> web.Response | None:
    bad = _unknown(body, CHAT_FIELDS, "")
    if bad is not None:
        return bad
    for field in ("model", "messages"):
        if field not in body:
            return error_response(400, f"invalid request: {field} must not be empty")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return error_response(400, "invalid request: messages must not be empty")
    calls: set[str] = set()
    for i, m in enumerate(messages):
        bad = _check_message(i, m, calls)
        if bad is not None:
            return bad
        if isinstance(m, dict) and m.get("role") == "assistant":
            calls = {c.get("id") for c in m.get("tool_calls") or []}
        elif isinstance(m, dict) and m.get("role") != "tool":
            calls = set()
    return _check_tools(body)


# --------------------------------------------------------------------------------------------------
# Replies


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for item in content if isinstance(content, list) else []:
        if isinstance(item, dict) and item.get("type") == "text":
            out.append(str(item.get("text", "")))
        elif isinstance(item, dict) and item.get("type") == "document":
            out.append(json.dumps(item.get("document")))
    return out


def last_user_text(body: dict[str, Any]) -> str:
    """The last user message's text, or the tool results that end the conversation."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    tail: list[str] = []
    for m in reversed(messages):
        if m.get("role") == "tool":
            tail = _texts(m.get("content")) + tail
            continue
        if tail:
            return " ".join(tail)
        if m.get("role") == "user":
            return " ".join(t for t in _texts(m.get("content")) if t)
    return " ".join(tail)


class Reply:
    """What one chat request gets under its scenario."""

    def __init__(self, body: dict[str, Any], b: Behaviour) -> None:
        self.id = _id()
        tools = {t["function"].get("name"): t["function"] for t in body.get("tools") or []}
        mode = {"NONE": "none", "REQUIRED": "required"}.get(body.get("tool_choice"), "auto")
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        last_user = last_user_text(body) if messages and messages[-1].get("role") == "user" else None
        chosen = tools_to_call(list(tools), mode, last_user, b.tools)
        self.call: dict[str, Any] | None = None
        if chosen:  # one call: the emulator makes no parallel calls
            fn = tools.get(chosen[0]) or {"name": "get_weather", "parameters": {}}
            args = example_value(fn.get("parameters") or {})
            self.call = {"id": f"{fn['name']}_{uuid.uuid4().hex[:12]}", "type": "function",
                         "function": {"name": fn["name"], "arguments": json.dumps(args if isinstance(args, dict) else {})}}
        self.thinking = THINKING if b.reasoning else None
        self.text = "" if self.call else reply_text(b, last_user_text(body))
        self.text, cut, _ = cut_reply(self.text, body.get("stop_sequences"), body.get("max_tokens"))
        self.finish = ("MAX_TOKENS" if b.max_tokens or cut == "length" else "TOOL_CALL" if self.call
                       else "STOP_SEQUENCE" if cut == "stop" else "COMPLETE")
        prompt = json.dumps(body.get("messages")) + json.dumps(body.get("tools") or [])
        self.input_tokens = b.usage_in if b.usage_in is not None else count_tokens(prompt)
        out = json.dumps(self.call) if self.call else self.text
        self.output_tokens = b.usage_out if b.usage_out is not None else count_tokens(out)

    def usage(self) -> dict[str, Any]:
        return {"billed_units": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
                "tokens": {"input_tokens": self.input_tokens + TEMPLATE_TOKENS, "output_tokens": self.output_tokens}}

    def message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant"}
        content = [{"type": "thinking", "thinking": self.thinking}] if self.thinking else []
        if self.call:
            msg["tool_plan"] = TOOL_PLAN
            msg["tool_calls"] = [self.call]
        else:
            content.append({"type": "text", "text": self.text})
        if content:
            msg["content"] = content
        return msg

    def response(self) -> dict[str, Any]:
        return {"id": self.id, "finish_reason": self.finish, "message": self.message(), "usage": self.usage()}


def _sse(obj: dict[str, Any]) -> bytes:
    return f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n".encode()


def _frames(reply: Reply, chunks: int) -> tuple[bytes, list[bytes]]:
    """(what precedes the first counted delta, one frame per delta with the events after it)."""
    events: list[dict[str, Any]] = [{"type": "message-start", "id": reply.id,
                                     "delta": {"message": {"role": "assistant"}}}]
    index = 0
    if reply.thinking:
        events.append({"type": "content-start", "index": 0,
                       "delta": {"message": {"content": {"type": "thinking", "thinking": ""}}}})
        events += [{"type": "content-delta", "index": 0, "delta": {"message": {"content": {"thinking": p}}}}
                   for p in split_text(reply.thinking, chunks)]
        events.append({"type": "content-end", "index": 0})
        index = 1
    if reply.call:
        events += [{"type": "tool-plan-delta", "delta": {"message": {"tool_plan": p}}} for p in split_text(TOOL_PLAN, 2)]
        start = {**reply.call, "function": {**reply.call["function"], "arguments": ""}}
        events.append({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": start}}})
        events += [{"type": "tool-call-delta", "index": 0,
                    "delta": {"message": {"tool_calls": {"function": {"arguments": p}}}}}
                   for p in split_text(reply.call["function"]["arguments"], chunks)]
        events.append({"type": "tool-call-end", "index": 0})
    else:
        events.append({"type": "content-start", "index": index,
                       "delta": {"message": {"content": {"type": "text", "text": ""}}}})
        events += [{"type": "content-delta", "index": index, "delta": {"message": {"content": {"text": p}}}}
                   for p in split_text(reply.text, chunks)]
        events.append({"type": "content-end", "index": index})
    events.append({"type": "message-end", "delta": {"finish_reason": reply.finish, "usage": reply.usage()}})
    head, frames = b"", []
    for e in events:
        if e["type"] in ("content-delta", "tool-call-delta"):
            frames.append(b"")
        if frames:
            frames[-1] += _sse(e)
        else:
            head += _sse(e)
    return head, frames


STREAM_ERROR = {"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "internal server error, this has been reported to our developers"}}


async def _stream(request: web.Request, reply: Reply, b: Behaviour) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    head, frames = _frames(reply, b.chunks)
    await resp.write(head)
    gap = b.chunk_delay or request.app[PROFILE].chunk_gap()
    await write_stream(request, resp, b, frames, gap, _sse(STREAM_ERROR), MALFORMED_EVENT)
    return resp


# --------------------------------------------------------------------------------------------------
# Handlers


async def _read(request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        return None, error_response(401, "no api key supplied")
    try:
        body = json.loads(await request.read())
    except ValueError:
        return None, error_response(400, "invalid request: request body is not valid JSON")
    if not isinstance(body, dict):
        return None, error_response(400, "invalid request: request body must be a JSON object")
    return body, None


async def _scenario(request: web.Request, body: dict[str, Any]) -> tuple[Behaviour, web.Response | None]:
    b = behaviour_for(str(body.get("model", "")), request.headers)
    await before_first_byte(b, request.app[PROFILE], request.app[RNG])
    if b.status is not None:
        return b, error_response(b.status, f"emulated error {b.status}", b.retry_after)
    if b.context_length:
        return b, error_response(400, CONTEXT_MESSAGE)
    return b, None


async def chat(request: web.Request) -> web.StreamResponse:
    body, early = await _read(request)
    if early is not None:
        return early
    assert body is not None
    bad = _check_chat(body)
    if bad is not None:
        return bad
    b, early = await _scenario(request, body)
    if early is not None:
        return early
    reply = Reply(body, b)
    if body.get("stream"):
        return await _stream(request, reply, b)
    if b.malformed:
        return web.Response(body=b'{"id": "broken", "message": ', content_type="application/json")
    return web.json_response(reply.response())


async def embed(request: web.Request) -> web.Response:
    body, early = await _read(request)
    if early is not None:
        return early
    assert body is not None
    bad = _unknown(body, EMBED_FIELDS, "")
    if bad is not None:
        return bad
    if body.get("input_type") not in INPUT_TYPES:
        return error_response(400, f"invalid request: input_type must be one of {', '.join(INPUT_TYPES)}")
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return error_response(400, "invalid request: texts must be a non-empty list of strings")
    _b, early = await _scenario(request, body)
    if early is not None:
        return early
    dims = int(body.get("output_dimension") or DEFAULT_DIMENSIONS)
    tokens = sum(count_tokens(t) for t in texts)
    return web.json_response({
        "id": _id(), "response_type": "embeddings_by_type", "texts": texts,
        "embeddings": {"float": [unit_vector(t, dims) for t in texts]},
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens},
                 "tokens": {"input_tokens": tokens}},
    })


def create_app(profile: LatencyProfile | None = None) -> web.Application:
    app = web.Application()
    app[PROFILE] = profile or LatencyProfile()
    app[RNG] = random.Random(0)
    app.router.add_post("/v2/chat", chat)
    app.router.add_post("/v2/embed", embed)
    return app
