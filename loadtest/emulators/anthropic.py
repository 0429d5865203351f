"""Emulated Anthropic Messages API, written from Anthropic's API docs and checked against anthropic-python.

Routes:

    POST /v1/messages                 non-streaming message, or SSE with `"stream": true`
    POST /v1/messages/count_tokens    {"input_tokens": N}
    GET  /v1/models                   one page listing the emulated models

Like the real API every route needs a key (`x-api-key`, or `Authorization: Bearer`, which the newest
SDK sends for `api_key`) -> else 401 authentication_error, and `anthropic-version` -> else 400.
/v1/messages also requires `model`, `messages` and `max_tokens` (400 invalid_request_error).

Stream order as the API sends it: message_start (input usage, output_tokens 1), then per block
content_block_start / content_block_delta... / content_block_stop, a `ping` after the first block
start, message_delta (stop_reason, cumulative usage), message_stop.  Blocks: thinking (thinking_delta
pieces + one signature_delta) with `reasoning` or a request's `thinking`, text (text_delta pieces) cut at
`max_tokens` (stop_reason max_tokens), tool_use (input_json_delta fragments, the first one empty as the
API does) for the tools the last user turn names, a forced `tool_choice` (any / tool; none suppresses)
or the `tools` key (behaviour.tools_to_call).  A model named `no-such-model...` is a 404 not_found_error.

Extended thinking as the API checks it: thinking signatures are HMACs over the thinking text with the
emulator's key, so only blocks an emulator issued, unmodified, verify.  With `thinking`
enabled, a tool loop (the last message is tool results) whose assistant turn does not start with a
thinking / redacted_thinking block, or carries one whose signature does not verify, gets the API's
400 ("Expected `thinking` or `redacted_thinking`, but found ..." / "Invalid `signature` in
`thinking` block"): what keeps a gateway's reasoning round trip honest.

Scenario keys (behaviour.py): status/retry_after (the status's Anthropic error type, 529
overloaded_error included), context_length ("prompt is too long: ..."), chunks, text, tools,
reasoning, redacted (a signed redacted_thinking block after the thinking block), first_byte,
chunk_delay, hang, reset_after / truncate_after / error_after (counted in content_block_delta
events; error_after sends `event: error` overloaded_error), malformed (a body that is not JSON; in
a stream, an event that is not JSON in place of the last delta and what follows it),
max_tokens (stop_reason max_tokens), usage_in / usage_out.  A `stop_sequences` entry found in the
reply text cuts it there (stop_reason stop_sequence, with the sequence).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import uuid
from typing import Any

from aiohttp import web

from . import defects
from .behaviour import (Behaviour, LatencyProfile, before_first_byte, behaviour_for, count_tokens, cut_reply,
                        example_value, reply_text, split_text, tools_to_call, unknown_model, write_stream)
from .defects import request_hook, stream_hook

PROFILE = web.AppKey("anthropic_profile", LatencyProfile)
RNG = web.AppKey("anthropic_rng", random.Random)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
CONTEXT_MESSAGE = "prompt is too long: 208310 tokens > 200000 maximum"
THINKING = "Let me think about what the user asked."
MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
STREAM_ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
MALFORMED_EVENT = b"event: content_block_delta\ndata: {not json\n\n"
REDACTED_TEXT = "[redacted]"  # what a redacted_thinking block's data stands for (signed like a thinking text)
THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
# One key for every emulator process, as one upstream fleet verifies any of its signatures.
_SIGNING_KEY = b"llm-proxy emulated anthropic signing key"


def sign(text: str) -> str:
    """An opaque signature binding `text`: `EmuSig` + base64 of a nonce and an HMAC over nonce + text."""
    nonce = os.urandom(12)
    mac = hmac.new(_SIGNING_KEY, nonce + text.encode(), hashlib.sha256).digest()[:24]
    return "EmuSig" + base64.b64encode(nonce + mac).decode()


def signed(signature: object, text: object) -> bool:
    """Whether `signature` is one an emulator issued for exactly `text`."""
    if not isinstance(signature, str) or not signature.startswith("EmuSig") or not isinstance(text, str):
        return False
    try:
        raw = base64.b64decode(signature[6:], validate=True)
    except ValueError:
        return False
    nonce, mac = raw[:12], raw[12:]
    return len(raw) == 36 and hmac.compare_digest(mac, hmac.new(_SIGNING_KEY, nonce + text.encode(),
                                                                 hashlib.sha256).digest()[:24])


def error_response(status: int, message: str, retry_after: float | None = None) -> web.Response:
    etype = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": etype, "message": message}, "request_id": _id("req_")}
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else None
    return web.json_response(body, status=status, headers=headers)


def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _check_headers(request: web.Request) -> web.Response | None:
    bearer = request.headers.get("Authorization", "").startswith("Bearer ")
    if not request.headers.get("x-api-key") and not bearer:
        return error_response(401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return error_response(400, "anthropic-version: header is required")
    return None


def _texts(content: Any) -> list[str]:
    """Text of a message's content: string or blocks (tool_result contents included)."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            out.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            out.extend(_texts(block.get("content", "")))
    return out


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return " ".join(t for t in _texts(message.get("content")) if t)
    return ""


def prompt_tokens(body: dict[str, Any]) -> int:
    text = json.dumps(body.get("system", "")) + json.dumps(body.get("messages", [])) + json.dumps(body.get("tools", []))
    return count_tokens(text)


def _tool_mode(body: dict[str, Any]) -> str:
    choice = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else {}
    kind = choice.get("type")
    return {"any": "required", "none": "none"}.get(kind) or (str(choice.get("name")) if kind == "tool" else "auto")


def _last_user_turn(body: dict[str, Any]) -> str | None:
    """The last message's text when it is a user turn that is not tool results (what a model reacts to).
    System messages after it (the beta `role: "system"` turn Claude Code appends) are context, not a turn."""
    msgs = [m for m in body.get("messages") or [] if not (isinstance(m, dict) and m.get("role") == "system")]
    last = msgs[-1] if msgs and isinstance(msgs[-1], dict) else {}
    blocks = last.get("content") if isinstance(last.get("content"), list) else []
    if last.get("role") != "user" or any(isinstance(x, dict) and x.get("type") == "tool_result" for x in blocks):
        return None
    return " ".join(_texts(last.get("content")))


def _tool_calls(body: dict[str, Any], b: Behaviour) -> list[tuple[str, dict[str, Any]]]:
    """(name, input) of the calls the model makes (behaviour.tools_to_call); inputs follow the schemas."""
    tools = {str(t.get("name")): t for t in body.get("tools") or [] if isinstance(t, dict)}
    calls = []
    for name in tools_to_call(list(tools), _tool_mode(body), _last_user_turn(body), b.tools):
        value = example_value(tools[name].get("input_schema") or {}) if name in tools else {"city": "Paris"}
        calls.append((name, value if isinstance(value, dict) else {}))
    return calls


class Reply:
    """The message one request gets under its scenario: blocks, stop reason and usage."""

    def __init__(self, body: dict[str, Any], b: Behaviour) -> None:
        self.id = _id("msg_")
        self.model = str(body.get("model", ""))
        self.blocks: list[dict[str, Any]] = []
        thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
        if b.reasoning or thinking.get("type") in ("enabled", "adaptive"):
            self.blocks.append({"type": "thinking", "thinking": THINKING, "signature": sign(THINKING)})
            if b.redacted:
                self.blocks.append({"type": "redacted_thinking", "data": sign(REDACTED_TEXT)})
        text, cut, stop = cut_reply(reply_text(b, last_user_text(body)), body.get("stop_sequences"), body.get("max_tokens"))
        calls = _tool_calls(body, b)
        self.blocks += [{"type": "tool_use", "id": _id("toolu_"), "name": n, "input": a} for n, a in calls]
        if not calls:
            self.blocks.append({"type": "text", "text": text})
        self.stop_sequence = stop if not calls else None
        if b.max_tokens or (cut == "length" and not calls):
            self.stop_reason = "max_tokens"
        else:
            self.stop_reason = "tool_use" if calls else "stop_sequence" if self.stop_sequence else "end_turn"
        self.input_tokens = b.usage_in if b.usage_in is not None else prompt_tokens(body)
        out_text = "".join(json.dumps(x) for x in self.blocks)
        self.output_tokens = b.usage_out if b.usage_out is not None else count_tokens(out_text)

    def usage(self, output_tokens: int) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens, "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "service_tier": "standard"}

    def message(self, content: list[dict[str, Any]], stop_reason: str | None, output_tokens: int) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": self.stop_sequence if stop_reason else None, "usage": self.usage(output_tokens)}


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _block_events(index: int, block: dict[str, Any], chunks: int) -> list[tuple[str, dict[str, Any]]]:
    """content_block_start, deltas and stop for one block, deltas split into `chunks` pieces."""
    kind = block["type"]
    if kind == "text":
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in split_text(block["text"], chunks)]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in split_text(block["thinking"], chunks)]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "redacted_thinking":  # arrives whole in its start event
        start, deltas = block, []
    else:
        start = {**block, "input": {}}
        pieces = [""] + split_text(json.dumps(block["input"]), chunks)
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    events = [("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


async def _stream(request: web.Request, reply: Reply, b: Behaviour) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "request-id": _id("req_")})
    await resp.prepare(request)
    gap = b.chunk_delay or request.app[PROFILE].chunk_gap()
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": reply.message([], None, 1)})
    ]
    for i, block in enumerate(reply.blocks):
        events += _block_events(i, block, b.chunks)
        if i == 0:
            events.insert(2, ("ping", {"type": "ping"}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence},
                                     "usage": {"output_tokens": reply.output_tokens}}))
    events.append(("message_stop", {"type": "message_stop"}))
    events = stream_hook(b, "anthropic", events)
    # The scenarios count content_block_delta events: each frame is one delta and the events after it.
    frames = [b""]
    for name, data in events:
        if name == "content_block_delta":
            frames.append(b"")
        frames[-1] += _sse(name, data)
    await resp.write(frames[0])  # message_start .. the first block's start and ping
    await write_stream(request, resp, b, frames[1:], gap, _sse("error", STREAM_ERROR), MALFORMED_EVENT)
    return resp


async def read_body(request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
    """(body, early response): the request body as a JSON object, or the API's 400."""
    try:
        body = json.loads(await request.read())
    except ValueError:
        return None, error_response(400, "There was an error parsing the body of your request")
    if not isinstance(body, dict):
        return None, error_response(400, "request body must be a JSON object")
    return body, None


async def _read(request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
    bad = _check_headers(request)
    return (None, bad) if bad is not None else await read_body(request)


async def _scenario(request: web.Request, body: dict[str, Any]) -> tuple[Behaviour, web.Response | None]:
    """(behaviour, early response): the scenario's delays and error replies, then required fields."""
    b = behaviour_for(body.get("model"), request.headers)
    await before_first_byte(b, request.app[PROFILE], request.app[RNG])
    if unknown_model(body.get("model")):
        return b, error_response(404, f"model: {body['model']}")
    if b.status is not None:
        return b, error_response(b.status, f"emulated error {b.status}", b.retry_after)
    if b.context_length:
        return b, error_response(400, CONTEXT_MESSAGE)
    for field in ("model", "messages"):
        if field not in body:
            return b, error_response(400, f"{field}: Field required")
    return b, None


def _blocks(message: Any) -> list[dict[str, Any]]:
    content = message.get("content") if isinstance(message, dict) else None
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def unsigned_tool_loop(body: dict[str, Any]) -> str | None:
    """With thinking enabled, the API's 400 for a tool loop whose assistant turn lost its thinking: the
    assistant message before the final tool results must start with a thinking (or redacted_thinking)
    block, and every such block must carry the signature issued for it."""
    thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
    msgs = [m for m in body.get("messages") or [] if not (isinstance(m, dict) and m.get("role") == "system")]
    if thinking.get("type") not in ("enabled", "adaptive") or len(msgs) < 2:
        return None
    if not any(b.get("type") == "tool_result" for b in _blocks(msgs[-1])):
        return None
    i = len(msgs) - 2
    blocks = _blocks(msgs[i])
    if not isinstance(msgs[i], dict) or msgs[i].get("role") != "assistant" or not blocks:
        return None
    first = blocks[0].get("type")
    if first not in ("thinking", "redacted_thinking"):
        return (f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. "
                "When `thinking` is enabled, a final `assistant` message must start with a thinking block "
                "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include "
                "thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please "
                f"consult our documentation at {THINKING_DOCS}")
    for j, block in enumerate(blocks):
        if block.get("type") == "thinking" and not signed(block.get("signature"), block.get("thinking")):
            return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
        if block.get("type") == "redacted_thinking" and not signed(block.get("data"), REDACTED_TEXT):
            return f"messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block"
    return None


def unmatched_tool_results(messages: list) -> str | None:
    """The first tool_result id with no tool_use of that id in the message before it (the real API
    refuses such a conversation, which is what keeps translated tool ids honest)."""
    previous: set[str] = set()
    for msg in messages:
        blocks = msg.get("content") if isinstance(msg, dict) and isinstance(msg.get("content"), list) else []
        for block in blocks:
            if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("tool_use_id") not in previous:
                return str(block.get("tool_use_id"))
        previous = {bl.get("id") for bl in blocks if isinstance(bl, dict) and bl.get("type") == "tool_use"}
    return None


async def messages(request: web.Request) -> web.StreamResponse:
    body, early = await _read(request)
    if early is not None:
        return early
    assert body is not None
    return await answer(request, body)


async def answer(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """A Messages answer once the caller is authenticated (shared with the Vertex AI emulator,
    which puts the model from its URL into `body`)."""
    b, early = await _scenario(request, body)
    if early is not None:
        return early
    body = request_hook(b, "anthropic", body)
    if not isinstance(body.get("max_tokens"), int):
        return error_response(400, "max_tokens: Field required")
    unmatched = unmatched_tool_results(body["messages"])
    if unmatched:
        return error_response(400, f"messages: unexpected `tool_use_id` found in `tool_result` blocks: {unmatched}. "
                                   "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.")
    unsigned = unsigned_tool_loop(body)
    if unsigned:
        return error_response(400, unsigned)
    reply = Reply(body, b)
    if body.get("stream"):
        return await _stream(request, reply, b)
    if b.malformed:
        return web.Response(body=b'{"id": "msg_broken", "content": [', content_type="application/json")
    message = reply.message(reply.blocks, reply.stop_reason, reply.output_tokens)
    return web.json_response(message, headers={"request-id": _id("req_")})


async def count_tokens_route(request: web.Request) -> web.Response:
    body, early = await _read(request)
    if early is not None:
        return early
    assert body is not None
    return await count_answer(request, body)


async def count_answer(request: web.Request, body: dict[str, Any]) -> web.Response:
    """The count_tokens answer once the caller is authenticated (shared with the Vertex AI emulator)."""
    _b, early = await _scenario(request, body)
    return early if early is not None else web.json_response({"input_tokens": prompt_tokens(body)})


async def models(request: web.Request) -> web.Response:
    bad = _check_headers(request)
    if bad is not None:
        return bad
    data = [{"type": "model", "id": m, "display_name": m.replace("-", " ").title(),
             "created_at": "2025-01-01T00:00:00Z"} for m in MODELS]
    return web.json_response({"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]})


def create_app(profile: LatencyProfile | None = None) -> web.Application:
    app = web.Application(middlewares=[defects.middleware("anthropic")])
    app[PROFILE] = profile or LatencyProfile()
    app[RNG] = random.Random(0)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens_route)
    app.router.add_get("/v1/models", models)
    return app
