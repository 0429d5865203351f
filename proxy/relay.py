"""Serving one chat request on one deployment: open the upstream exchange and deliver the answer.

How this works.  `serve()` runs one attempt end to end and either returns the client response or
raises ProxyError *only while nothing has been sent to the client* -- so the dispatcher may retry
the request elsewhere.  Once the first byte of a stream is written the response is committed: a
later failure becomes an in-stream error event in the client's format and the stream ends.

Two paths:
- pass-through (frontend format == backend family): the body is the client's bytes with only
  `model` rewritten; the answer's bytes are relayed as they come (SSE re-framed event by event, NDJSON
  lines as they are, never decoded except to read usage for metrics);
- translated: client format -> IR -> backend format, and back, with one stream decoder (backend ->
  IR events) and one stream encoder (IR -> client events) per request.  Each upstream read is
  translated and written as soon as it arrives: nothing buffers the whole stream.
"""

from __future__ import annotations

import asyncio
import functools
import os
from time import perf_counter
from typing import TYPE_CHECKING

import msgspec

from adapters import ir, jsonio
from adapters.base import ChatOp, CountTokensOp, EmbeddingsOp, FollowUp, Passthrough, StreamEncoder
from adapters.errors import ProxyError
from adapters.params import DROPPED_HEADER, apply_policy
from adapters.sse import NDJSONParser, SSEEvent, SSEParser, encode_event

from .context import RequestContext
from .routing import Deployment
from .serverio import Answer, Reply, StreamOut, json_answer
from .upstream import Exchange, send
from .value_guards import client_values, upstream_values

if TYPE_CHECKING:
    from .handlers import Call

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DEPLOYMENT_HEADER = "x-llm-proxy-deployment"
EMBED_FANOUT = 8  # embedding requests in flight at once for one client request (Titan: one per input)
ESTIMATE_HEADER = "x-llm-proxy-token-count"  # set on a token count the gateway estimated


def response_headers(ctx: RequestContext, dep: Deployment | None) -> dict[str, str]:
    headers = {"x-request-id": ctx.request_id, "Server-Timing": ctx.server_timing()}
    if dep is not None:
        headers[DEPLOYMENT_HEADER] = dep.label
    if ctx.dropped:
        headers[DROPPED_HEADER] = ",".join(ctx.dropped)
    if ctx.extra_headers:
        headers.update(ctx.extra_headers)
    return headers


async def serve(call: Call, dep: Deployment) -> Reply:
    backend = dep.backend
    ctx = call.ctx
    ctx.backend = backend.name
    ctx.deployment = dep.label
    ctx.attempts += 1
    if ctx.span is None:
        return await _serve(call, dep)
    base = call.trace_headers
    call.trace_headers = dict(base)
    span = call.tracing.start_attempt(ctx.span, dep.label, backend.name, call.trace_headers)
    error: str | None = "cancelled"
    try:
        resp = await _serve(call, dep)
        error = ctx.error_kind  # a committed stream may still have ended in an error event
        return resp
    except ProxyError as err:
        error = err.kind
        raise
    finally:
        call.tracing.end_attempt(span, error)
        call.trace_headers = base


async def _serve(call: Call, dep: Deployment) -> Reply:
    """Decided per attempt: a fallback may land on a deployment of another family."""
    op, dialect = call.op, call.passthrough
    if dialect is not None and dep.family == dialect.name:
        return await _passthrough(call, dep, dialect)
    if isinstance(op, CountTokensOp):
        return _estimate_tokens(call, dep, op)
    if isinstance(op, EmbeddingsOp):
        return await _embeddings(call, dep, op)
    return await _translated(call, dep, op)


def _estimate_tokens(call: Call, dep: Deployment, op: CountTokensOp) -> Answer:
    """A token count for a backend that cannot count in the client's format: the frontend estimates."""
    with client_values(call.body):
        n = op.estimate(call.body)
    headers = {**response_headers(call.ctx, dep), ESTIMATE_HEADER: "estimate"}
    return json_answer(op.render(n), headers)


# --------------------------------------------------------------------------------------------------
# Pass-through


async def _passthrough(call: Call, dep: Deployment, frontend: Passthrough) -> Reply:
    ctx, adapter = call.ctx, dep.backend.adapter
    raw = dict(call.raw)
    # Formats that name the model in the URL (Gemini) have none in the body; the backend puts
    # target.model in the URL instead.
    in_body = "model" in raw
    changed = (in_body and dep.target.model != ctx.client_model) or bool(dep.target.params)
    if in_body:
        raw["model"] = dep.target.model
    raw.update(dep.target.params)
    # The frontend may ask the backend for stream usage the client did not request (for token
    # metrics); it then tells us to hide those usage-only events from the client.
    hide_usage = frontend.prepare_passthrough(raw, ctx.stream)
    body = jsonio.encode_raw_object(raw) if changed or hide_usage else call.body
    http = adapter.passthrough_request(call.op.name, body, ctx.stream, dep.target, call.request.headers)
    ex = await _open(dep, http, call)
    if not ctx.stream:
        data = await _read_all(ex, ctx)
        ctx.usage = frontend.usage_from_body(data)  # also refuses a body that is not valid JSON
        return json_answer(data, response_headers(ctx, dep), ex.status)
    if not isinstance(call.op, ChatOp):
        raise ProxyError("server", f"operation {call.op.name!r} does not stream")
    return await _pump(call, dep, ex, _Relay(call, dep, frontend, call.op, hide_usage))


class _Relay:
    """Upstream stream bytes -> the same events re-framed for the client (SSE events, or NDJSON lines
    byte for byte), reading only what metrics need (usage) and what tells a finished stream from a
    truncated one."""

    __slots__ = ("frontend", "op", "ctx", "hide_usage", "parser", "ndjson", "ended", "backend", "gate")

    def __init__(self, call: Call, dep: Deployment, frontend: Passthrough, op: ChatOp, hide_usage: bool) -> None:
        self.frontend, self.op, self.ctx, self.hide_usage = frontend, op, call.ctx, hide_usage
        self.gate = _marker_gate(frontend.usage_markers)
        self.ndjson = frontend.stream_framing == "ndjson"
        self.parser: SSEParser | NDJSONParser = NDJSONParser() if self.ndjson else SSEParser()
        self.ended = False
        self.backend = dep.backend

    def feed(self, chunk: bytes) -> bytes:
        return self._relay(self.parser.feed(chunk))

    def close(self) -> bytes:
        out = self._relay(self.parser.close())
        if not self.ended:
            raise ProxyError("upstream_protocol", f"backend {self.backend.name!r} ended the stream early")
        return out

    def _relay(self, frames: list[SSEEvent] | list[bytes]) -> bytes:
        frontend = self.frontend
        out = []
        for frame in frames:
            ev = SSEEvent(frame) if isinstance(frame, bytes) else frame
            data = ev.data
            if self.gate in data and any(marker in data for marker in frontend.usage_markers):
                usage = frontend.usage_from_event(data)
                if usage is not None:
                    self.ctx.usage = _merge_usage(self.ctx.usage, usage)
                    if self.hide_usage and frontend.is_usage_only(data):
                        continue
            if frontend.is_stream_end(ev):
                self.ended = True
                data = self.backend.scrub_bytes(data)  # an in-band error may quote the backend
            out.append(data + b"\n" if self.ndjson else encode_event(data, ev.event))
        return b"".join(out)

    def error_encoder(self) -> StreamEncoder:
        model = self.ctx.client_model
        return self.op.stream_encoder(ir.ChatRequest(model=model), model)


@functools.cache
def _marker_gate(markers: tuple[bytes, ...]) -> bytes:
    """What every usage marker starts with: one scan of an event for it rules out all of them (most
    events carry no usage); b"" (always found: the markers then decide) when they share no prefix."""
    return os.path.commonprefix(markers) if markers else b""


# --------------------------------------------------------------------------------------------------
# Translated


async def _translated(call: Call, dep: Deployment, op: ChatOp) -> Reply:
    ctx, adapter, target = call.ctx, dep.backend.adapter, dep.target
    # Each attempt gets its own shallow copy: the policy may drop different fields per backend.
    req = msgspec.structs.replace(call.chat_request(op))
    ctx.dropped = apply_policy(req, adapter.supported_params_for(target), target.unsupported_params, dep.backend.provider)
    with client_values(req):
        http = adapter.chat_request(req, target)
    while True:
        ex = await _open(dep, http, call)
        if http.stream:
            return await _relay_translated(call, dep, op, req, ex)
        data = await _read_all(ex, ctx)
        with upstream_values(dep, None):
            result = adapter.chat_response(data, req, target)
        if not isinstance(result, FollowUp):
            if result.usage is not None and not result.usage.input_tokens:
                result.usage.input_tokens = adapter.prompt_tokens_from_headers(ex.response.headers) or 0
            break
        if result.delay > 0:
            await asyncio.sleep(result.delay)
        http = result.request
    ctx.usage = result.usage
    with upstream_values(dep, result):
        if op.render_with_request is not None:
            body = op.render_with_request(result, ctx.client_model, req)
        else:
            body = op.render(result, ctx.client_model)
    return json_answer(body, response_headers(ctx, dep))


async def _relay_translated(call: Call, dep: Deployment, op: ChatOp, req: ir.ChatRequest,
                            ex: Exchange) -> Reply:
    decoder = dep.backend.adapter.stream_decoder(req, dep.target)
    return await _pump(call, dep, ex, _Translation(decoder, op.stream_encoder(req, call.ctx.client_model), call.ctx))


class _Translation:
    """Upstream bytes -> IR events (the backend's decoder) -> client events (the frontend's encoder)."""

    __slots__ = ("decoder", "encoder", "ctx")

    def __init__(self, decoder, encoder, ctx: RequestContext) -> None:
        self.decoder, self.encoder, self.ctx = decoder, encoder, ctx

    def feed(self, chunk: bytes) -> bytes:
        events = self.decoder.feed(chunk)
        return self._encode(events) if events else b""

    def close(self) -> bytes:
        return self._encode(self.decoder.close())

    def _encode(self, events: list[ir.Event]) -> bytes:
        parts = []
        for ev in events:
            if type(ev) is ir.UsageEvent:
                self.ctx.usage = ev.usage
            data = self.encoder.feed(ev)
            if data:
                parts.append(data)
        return b"".join(parts)

    def error_encoder(self):
        return self.encoder


async def _pump(call: Call, dep: Deployment, ex: Exchange, step) -> Reply:
    """Relay a stream: each upstream read is translated by `step` and written at once.  Until the
    first write a failure propagates (the dispatcher may retry); after it, it ends the stream with an
    in-band error event in the client's format."""
    ctx = call.ctx
    resp: StreamOut | None = None
    try:
        try:
            with upstream_values(dep, None):
                while chunk := await ex.next_chunk():
                    if ctx.upstream_ttfb is None:
                        ctx.upstream_ttfb = perf_counter() - ex.t_sent
                    ctx.stream_chunks += 1
                    out = step.feed(chunk)
                    if out:
                        resp = await _write(call, dep, resp, out, ex)
                out = step.close()
                if out:
                    resp = await _write(call, dep, resp, out, ex)
        except _ClientTooSlow:
            pass  # the upstream exchange is released below; the server finds the connection gone
        except ProxyError as err:
            dep.backend.scrub(err)  # an in-band upstream error carries the upstream's own words
            if resp is None:
                raise
            ctx.error_kind = err.kind
            await _write_error(resp, step.error_encoder(), err)
    finally:
        _finish_exchange(ex, ctx)
    if resp is None:  # a stream that produced nothing at all
        raise ProxyError("upstream_protocol", f"backend {dep.backend.name!r} sent an empty stream")
    return resp


async def _embeddings(call: Call, dep: Deployment, op: EmbeddingsOp) -> Answer:
    ctx = call.ctx
    with client_values(call.body):
        req = op.parse(call.body)
    with client_values(req):
        http = dep.backend.adapter.embeddings_request(req, dep.target)
    if not isinstance(http, list):
        result = await _embed(call, dep, http, req)
    elif len(http) == 1:
        result = await _embed(call, dep, http[0], req)
    else:
        result = await _embed_each(call, dep, http, req)
    ctx.usage = result.usage
    with upstream_values(dep, result):
        body = op.render(result, ctx.client_model, req.encoding_format)
    return json_answer(body, response_headers(ctx, dep))


async def _embed(call: Call, dep: Deployment, http, req: ir.EmbeddingRequest) -> ir.EmbeddingResponse:
    adapter = dep.backend.adapter
    ex = await _open(dep, http, call)
    data = await _read_all(ex, call.ctx)
    with upstream_values(dep, None):
        result = adapter.embeddings_response(data, req)
    if result.usage is None or not result.usage.input_tokens:
        tokens = adapter.prompt_tokens_from_headers(ex.response.headers)  # Bedrock InvokeModel
        if tokens is not None:
            result.usage = ir.Usage(input_tokens=tokens)
    return result


async def _embed_each(call: Call, dep: Deployment, https: list, req: ir.EmbeddingRequest) -> ir.EmbeddingResponse:
    """A backend that embeds one input (or batch) per request returns a list of requests: they run
    EMBED_FANOUT at a time, the first failure cancels the rest, the answers join in order."""
    gate = asyncio.Semaphore(EMBED_FANOUT)

    async def one(http) -> ir.EmbeddingResponse:
        async with gate:
            return await _embed(call, dep, http, req)

    tasks = [asyncio.ensure_future(one(http)) for http in https]
    try:
        parts = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    usages = [p.usage for p in parts if p.usage is not None]
    usage = ir.Usage(input_tokens=sum(u.input_tokens for u in usages)) if usages else None
    return ir.EmbeddingResponse(model=parts[0].model, data=[v for p in parts for v in p.data], usage=usage)


# --------------------------------------------------------------------------------------------------
# Shared steps


async def _open(dep: Deployment, http, call: Call) -> Exchange:
    """Send and check the status: an upstream error status becomes the backend adapter's ProxyError."""
    ex = await send(dep.backend, http, call.trace_headers)
    if ex.status >= 400:
        try:
            body = await ex.read()
        finally:
            _finish_exchange(ex, call.ctx)
        raise dep.backend.scrub(dep.backend.adapter.parse_error(ex.status, ex.response.headers, body))
    return ex


async def _read_all(ex: Exchange, ctx: RequestContext) -> bytes:
    try:
        return await ex.read()
    finally:
        _finish_exchange(ex, ctx)


def _finish_exchange(ex: Exchange, ctx: RequestContext) -> None:
    ctx.upstream_time += ex.finish()


_UNBLOCKED_WRITE = 16384  # bytes a write may add to an empty transport buffer without ever pausing it


class _ClientTooSlow(Exception):
    """The client did not take a write within the exchange's deadlines; its connection is dropped."""


async def _write(call: Call, dep: Deployment, resp: StreamOut | None, data: bytes, ex: Exchange) -> StreamOut:
    """Write stream bytes, sending the headers first if this is the first write (commit point).

    A write waits while the client does not read; it gets the upstream's deadlines (`idle` for this
    write, `total` for the exchange), else a slow reader would hold the upstream connection, and a
    few of them the backend's whole pool.  Past them the client's connection is dropped."""
    ctx = call.ctx
    if resp is None:
        headers = {**SSE_HEADERS, **response_headers(ctx, dep), "Content-Type": call.frontend.stream_content_type}
        resp = await call.request.stream(200, headers)
        ctx.first_write = perf_counter()
        ctx.status = 200
    transport = resp.transport
    # Only a write that may block pays for a timer: one that finds the transport's buffer empty and
    # is well under its high-water mark (64 KiB) goes out without waiting for the client.
    if transport is None or (not transport.get_write_buffer_size() and len(data) < _UNBLOCKED_WRITE):
        await resp.write(data)
        return resp
    try:
        async with asyncio.timeout_at(min(asyncio.get_running_loop().time() + ex.idle, ex.deadline)):
            await resp.write(data)
    except TimeoutError:
        ctx.error_kind = "client_timeout"
        transport.abort()
        raise _ClientTooSlow from None
    return resp


async def _write_error(resp: StreamOut, encoder, err: ProxyError) -> None:
    try:
        await resp.write(encoder.error(err))
    except ConnectionError:
        pass


def _merge_usage(old: ir.Usage | None, new: ir.Usage) -> ir.Usage:
    """Anthropic streams report input usage at the start and output usage at the end: keep the max."""
    if old is None:
        return new
    return ir.Usage(
        input_tokens=max(old.input_tokens, new.input_tokens),
        output_tokens=max(old.output_tokens, new.output_tokens),
        cached_input_tokens=max(old.cached_input_tokens, new.cached_input_tokens),
        cache_write_tokens=max(old.cache_write_tokens, new.cache_write_tokens),
        reasoning_tokens=max(old.reasoning_tokens, new.reasoning_tokens),
    )
