"""Emulated Replicate predictions API, written from Replicate's HTTP docs and the replicate-python client.

Routes (token auth: `Authorization: Bearer <token>` or `Token <token>`, else 401):

    POST /v1/models/{owner}/{name}/predictions   official model (scenario in the name: "llama::status=429")
    POST /v1/predictions                         {"version": "<id>"} (scenario in the version string; the
                                                 SDK sends "owner/name::x" as version ":x", also accepted)
    GET  /v1/predictions/{id}                    polling: starting -> processing (partial output) -> succeeded
    POST /v1/predictions/{id}/cancel
    GET  /v1/models/{owner}/{name}/versions/{id} a version whose output schema is a string iterator
    GET  /stream/v1/predictions/{id}             the `urls.stream` SSE (no auth: a capability URL)

`Prefer: wait[=N]` finishes the prediction inline unless the first-byte delay exceeds N seconds, in
which case it answers `starting` after N seconds, as Replicate does.  The stream sends one `logs`
event, `output` events of plain text (a piece containing "\\n" goes out as several `data:` lines),
then `done` with `{}`.  Default reply: `echo: <prompt>`, or `echo: <last user turn>` when the caller
sent `prompt_template: "{prompt}"` (a prompt rendered with a chat template), cut at the first of the
comma-separated `stop_sequences`.

Scenario keys (behaviour.py): status/retry_after -> RFC 7807 problem body; context_length -> a failed
prediction (stream: an `error` event and `done {"reason":"error"}`) with vLLM's wording; chunks, text,
first_byte, chunk_delay, hang, reset_after, truncate_after, error_after, malformed (a truncated JSON
body; for a stream request, a `done` event whose data is not JSON), max_tokens (output cut short and
`output_token_count` equal to the requested max), usage_in/usage_out -> `metrics`.  `tools` and
`reasoning` do not apply: Replicate text models have neither.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from .behaviour import (Behaviour, LatencyProfile, before_first_byte, behaviour_for, count_tokens, last_user_text,
                        reply_text, sleep_if, split_text, write_stream)

MAX_KEPT = 10_000  # predictions remembered for polling; the oldest are forgotten first
CONTEXT_MESSAGE = (
    "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
    "(4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion."
)
ERROR_MESSAGE = "emulated error during prediction"
OUTPUT_SCHEMA = {"type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator",
                 "x-cog-array-display": "concatenate"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Job:
    """One prediction and the scenario it was created under."""

    id: str
    model: str
    version: str | None
    input: dict[str, Any]
    behaviour: Behaviour
    pieces: list[str]
    input_tokens: int
    output_tokens: int
    created_at: str = field(default_factory=_now)
    status: str = "starting"
    output: list[str] | None = None
    error: str | None = None
    completed_at: str | None = None

    @property
    def pending(self) -> bool:
        return self.status in ("starting", "processing")

    def finish(self) -> None:
        if not self.pending:
            return
        self.completed_at = _now()
        if self.behaviour.context_length:
            self.status, self.error = "failed", CONTEXT_MESSAGE
        else:
            self.status, self.output = "succeeded", list(self.pieces)

    def advance(self) -> None:
        """One poll: starting -> processing (half the output so far) -> finished."""
        if self.status == "starting":
            self.status = "processing"
            self.output = self.pieces[: len(self.pieces) // 2]
        elif self.status == "processing":
            self.finish()

    def to_json(self, root: str) -> dict[str, Any]:
        done = self.status == "succeeded"
        metrics: dict[str, Any] = {"predict_time": 0.01, "total_time": 0.02} if done else {}
        if done:
            metrics |= {"input_token_count": self.input_tokens, "output_token_count": self.output_tokens}
        return {
            "id": self.id, "model": self.model, "version": self.version or "emulated", "input": self.input,
            "logs": "Emulated model loaded\n" if self.status != "starting" else "",
            "output": self.output, "data_removed": False, "error": self.error, "status": self.status,
            "created_at": self.created_at, "started_at": None if self.status == "starting" else self.created_at,
            "completed_at": self.completed_at, "metrics": metrics,
            "urls": {"get": f"{root}/v1/predictions/{self.id}", "cancel": f"{root}/v1/predictions/{self.id}/cancel",
                     "stream": f"{root}/stream/v1/predictions/{self.id}", "web": f"{root}/p/{self.id}"},
        }


JOBS = web.AppKey("replicate_jobs", OrderedDict)
PROFILE = web.AppKey("replicate_profile", LatencyProfile)
RNG = web.AppKey("replicate_rng", random.Random)


def problem(status: int, title: str, detail: str, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    body = json.dumps({"title": title, "detail": detail, "status": status})
    return web.Response(status=status, body=body, content_type="application/problem+json", headers=headers)


def _authorized(request: web.Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme in ("Bearer", "Token") and bool(token.strip())


@web.middleware
async def _token_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every `/v1` route needs a token; the stream URL does not (it is a capability URL)."""
    if request.path.startswith("/v1/") and not _authorized(request):
        return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
    return await handler(request)


def _root(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _prefer_wait(request: web.Request) -> float | None:
    """Seconds from `Prefer: wait` / `Prefer: wait=N` (60 without a number), None when absent."""
    for item in request.headers.get("Prefer", "").split(","):
        key, _, value = item.strip().partition("=")
        if key == "wait":
            return float(value) if value.strip().isdigit() else 60.0
    return None


def _make_job(model: str, version: str | None, inp: dict[str, Any], b: Behaviour) -> Job:
    prompt = inp.get("prompt") if isinstance(inp.get("prompt"), str) else ""
    # `prompt_template: "{prompt}"` means the caller rendered the chat template itself: echo the last
    # user turn found by the usual template markers, as the TGI emulator does.
    text = reply_text(b, last_user_text(prompt) if inp.get("prompt_template") == "{prompt}" else prompt)
    stops = inp.get("stop_sequences")
    for stop in (stops.split(",") if isinstance(stops, str) else []):
        if stop and stop in text:
            text = text[: text.index(stop)]
    limit = inp.get("max_tokens", inp.get("max_new_tokens"))
    out_tokens = count_tokens(text)
    if b.max_tokens:
        text = text[: max(1, len(text) // 2)]
        out_tokens = limit if isinstance(limit, int) else count_tokens(text)
    system = inp.get("system_prompt") if isinstance(inp.get("system_prompt"), str) else ""
    return Job(
        id=uuid.uuid4().hex[:26], model=model, version=version, input=inp, behaviour=b,
        pieces=split_text(text, b.chunks),
        input_tokens=b.usage_in if b.usage_in is not None else count_tokens(prompt + system),
        output_tokens=b.usage_out if b.usage_out is not None else out_tokens,
    )


async def _hang() -> None:
    await asyncio.Event().wait()  # cancelled when the client goes away or the server stops


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _create(
    request: web.Request, body: dict[str, Any], model: str, version: str | None, b: Behaviour
) -> web.StreamResponse:
    if b.hang:
        await _hang()
    inp = body.get("input")
    if not isinstance(inp, dict):
        return problem(422, "Input validation failed", "input: input is required")
    if not isinstance(inp.get("prompt"), str):
        return problem(422, "Input validation failed", "input: prompt is required")
    stream = body.get("stream") is True
    app = request.app
    delay = 0.0 if stream else b.first_byte + app[PROFILE].first_byte_delay(app[RNG])
    if b.status is not None:
        await sleep_if(delay)
        return problem(b.status, "Emulated error", f"emulated HTTP {b.status}", b.retry_after)
    job = _make_job(model, version, inp, b)
    jobs = app[JOBS]
    jobs[job.id] = job
    while len(jobs) > MAX_KEPT:
        jobs.popitem(last=False)
    wait = None if stream else _prefer_wait(request)
    if wait is not None and delay > wait:
        await sleep_if(wait)  # Replicate gives up waiting and hands back a pending prediction
    else:
        await sleep_if(delay)
        if wait is not None:
            job.finish()
    if b.malformed and not stream:  # a stream's malformation is its `done` event
        truncated = b'{"id": "' + job.id.encode() + b'", "status": '
        return web.Response(status=201, body=truncated, content_type="application/json")
    return web.json_response(job.to_json(_root(request)), status=201)


async def create_for_model(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    if body is None:
        return problem(400, "Bad request", "the request body is not a JSON object")
    model = f"{request.match_info['owner']}/{request.match_info['name']}"
    return await _create(request, body, model, None, behaviour_for(model, request.headers))


async def create_for_version(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    if body is None:
        return problem(400, "Bad request", "the request body is not a JSON object")
    version = body.get("version")
    if not isinstance(version, str) or not version:
        return problem(422, "Input validation failed", "version is required")
    # The SDK splits "owner/name::scenario" at the first colon and sends ":scenario" as the version.
    spec = ":" + version if version.startswith(":") and not version.startswith("::") else version
    return await _create(request, body, "emulated/model", version, behaviour_for(spec, request.headers))


def _job(request: web.Request) -> Job | None:
    return request.app[JOBS].get(request.match_info["id"])


async def get_prediction(request: web.Request) -> web.StreamResponse:
    job = _job(request)
    if job is None:
        return problem(404, "Not found", "The requested resource could not be found.")
    job.advance()
    return web.json_response(job.to_json(_root(request)))


async def cancel_prediction(request: web.Request) -> web.StreamResponse:
    job = _job(request)
    if job is None:
        return problem(404, "Not found", "The requested resource could not be found.")
    if job.pending:
        job.status, job.completed_at = "canceled", _now()
    return web.json_response(job.to_json(_root(request)))


async def get_version(request: web.Request) -> web.StreamResponse:
    schema = {"openapi": "3.0.2", "components": {"schemas": {
        "Input": {"type": "object", "properties": {"prompt": {"type": "string"}}},
        "Output": OUTPUT_SCHEMA}}}
    return web.json_response({"id": request.match_info["version"], "created_at": "2024-01-01T00:00:00Z",
                              "cog_version": "0.9.0", "openapi_schema": schema})


def sse_event(event: str, event_id: int, data: str) -> bytes:
    """One Replicate SSE event: plain-text data, one `data:` line per line of the text."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\nid: {event_id}\n{lines}\n".encode()


async def stream_prediction(request: web.Request) -> web.StreamResponse:
    job = _job(request)
    if job is None:
        return problem(404, "Not found", "The requested resource could not be found.")
    b, app = job.behaviour, request.app
    await before_first_byte(b, app[PROFILE], app[RNG])
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await resp.prepare(request)
    await resp.write(sse_event("logs", 0, "Emulated model loaded"))
    if job.status == "canceled":
        await resp.write(sse_event("done", 1, '{"reason":"canceled"}'))
        return resp
    if b.context_length:
        job.finish()
        await resp.write(sse_event("error", 1, json.dumps({"detail": CONTEXT_MESSAGE})))
        await resp.write(sse_event("done", 2, '{"reason":"error"}'))
        return resp
    return await _stream_output(request, resp, job)


async def _stream_output(request: web.Request, resp: web.StreamResponse, job: Job) -> web.StreamResponse:
    """The `output` events, then `done`; the scenario's faults count them all (ids follow the count)."""
    b, done_id = job.behaviour, len(job.pieces) + 1
    frames = [sse_event("output", i + 1, piece) for i, piece in enumerate(job.pieces)]
    frames.append(sse_event("done", done_id, "{}"))
    failed_at = b.error_after or 0  # the error strikes before frame `error_after`
    error = sse_event("error", failed_at + 1, json.dumps({"detail": ERROR_MESSAGE}))
    error += sse_event("done", failed_at + 2, '{"reason":"error"}')
    gap = b.chunk_delay or request.app[PROFILE].chunk_gap()
    if await write_stream(request, resp, b, frames, gap, error, sse_event("done", done_id, "{not json")):
        job.finish()
    return resp


def create_app(profile: LatencyProfile | None = None) -> web.Application:
    app = web.Application(middlewares=[_token_auth])
    app[JOBS] = OrderedDict()
    app[PROFILE] = profile or LatencyProfile()
    app[RNG] = random.Random(0)
    app.router.add_post("/v1/models/{owner}/{name}/predictions", create_for_model)
    app.router.add_get("/v1/models/{owner}/{name}/versions/{version}", get_version)
    app.router.add_post("/v1/predictions", create_for_version)
    app.router.add_get("/v1/predictions/{id}", get_prediction)
    app.router.add_post("/v1/predictions/{id}/cancel", cancel_prediction)
    app.router.add_get("/stream/v1/predictions/{id}", stream_prediction)
    return app
