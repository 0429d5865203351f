"""Emulated AWS Bedrock Runtime, written from the Bedrock API reference and botocore's service model
and checked against the official boto3 `bedrock-runtime` client.

Routes (the model id percent-encoded in the path, as clients send it):

    POST /model/{modelId}/converse          a Converse answer
    POST /model/{modelId}/converse-stream   the same as an AWS binary event stream
    POST /model/{modelId}/invoke            embeddings: Titan (`inputText`) and Cohere (`texts`)

What AWS checks, this checks: every request carries a SigV4 signature (service `bedrock`) that is
recomputed here with the known secret over the path bytes as received (sigv4.py), or a Bedrock API
key as a bearer token; a mismatch is AWS's 403 InvalidSignatureException, an unknown key
UnrecognizedClientException.  Converse bodies are validated as Bedrock does (bedrock_checks.py):
known top-level fields, a first user turn, alternating roles, one member per content block, no
blank text, `toolConfig` required with toolUse/toolResult blocks, toolResult ids answering the
previous turn's toolUse ids, valid toolUseIds.  Errors are `{"message"}` with the exception in `x-amzn-ErrorType`.

Replies: `echo: <last user text>` (toolResult text counts as user text), cut before a stop
sequence (stopReason stop_sequence, and `additionalModelResponseFields.stop_sequence` when
`/stop_sequence` is asked for) or at `maxTokens` (stopReason max_tokens); toolUse blocks for the
tools the last user turn names, or under toolChoice any/tool or the `tools` key
(behaviour.tools_to_call); with `reasoning` or Claude's `thinking` in additionalModelRequestFields,
a reasoningContent block first (signed for Anthropic models); with `outputConfig` (structured
output), JSON that follows its schema.  Stream events carry a random `p` padding field, as Bedrock's do.

Scenario keys (behaviour.py; the model suffix after `::` arrives as `%3A%3A`): status / retry_after
(the status's AWS exception), `exception=<Name>` (that exception with its AWS status, e.g.
ModelNotReadyException), context_length ("Input is too long for requested model."), chunks, text,
tools, reasoning, first_byte, chunk_delay, hang, reset_after / truncate_after / error_after
(counted in content deltas; error_after sends an internalServerException event), malformed (a
message with a bad CRC), max_tokens (stopReason max_tokens), usage_in / usage_out.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import uuid
from typing import Any

from aiohttp import web

from . import eventstream
from .behaviour import (Behaviour, LatencyProfile, before_first_byte, behaviour_for, count_tokens, cut_reply,
                        example_value, reply_text, split_text, tools_to_call, unit_vector, write_stream)
from .bedrock_checks import STATUS_EXCEPTIONS, check_converse, error_response, invalid, output_schema
from .sigv4 import SigV4Error, verify

PROFILE = web.AppKey("bedrock_profile", LatencyProfile)
RNG = web.AppKey("bedrock_rng", random.Random)
SECRETS = web.AppKey("bedrock_secrets", dict)
TOKENS = web.AppKey("bedrock_tokens", dict)

# The credentials the emulator knows (tests, the demo): a long-term key, a temporary key that must
# come with its session token, and a Bedrock API key.
ACCESS_KEY_ID = "AKIAEMULATOR0000000A"
SECRET_ACCESS_KEY = "emulator/Secret+Access/Key0000000000000"
TEMP_ACCESS_KEY_ID = "ASIAEMULATOR0000000T"
TEMP_SECRET_ACCESS_KEY = "emulator/Temporary/Secret/Key00000000000"
SESSION_TOKEN = "emulator-session-token"
API_KEY = "ABSKemulatorbedrockapikey"

MESSAGES = {
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "ModelNotReadyException": "Model is not ready to serve inference requests. The model is currently being loaded.",
    "ServiceUnavailableException": "Bedrock is unable to process your request.",
    "InternalServerException": "The system encountered an unexpected error during processing. Try your request again.",
}
CONTEXT_MESSAGE = "Input is too long for requested model."
THINKING = "The user wants a short answer; I will give it."
TITAN_DIMENSIONS = {"amazon.titan-embed-text-v1": (1536,), "amazon.titan-embed-text-v2:0": (1024, 512, 256)}
COHERE_DIMENSIONS = 1024
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
_EXCEPTION_KEY = re.compile(r"(?:^|[,:])exception=([A-Za-z]+)")


# --------------------------------------------------------------------------------------------------
# Auth


def _authenticate(request: web.Request, body: bytes) -> web.Response | None:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        if auth[7:] == API_KEY:
            return None
        return error_response("UnrecognizedClientException", "Invalid API Key format: Must start with pre-defined prefix", 403)
    try:
        verify(request.method, request.raw_path, request.headers, body, request.app[SECRETS], "bedrock",
               tokens=request.app[TOKENS])
    except SigV4Error as err:
        return error_response(err.error_type, err.message, err.status)
    return None


# --------------------------------------------------------------------------------------------------
# Replies


def _texts(blocks: list[Any]) -> list[str]:
    out = []
    for b in blocks:
        if "text" in b:
            out.append(b["text"])
        elif "toolResult" in b:
            out += [c["text"] if "text" in c else json.dumps(c.get("json")) for c in b["toolResult"]["content"]
                    if isinstance(c, dict) and ("text" in c or "json" in c)]
    return out


def _tool_mode(tool_config: dict[str, Any]) -> str:
    choice = tool_config.get("toolChoice") or {}
    if "tool" in choice:
        return str(choice["tool"].get("name"))
    return "required" if "any" in choice else "auto"


def _last_user_turn(messages: list[dict[str, Any]]) -> str | None:
    """The last turn's text when it is a user turn without tool results (what a model reacts to)."""
    last = messages[-1]
    if last["role"] != "user" or any("toolResult" in block for block in last["content"]):
        return None
    return " ".join(block["text"] for block in last["content"] if "text" in block)


class Reply:
    """What one Converse request gets under its scenario (tool calls steered by behaviour.tools_to_call,
    the text cut by stopSequences or maxTokens with behaviour.cut_reply)."""

    def __init__(self, model: str, body: dict[str, Any], b: Behaviour) -> None:
        self.model = model
        tool_config = body.get("toolConfig") or {}
        specs = {t["toolSpec"]["name"]: t["toolSpec"] for t in tool_config.get("tools") or []}
        self.calls: list[dict[str, Any]] = []
        for name in tools_to_call(list(specs), _tool_mode(tool_config), _last_user_turn(body["messages"]), b.tools):
            args = example_value(((specs.get(name) or {}).get("inputSchema") or {}).get("json") or {"properties": {"city": {}}})
            self.calls.append({"toolUseId": "tooluse_" + uuid.uuid4().hex[:22], "name": name,
                               "input": args if isinstance(args, dict) else {}})
        thinking = (body.get("additionalModelRequestFields") or {}).get("thinking") or {}
        self.thinking = THINKING if b.reasoning or thinking.get("type") == "enabled" else None
        self.signature = base64.b64encode(uuid.uuid4().bytes * 3).decode() if self.thinking and "anthropic." in model else None
        inference = body.get("inferenceConfig") or {}
        echo = reply_text(b, " ".join(t for t in _texts(body["messages"][-1]["content"]) if t))
        if body.get("outputConfig") is not None:  # structured output: JSON that follows the schema
            echo = json.dumps(example_value(output_schema(body["outputConfig"])))
        text, cut, stop = cut_reply(echo, inference.get("stopSequences"), inference.get("maxTokens"))
        self.text = "" if self.calls else text
        self.stop_sequence = None if self.calls else stop
        if b.max_tokens or (cut == "length" and not self.calls):
            self.stop_reason = "max_tokens"
        else:
            self.stop_reason = "tool_use" if self.calls else "stop_sequence" if self.stop_sequence else "end_turn"
        self.want_stop_sequence = "/stop_sequence" in (body.get("additionalModelResponseFieldPaths") or [])
        prompt = json.dumps(body.get("system") or []) + json.dumps(body["messages"]) + json.dumps(list(specs.values()))
        self.input_tokens = b.usage_in if b.usage_in is not None else count_tokens(prompt)
        out = (self.thinking or "") + (json.dumps(self.calls) if self.calls else self.text)
        self.output_tokens = b.usage_out if b.usage_out is not None else count_tokens(out)

    def usage(self) -> dict[str, int]:
        return {"inputTokens": self.input_tokens, "outputTokens": self.output_tokens,
                "totalTokens": self.input_tokens + self.output_tokens}

    def additional(self) -> dict[str, Any]:
        if not self.want_stop_sequence:
            return {}
        return {"additionalModelResponseFields": {"stop_sequence": self.stop_sequence}}

    def response(self) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if self.thinking:
            reasoning: dict[str, Any] = {"text": self.thinking}
            if self.signature:
                reasoning["signature"] = self.signature
            content.append({"reasoningContent": {"reasoningText": reasoning}})
        content += [{"toolUse": call} for call in self.calls] or [{"text": self.text}]
        return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": self.stop_reason,
                "usage": self.usage(), "metrics": {"latencyMs": 12}, **self.additional()}


def _padded(payload: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {**payload, "p": "".join(rng.choices(string.ascii_letters, k=rng.randint(1, 12)))}


def _frames(reply: Reply, chunks: int, rng: random.Random) -> tuple[bytes, list[bytes]]:
    """(what precedes the first counted delta, one frame per content delta with the events after it)."""

    def ev(name: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return name, _padded(payload, rng)

    events = [ev("messageStart", {"role": "assistant"})]
    index = 0
    if reply.thinking:
        events += [ev("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": p}}})
                   for p in split_text(reply.thinking, chunks)]
        if reply.signature:
            events.append(ev("contentBlockDelta", {"contentBlockIndex": 0,
                                                   "delta": {"reasoningContent": {"signature": reply.signature}}}))
        events.append(ev("contentBlockStop", {"contentBlockIndex": 0}))
        index = 1
    for call in reply.calls:
        start = {"toolUse": {"toolUseId": call["toolUseId"], "name": call["name"]}}
        events.append(ev("contentBlockStart", {"contentBlockIndex": index, "start": start}))
        events += [ev("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": p}}})
                   for p in split_text(json.dumps(call["input"]), chunks)]
        events.append(ev("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    if not reply.calls:
        events += [ev("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": p}})
                   for p in split_text(reply.text, chunks)]
        events.append(ev("contentBlockStop", {"contentBlockIndex": index}))
    events.append(ev("messageStop", {"stopReason": reply.stop_reason, **reply.additional()}))
    events.append(ev("metadata", {"usage": reply.usage(), "metrics": {"latencyMs": 12}}))
    head, frames = b"", []
    for name, payload in events:
        counted = name == "contentBlockDelta" and ("text" in payload["delta"] or "toolUse" in payload["delta"])
        if counted:
            frames.append(b"")
        data = eventstream.event(name, payload)
        if frames:
            frames[-1] += data
        else:
            head += data
    return head, frames


async def _stream(request: web.Request, reply: Reply, b: Behaviour) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream",
                                       "x-amzn-RequestId": str(uuid.uuid4())})
    await resp.prepare(request)
    head, frames = _frames(reply, b.chunks, request.app[RNG])
    await resp.write(head)
    gap = b.chunk_delay or request.app[PROFILE].chunk_gap()
    error = eventstream.exception("internalServerException", MESSAGES["InternalServerException"])
    malformed = eventstream.corrupt(frames[-1]) if frames else b""
    await write_stream(request, resp, b, frames, gap, error, malformed)
    return resp


# --------------------------------------------------------------------------------------------------
# Handlers


async def _scenario(request: web.Request, model: str) -> tuple[Behaviour, web.Response | None]:
    b = behaviour_for(model, request.headers)
    await before_first_byte(b, request.app[PROFILE], request.app[RNG])
    spec = model.split("::", 1)[1] if "::" in model else ""
    named = _EXCEPTION_KEY.search(f"{spec},{request.headers.get('x-emulate', '')}")
    if named:
        name = named.group(1)
        return b, error_response(name, MESSAGES.get(name, f"emulated {name}"), retry_after=b.retry_after)
    if b.status is not None:
        name = STATUS_EXCEPTIONS.get(b.status, "InternalServerException" if b.status >= 500 else "ValidationException")
        return b, error_response(name, MESSAGES.get(name, f"emulated error {b.status}"), b.status, b.retry_after)
    if b.context_length:
        return b, invalid(CONTEXT_MESSAGE)
    return b, None


async def _read(request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
    raw = await request.read()
    denied = _authenticate(request, raw)
    if denied is not None:
        return None, denied
    try:
        body = json.loads(raw)
    except ValueError:
        return None, error_response("SerializationException", "Start of structure or map found where not expected.", 400)
    if not isinstance(body, dict):
        return None, invalid("Malformed input request, please reformat your input and try again.")
    return body, None


async def converse(request: web.Request) -> web.StreamResponse:
    body, early = await _read(request)
    if early is not None:
        return early
    assert body is not None
    bad = check_converse(body)
    if bad is not None:
        return bad
    model = request.match_info["model"]
    b, early = await _scenario(request, model)
    if early is not None:
        return early
    reply = Reply(model, body, b)
    if request.match_info["action"] == "converse-stream":
        return await _stream(request, reply, b)
    if b.malformed:
        return web.Response(body=b'{"output": {"message": ', content_type="application/json")
    return web.json_response(reply.response(), headers={"x-amzn-RequestId": str(uuid.uuid4())})


def _embed(model: str, body: dict[str, Any]) -> tuple[dict[str, Any], int] | web.Response:
    if "titan-embed" in model:
        text = body.get("inputText")
        if not isinstance(text, str):
            found = "JSONArray" if isinstance(text, list) else type(text).__name__
            return invalid(f"Malformed input request: #/inputText: expected type: String, found: {found}, please "
                           "reformat your input and try again.")
        sizes = TITAN_DIMENSIONS.get(model.split("::")[0], (1024, 512, 256))
        dims = body.get("dimensions", sizes[0])
        if dims not in sizes:
            return invalid(f"Malformed input request: #/dimensions: {dims} is not a valid enum value, please reformat "
                           "your input and try again.")
        tokens = count_tokens(text)
        return {"embedding": unit_vector(text, dims), "inputTextTokenCount": tokens}, tokens
    if "cohere.embed" in model:
        texts = body.get("texts")
        if "input_type" not in body:
            return invalid("Malformed input request: #: required key [input_type] not found, please reformat your "
                           "input and try again.")
        if body["input_type"] not in COHERE_INPUT_TYPES:
            return invalid(f"Malformed input request: #/input_type: {body['input_type']} is not a valid enum value")
        if not isinstance(texts, list) or not 0 < len(texts) <= 96 or not all(isinstance(t, str) for t in texts):
            return invalid("Malformed input request: #/texts: expected between 1 and 96 strings")
        vectors = [unit_vector(t, COHERE_DIMENSIONS) for t in texts]
        answer = {"id": str(uuid.uuid4()), "texts": texts}
        if body.get("embedding_types"):
            answer.update(embeddings={"float": vectors}, response_type="embeddings_by_type")
        else:
            answer.update(embeddings=vectors, response_type="embeddings_floats")
        return answer, sum(count_tokens(t) for t in texts)
    return invalid("The provided model identifier is invalid.")


async def invoke(request: web.Request) -> web.Response:
    body, early = await _read(request)
    if early is not None:
        return early
    assert body is not None
    model = request.match_info["model"]
    _b, early = await _scenario(request, model)
    if early is not None:
        return early
    result = _embed(model, body)
    if isinstance(result, web.Response):
        return result
    answer, tokens = result
    return web.json_response(answer, headers={"X-Amzn-Bedrock-Input-Token-Count": str(tokens),
                                              "X-Amzn-Bedrock-Invocation-Latency": "12",
                                              "x-amzn-RequestId": str(uuid.uuid4())})


def demo_credentials(app: web.Application, url: str, directory: Any) -> dict[str, str]:
    """For `llm-proxy demo`: the backend keys of the long-term key pair this emulator knows."""
    return {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY}


def create_app(profile: LatencyProfile | None = None) -> web.Application:
    app = web.Application()
    app[PROFILE] = profile or LatencyProfile()
    app[RNG] = random.Random(0)
    app[SECRETS] = {ACCESS_KEY_ID: SECRET_ACCESS_KEY, TEMP_ACCESS_KEY_ID: TEMP_SECRET_ACCESS_KEY}
    app[TOKENS] = {TEMP_ACCESS_KEY_ID: SESSION_TOKEN}
    # {model} may hold encoded slashes (ARNs): the action is the last segment.
    app.router.add_post(r"/model/{model:.+}/{action:converse|converse-stream}", converse)
    app.router.add_post(r"/model/{model:.+}/invoke", invoke)
    return app
