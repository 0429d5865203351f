"""Emulated Google Gemini API (Generative Language API), written from the API reference at ai.google.dev
and checked against the official google-genai client.

Routes (`v1beta`, and the same under `v1`):

    POST /v1beta/models/{model}:generateContent        one GenerateContentResponse
    POST /v1beta/models/{model}:streamGenerateContent  with ?alt=sse: data-only SSE, no terminator (the
                                                       body ends after the chunk with finishReason);
                                                       without it: one JSON array written piece by piece
    POST /v1beta/models/{model}:countTokens            {"totalTokens": N}
    POST /v1beta/models/{model}:embedContent           {"embedding": {"values": [...]}}
    POST /v1beta/models/{model}:batchEmbedContents     {"embeddings": [{"values": [...]}, ...]}
    GET  /v1beta/models                                {"models": [...]}

Auth as the real API: the key comes in `x-goog-api-key` or `?key=`.  No key -> 403 PERMISSION_DENIED
("unregistered callers"); the key `invalid` -> 400 INVALID_ARGUMENT with ErrorInfo reason
API_KEY_INVALID (Gemini does not answer 401 for a bad key).  Errors are
`{"error": {"code", "message", "status", "details"?}}`.  The request is checked as the API does:
`contents` required, roles `user` / `model`, and a turn of function responses must follow a model
turn with as many function calls (so translated tool results must be merged into one content).

Replies: `echo: <last user text>` (function-response outputs count as user text), cut before a
`generationConfig.stopSequences` entry or at `maxOutputTokens` (finishReason MAX_TOKENS); JSON for
`responseMimeType: application/json` (a value of `responseJsonSchema` / `responseSchema` when given).  Function
calls (whole, in one chunk; no id, as the Developer API) for the declarations the last user turn names,
toolConfig mode ANY (one allowed name: that one; NONE suppresses) or the `tools` key
(behaviour.tools_to_call); with
`reasoning` (or `thinkingConfig.includeThoughts`) a thought part first; with `reasoning` or on a
`gemini-3...` model (which always thinks) a `thoughtSignature` on the first function call (or on the
last text part).  Signatures are HMACs with the emulator's key, bound to the function name, and
Gemini 3 models check them as upstream does: in the current turn (after the last user text), a model
step whose first function call lacks its signature is a 400 INVALID_ARGUMENT "Function call is
missing a thought_signature in functionCall parts. ...", and one that does not verify a 400
"Corrupted thought signature.".  `usageMetadata` is on every stream chunk, cumulative; `candidatesTokenCount` excludes
`thoughtsTokenCount`.

Scenario (model suffix after `::`, also URL-encoded as `%3A%3A`, or the x-emulate header): status /
retry_after (the status's Gemini `status`, 429 with a RetryInfo detail), context_length (Gemini's
"input token count ... exceeds the maximum number of tokens allowed"), chunks, text, tools,
reasoning, first_byte, chunk_delay, hang, reset_after / truncate_after / error_after (counted in
content chunks; error_after sends `data: {"error": ...}` 500 INTERNAL), malformed, max_tokens
(finishReason MAX_TOKENS), usage_in / usage_out.  A stop sequence cut reports finishReason STOP, as
Gemini does.
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
from urllib.parse import unquote

from aiohttp import web

from .behaviour import (Behaviour, LatencyProfile, before_first_byte, behaviour_for, count_tokens, cut_reply,
                        example_value, json_reply, reply_text, split_text, tools_to_call, unit_vector, write_stream)

PROFILE = web.AppKey("gemini_profile", LatencyProfile)
RNG = web.AppKey("gemini_rng", random.Random)

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
CONTEXT_MESSAGE = "The input token count (1205731) exceeds the maximum number of tokens allowed (1048576)."
THINKING = "**Considering the request**\n\nThe user wants an answer; I will give it."
MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash", "gemini-embedding-001")
DEFAULT_DIMENSIONS = 16
MALFORMED_CHUNK = b'data: {"candidates": [{"content": {"parts": [{"text": "broken\n\n'
THOUGHT_DOCS = "https://ai.google.dev/gemini-api/docs/thought-signatures"
# One key for every emulator process, as one upstream fleet verifies any of its signatures.
_SIGNING_KEY = b"llm-proxy emulated gemini signing key"
NO_KEY = ("Method doesn't allow unregistered callers (callers without established identity). "
          "Please use API Key or other form of API consumer identity to call this API.")


def error_response(status: int, message: str, retry_after: float | None = None,
                   details: list[dict[str, Any]] | None = None) -> web.Response:
    err: dict[str, Any] = {"code": status, "message": message,
                           "status": STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")}
    if details:
        err["details"] = details
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else None
    return web.json_response({"error": err}, status=status, headers=headers)


def _check_key(request: web.Request) -> web.Response | None:
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    if not key:
        return error_response(403, NO_KEY)
    if key == "invalid":
        return error_response(400, "API key not valid. Please pass a valid API key.", details=[{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
            "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}])
    return None


def _split_target(request: web.Request) -> tuple[str, str]:
    """(model, action) from `/models/{model}:{action}`; the model keeps any `::scenario` suffix."""
    target = unquote(request.match_info["target"])
    model, _, action = target.rpartition(":")
    return model, action


# --------------------------------------------------------------------------------------------------
# Request reading


def _texts(content: Any) -> list[str]:
    out: list[str] = []
    for part in content.get("parts") or [] if isinstance(content, dict) else []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str) and not part.get("thought"):
            out.append(part["text"])
        elif isinstance(part.get("functionResponse"), dict):
            resp = part["functionResponse"].get("response") or {}
            value = resp.get("output", resp.get("error", resp)) if isinstance(resp, dict) else resp
            out.append(value if isinstance(value, str) else json.dumps(value))
    return out


def last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents") or []):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            return " ".join(t for t in _texts(content) if t)
    return ""


def prompt_tokens(body: dict[str, Any]) -> int:
    keys = ("systemInstruction", "contents", "tools")
    return count_tokens("".join(json.dumps(body.get(k, "")) for k in keys))


def _calls(content: dict[str, Any]) -> int:
    return sum(1 for p in content.get("parts") or [] if isinstance(p, dict) and "functionCall" in p)


def _invalid_contents(contents: Any) -> str | None:
    """What the real API refuses in `contents`, or None."""
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, c in enumerate(contents):
        if not isinstance(c, dict) or c.get("role", "user") not in ("user", "model", "function"):
            return f"* GenerateContentRequest.contents[{i}].role: Please use a valid role: user, model."
        responses = sum(1 for p in c.get("parts") or [] if isinstance(p, dict) and "functionResponse" in p)
        if responses:
            before = contents[i - 1] if i else {}
            if not isinstance(before, dict) or before.get("role") != "model" or _calls(before) != responses:
                return ("Please ensure that the number of function response parts is equal to the number of "
                        "function call parts of the function call turn.")
    return None


def sign(bound: str) -> str:
    """A thought signature (opaque base64, as the SDK expects) bound to the function name it sits on
    ("" on a text part): `emu-sig:` + nonce + HMAC, so only an emulator's signatures verify, and only
    on the part they were issued for."""
    nonce = os.urandom(12)
    mac = hmac.new(_SIGNING_KEY, nonce + bound.encode(), hashlib.sha256).digest()[:12]
    return base64.b64encode(b"emu-sig:" + nonce + mac).decode()


def signed(signature: object, bound: str) -> bool:
    try:  # either base64 alphabet: google-genai sends bytes url-safe encoded
        raw = base64.b64decode(str(signature).replace("-", "+").replace("_", "/"), validate=True)
    except ValueError:
        return False
    nonce, mac = raw[8:20], raw[20:]
    return (len(raw) == 32 and raw.startswith(b"emu-sig:")
            and hmac.compare_digest(mac, hmac.new(_SIGNING_KEY, nonce + bound.encode(), hashlib.sha256).digest()[:12]))


def unsigned_call(model: str, contents: list[Any]) -> str | None:
    """Gemini 3's 400 for a history whose current turn (the contents after the last user text) has a
    model step whose first function call lacks the thoughtSignature issued for it.  Earlier turns and
    Gemini 2.x models are not checked, as upstream."""
    if not model.startswith("gemini-3"):
        return None
    start = 0
    for i, c in enumerate(contents):
        parts = [p for p in c.get("parts") or [] if isinstance(p, dict)]
        if c.get("role", "user") == "user" and any("functionResponse" not in p for p in parts):
            start = i + 1
    for i in range(start, len(contents)):
        c = contents[i]
        calls = [p for p in c.get("parts") or [] if isinstance(p, dict) and isinstance(p.get("functionCall"), dict)]
        if c.get("role") != "model" or not calls:
            continue
        name = str(calls[0]["functionCall"].get("name"))
        if not calls[0].get("thoughtSignature"):
            return ("Function call is missing a thought_signature in functionCall parts. This is required for tools "
                    "to work correctly, and missing thought_signature may lead to degraded model performance. "
                    f"Additional data, function call `default_api:{name}` , position {i + 1}. Please refer to "
                    f"{THOUGHT_DOCS} for more details.")
        if not signed(calls[0]["thoughtSignature"], name):
            return "Corrupted thought signature."
    return None


def _declarations(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(d.get("name")): d for t in body.get("tools") or [] if isinstance(t, dict)
            for d in t.get("functionDeclarations") or [] if isinstance(d, dict)}


def _tool_mode(body: dict[str, Any]) -> str:
    """functionCallingConfig as behaviour.tools_to_call's mode: NONE, ANY (one allowed name: that tool)."""
    fcc = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode, allowed = str(fcc.get("mode", "AUTO")).upper(), fcc.get("allowedFunctionNames") or []
    if mode == "NONE":
        return "none"
    if mode == "ANY":
        return str(allowed[0]) if len(allowed) == 1 else "required"
    return "auto"


def _last_user_turn(body: dict[str, Any]) -> str | None:
    """The last content's text when it is a user turn of text (not function responses)."""
    contents = body.get("contents") or []
    last = contents[-1] if contents and isinstance(contents[-1], dict) else {}
    parts = [p for p in last.get("parts") or [] if isinstance(p, dict)]
    if last.get("role", "user") != "user" or any("functionResponse" in p for p in parts):
        return None
    return " ".join(str(p.get("text", "")) for p in parts)


def _function_calls(body: dict[str, Any], b: Behaviour) -> list[dict[str, Any]]:
    """The calls the model makes (behaviour.tools_to_call), args built from each declaration's schema."""
    decls = _declarations(body)
    calls = []
    for name in tools_to_call(list(decls), _tool_mode(body), _last_user_turn(body), b.tools):
        d = decls.get(name)
        if d is None:
            calls.append({"name": name, "args": {"city": "Paris"}})
            continue
        # Protobuf JSON accepts field names in both spellings; google-genai sends `parameters_json_schema`.
        schema = d.get("parametersJsonSchema") or d.get("parameters_json_schema") or d.get("parameters") or {}
        args = example_value(schema)
        calls.append({"name": name, "args": args if isinstance(args, dict) else {}})
    return calls


# --------------------------------------------------------------------------------------------------
# Replies


class Reply:
    """What one generate request gets under its scenario: parts, finish reason, usage."""

    def __init__(self, body: dict[str, Any], model: str, b: Behaviour) -> None:
        self.id = uuid.uuid4().hex[:22]
        self.model = model.split("::", 1)[0]
        config = body.get("generationConfig") or {}
        thinking = config.get("thinkingConfig") or {}
        # Gemini 3 always thinks (and signs); thought summaries come with `includeThoughts`.
        self.signing = b.reasoning or self.model.startswith("gemini-3")
        self.thought = THINKING if b.reasoning or thinking.get("includeThoughts") else None
        self.calls = _function_calls(body, b)
        text = reply_text(b, last_user_text(body))
        if config.get("responseMimeType") == "application/json":
            text = json_reply(text, config.get("responseJsonSchema") or config.get("responseSchema"))
        text, cut, _ = cut_reply(text, config.get("stopSequences"),
                                 config.get("maxOutputTokens"))
        self.text = "" if self.calls else text
        self.finish = "MAX_TOKENS" if b.max_tokens or (cut == "length" and not self.calls) else "STOP"
        self.prompt = b.usage_in if b.usage_in is not None else prompt_tokens(body)
        out = json.dumps(self.calls) if self.calls else self.text
        self.candidates = b.usage_out if b.usage_out is not None else count_tokens(out)
        self.thoughts = count_tokens(THINKING) if self.thought else 0

    def usage(self, final: bool) -> dict[str, Any]:
        u: dict[str, Any] = {"promptTokenCount": self.prompt}
        total = self.prompt
        if final:
            u["candidatesTokenCount"] = self.candidates
            total += self.candidates
            if self.thoughts:
                u["thoughtsTokenCount"] = self.thoughts
                total += self.thoughts
        u["totalTokenCount"] = total
        u["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.prompt}]
        return u

    def chunk(self, parts: list[dict[str, Any]], final: bool) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if final:
            cand["finishReason"] = self.finish
        return {"candidates": [cand], "usageMetadata": self.usage(final), "modelVersion": self.model,
                "responseId": self.id}

    def answer_parts(self, chunks: int) -> list[list[dict[str, Any]]]:
        """The answer's parts per content chunk: text pieces, or the whole function calls."""
        if self.calls:
            parts: list[dict[str, Any]] = [{"functionCall": call} for call in self.calls]
            if self.signing:
                parts[0]["thoughtSignature"] = sign(str(self.calls[0]["name"]))
            return [parts]
        pieces: list[list[dict[str, Any]]] = [[{"text": p}] for p in split_text(self.text, chunks)]
        if self.signing:
            pieces[-1][-1]["thoughtSignature"] = sign("")
        return pieces

    def thought_parts(self) -> list[dict[str, Any]]:
        return [{"text": self.thought, "thought": True}] if self.thought else []


# --------------------------------------------------------------------------------------------------
# Handlers


async def _generate(request: web.Request, model: str, body: dict[str, Any], b: Behaviour,
                    stream: bool) -> web.StreamResponse:
    bad = _invalid_contents(body.get("contents")) or unsigned_call(model.split("::", 1)[0], body["contents"])
    if bad:
        return error_response(400, bad)
    reply = Reply(body, model, b)
    if stream:
        return await _stream(request, reply, b)
    if b.malformed:
        return web.Response(body=b'{"candidates": [{"content": ', content_type="application/json")
    parts = reply.thought_parts() + [p for ps in reply.answer_parts(1) for p in ps]
    return web.json_response(reply.chunk(parts, final=True))


async def _stream(request: web.Request, reply: Reply, b: Behaviour) -> web.StreamResponse:
    sse = request.query.get("alt") == "sse"
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream" if sse else "application/json"})
    await resp.prepare(request)
    gap = b.chunk_delay or request.app[PROFILE].chunk_gap()
    pieces = reply.answer_parts(b.chunks)
    chunks = [reply.chunk(p, final=i == len(pieces) - 1) for i, p in enumerate(pieces)]
    error = {"error": {"code": 500, "message": "An internal error has occurred. Please retry or report in "
                       "https://developers.generativeai.google/guide/troubleshooting", "status": "INTERNAL"}}
    if sse:
        frames = [b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks]
        error_frame, malformed = b"data: " + json.dumps(error).encode() + b"\r\n\r\n", MALFORMED_CHUNK
        if reply.thought:  # thoughts stream first, before the counted content chunks
            await resp.write(b"data: " + json.dumps(reply.chunk(reply.thought_parts(), False)).encode() + b"\r\n\r\n")
    else:  # the JSON-array framing: "[{...}" ",\r\n{...}" ... "]"
        first = [reply.chunk(reply.thought_parts(), False)] if reply.thought else []
        docs = [json.dumps(c).encode() for c in first + chunks]
        frames = [(b"[" if i == 0 else b",\r\n") + d for i, d in enumerate(docs)]
        frames[-1] += b"]"
        if first:
            await resp.write(frames.pop(0))
        error_frame, malformed = b",\r\n" + json.dumps(error).encode() + b"]", b",\r\n{broken"
    await write_stream(request, resp, b, frames, gap, error_frame, malformed)
    return resp


def _embed_one(req: Any, path: str) -> list[float] | str:
    if not isinstance(req, dict) or not isinstance(req.get("content"), dict):
        return f"* {path}content: content is not specified"
    text = " ".join(_texts(req["content"]))
    return unit_vector(text, int(req.get("outputDimensionality") or DEFAULT_DIMENSIONS))


async def _embed(model: str, body: dict[str, Any], batch: bool) -> web.Response:
    if not batch:
        vec = _embed_one(body, "EmbedContentRequest.")
        return error_response(400, vec) if isinstance(vec, str) else web.json_response({"embedding": {"values": vec}})
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        return error_response(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
    out = []
    for i, r in enumerate(requests):
        named = r.get("model") if isinstance(r, dict) else None
        if named is not None and unquote(str(named)) != f"models/{model}":
            return error_response(400, f"Model in request {i} ({named}) does not match the model in the URL (models/{model}).")
        vec = _embed_one(r, f"BatchEmbedContentsRequest.requests[{i}].")
        if isinstance(vec, str):
            return error_response(400, vec)
        out.append({"values": vec})
    return web.json_response({"embeddings": out})


async def read_body(request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
    """(body, early response): the request body as a JSON object, or Google's 400."""
    try:
        body = json.loads(await request.read())
    except ValueError:
        return None, error_response(400, "Invalid JSON payload received. Unexpected token.")
    if not isinstance(body, dict):
        return None, error_response(400, "Invalid JSON payload received. Expected an object.")
    return body, None


async def model_action(request: web.Request) -> web.StreamResponse:
    bad = _check_key(request)
    if bad is not None:
        return bad
    model, action = _split_target(request)
    body, bad = await read_body(request)
    if bad is not None:
        return bad
    assert body is not None
    return await answer(request, model, action, body)


async def answer(request: web.Request, model: str, action: str, body: dict[str, Any]) -> web.StreamResponse:
    """The answer to `model:action` once the caller is authenticated (shared with the Vertex AI
    emulator, publisher google)."""
    b = behaviour_for(model, request.headers)
    await before_first_byte(b, request.app[PROFILE], request.app[RNG])
    if b.status is not None:
        details = ([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{b.retry_after:g}s"}]
                   if b.status == 429 and b.retry_after is not None else None)
        return error_response(b.status, f"emulated error {b.status}", b.retry_after, details)
    if b.context_length:
        return error_response(400, CONTEXT_MESSAGE)
    if action in ("generateContent", "streamGenerateContent"):
        return await _generate(request, model, body, b, action == "streamGenerateContent")
    if action == "countTokens":
        inner = body.get("generateContentRequest") if isinstance(body.get("generateContentRequest"), dict) else body
        return web.json_response({"totalTokens": prompt_tokens(inner)})
    if action in ("embedContent", "batchEmbedContents"):
        return await _embed(model, body, action == "batchEmbedContents")
    return error_response(404, f"Method not found: {action}")


async def list_models(request: web.Request) -> web.Response:
    bad = _check_key(request)
    if bad is not None:
        return bad
    models = []
    for m in MODELS:
        embed = "embedding" in m
        models.append({
            "name": f"models/{m}", "version": "001", "displayName": m.replace("-", " ").title(),
            "inputTokenLimit": 2048 if embed else 1048576, "outputTokenLimit": 1 if embed else 65536,
            "supportedGenerationMethods": ["embedContent", "batchEmbedContents"] if embed
            else ["generateContent", "countTokens"],
        })
    return web.json_response({"models": models})


def create_app(profile: LatencyProfile | None = None) -> web.Application:
    app = web.Application()
    app[PROFILE] = profile or LatencyProfile()
    app[RNG] = random.Random(0)
    for version in ("v1beta", "v1"):
        app.router.add_post(f"/{version}/models/{{target}}", model_action)
        app.router.add_get(f"/{version}/models", list_models)
    return app
