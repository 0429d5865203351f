"""The API endpoints: one `ApiHandler` per route, built at start-up.  Each request goes through the same
few steps: authenticate, read the body (bounded), read `model`/`stream` from the top level only (or the
URL), route, dispatch -- and any ProxyError becomes the caller's own error format.  Metrics and the one
access-log line are written in exactly one place.  `Call` is what a request is parsed into for the
dispatcher and the relay."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from adapters import ir, jsonio
from adapters.base import ApiRoute, ChatOp, Frontend, InBody, Operation, Passthrough
from adapters.errors import ProxyError, bad_request

from . import relay
from .accesslog import access_line
from .context import RequestContext, request_id
from .limiter import cost_usd
from .routing import Route, check_model_name
from .serverio import JSON_TYPE, Answer, BodyMalformed, BodyTooLarge, Inbound, Reply
from .tracing import Tracing
from .value_guards import client_values

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger("llm_proxy")

LOGGED_BODY_MAX = 4096


class Call:
    """One client request, parsed as far as routing needs (shared by every attempt)."""

    __slots__ = ("request", "ctx", "frontend", "passthrough", "op", "body", "raw", "req", "tracing", "trace_headers")

    def __init__(self, request: Inbound, ctx: RequestContext, frontend: Frontend, passthrough: Passthrough | None,
                 op: Operation, body: bytes, raw: dict[str, msgspec.Raw], tracing: Tracing) -> None:
        self.request = request
        self.ctx = ctx
        self.frontend = frontend
        self.passthrough = passthrough  # the frontend, when some backend family speaks its format
        self.op = op
        self.body = body
        self.raw = raw  # top-level keys -> undecoded values (pass-through rewrites only `model`)
        self.req: ir.ChatRequest | None = None  # parsed lazily: pass-through never needs it
        self.tracing = tracing
        # Sent with every upstream attempt (an attempt's span replaces traceparent in its copy).
        self.trace_headers = tracing.upstream_headers(request.headers, ctx.request_id)

    def chat_request(self, op: ChatOp) -> ir.ChatRequest:
        """The parsed request, with the model and the stream flag from wherever the route declares
        them (a URL-addressed format has neither in its body)."""
        if self.req is None:
            with client_values(self.body):
                self.req = op.parse(self.body, self.raw)
            self.req.model = self.ctx.client_model
            self.req.stream = self.ctx.stream
        return self.req


class ApiHandler:
    """The handler of one API route a frontend declares, built at start-up."""

    def __init__(self, gw: Gateway, route: ApiRoute, frontend: Frontend) -> None:
        self.gw = gw
        self.route = route
        self.frontend = frontend
        self.passthrough = frontend if isinstance(frontend, Passthrough) else None
        self.in_flight = gw.recorder.in_flight(route.path)  # the route's gauge child, bound once

    async def __call__(self, request: Inbound) -> Reply:
        route, frontend = self.route.path, self.frontend
        ctx = RequestContext(request_id(request.headers.get("x-request-id")), route)
        ctx.span = self.gw.tracing.start_request(request.headers, route, ctx.request_id)
        gauge = self.in_flight
        gauge.inc()
        resp: Reply | None = None
        try:
            resp = await self._serve(request, ctx)
        except ProxyError as err:
            resp = error_response(frontend, err, ctx)
        except (asyncio.CancelledError, ConnectionError):
            # The client went away (cancelled handler, or a write on its closed connection); the
            # relay has released the upstream exchange.
            ctx.status = 499
            raise
        except Exception:  # a bug: log it with its traceback, give the client a clean 500
            log.exception("internal error serving request %s", ctx.request_id)
            resp = error_response(frontend, ProxyError("server", "internal error in the gateway"), ctx)
        finally:
            gauge.dec()
            if resp is not None and not ctx.status:
                ctx.status = resp.status
            self._record(ctx)
            self.gw.tracing.end_request(ctx.span, ctx.status, ctx.client_model, ctx.error_kind)
        return resp

    async def _serve(self, request: Inbound, ctx: RequestContext) -> Reply:
        gw = self.gw
        key = await gw.keys.authenticate(request, self.frontend.client_key)
        if key is not None:
            ctx.key_name = key.name
        body = await read_body(request, gw.max_body, gw.read_timeout)
        if self.gw.log_prompts:  # explicit debug opt-in: request bodies are user data
            ctx.debug_body = body[:LOGGED_BODY_MAX].decode("utf-8", "replace")
        try:
            raw = jsonio.top_level_raw(body)
        except (jsonio.DecodeError, jsonio.ValidationError):
            raise bad_request("the request body is not a valid JSON object") from None
        model, op = self._locate(request, raw, ctx)
        ctx.client_model = check_model_name(model)  # before anything stores, logs or forwards it
        if key is not None and not key.may_use(model):
            if key.source == "admin":  # a run-time key may have been widened on another replica
                key = await gw.keys.refresh(key)
                if key is None:
                    raise ProxyError("authentication", "invalid API key (revoked)", code="invalid_api_key")
            if not key.may_use(model):
                raise _forbidden(model)
        route = self.gw.router.resolve(model)
        if route is None:
            raise ProxyError("not_found", f"model {model!r} is not configured on this gateway", param="model", code="model_not_found")
        ctx.model_label = route.config.name
        ctx.price = route.config.price
        call = Call(request, ctx, self.frontend, self.passthrough, op, body, raw, gw.tracing)
        if isinstance(op, ChatOp) and op.stored is not None:  # continues / will be stored state
            call.req = await gw.stored.prepare(op.stored, body, ctx.key_name or "")
            call.req.model, call.req.stream = ctx.client_model, ctx.stream
        if key is None or not key.limited:
            return await self._call(call, route)
        cap = op.max_tokens_fields if isinstance(op, ChatOp) else None
        ticket = await gw.limiter.admit(key, ctx, cap, body, raw, route.config.max_tokens, ctx.price,
                                        self.frontend.rate_limit_headers, gw.keys.refresh)
        if ticket is None:  # state store down and on_error: open
            return await self._call(call, route)
        outcome = "error"
        try:
            if not ticket.key.may_use(model):  # admission found the key narrowed on another replica
                raise _forbidden(model)
            resp = await self._call(call, route)
            outcome = "ok"
            return resp
        except (asyncio.CancelledError, ConnectionError):
            outcome = "cut"
            raise
        finally:
            await gw.limiter.settle(ticket, ctx, outcome)

    async def _call(self, call: Call, route: Route) -> Reply:
        resp = await self.gw.dispatcher.dispatch(call, route)
        stored = call.op.stored if isinstance(call.op, ChatOp) else None
        if stored is not None:
            # A stream is whole on the client's side by now except its end: storing before the end
            # lets a client that continues as soon as the body ends find it.
            await self.gw.stored.save(stored.turn(call.req), call.ctx.key_name or "")
        return resp

    def _locate(self, request: Inbound, raw: dict[str, msgspec.Raw], ctx: RequestContext) -> tuple[str, Operation]:
        """The model and the operation, from where the route declares them; sets `ctx.stream`."""
        where = self.route.target
        if isinstance(where, InBody):
            model = _top_level(raw, where.model_field, str)
            if model is None:
                raise bad_request(f"missing required field '{where.model_field}' (a string)", param=where.model_field)
            stream = _top_level(raw, where.stream_field, bool)
            ctx.stream = where.stream_default if stream is None else stream
            return model, where.operation
        model, name, ctx.stream = where.locate(request.match_info["target"], request.query)
        ctx.route = f"{ctx.route.split('{', 1)[0]}*:{name}"
        return model, where.operations[name]

    def _record(self, ctx: RequestContext) -> None:
        total = ctx.elapsed()
        ttft = None
        if ctx.first_write is not None and ctx.stream:
            ttft = ctx.first_write - ctx.t0
            added = ttft - (ctx.upstream_ttfb or 0.0)
        else:
            added = total - ctx.upstream_time
        backend = ctx.backend or "none"
        self.gw.recorder.observe(
            ctx.route, backend, ctx.model_label, ctx.stream, ctx.status, max(0.0, added),
            ctx.upstream_time if ctx.backend else None, ttft,
        )  # fmt: skip
        if ctx.usage is not None:
            self.gw.recorder.tokens(backend, ctx.model_label, ctx.usage.input_tokens, ctx.usage.output_tokens)
        if ctx.key_name:
            u = ctx.usage
            prompt, completion = ctx.charged or ((u.input_tokens, u.output_tokens) if u is not None else (0, 0))
            usd = cost_usd(ctx.price, prompt, completion)
            self.gw.recorder.key(ctx.key_name, ctx.model_label, ctx.status, prompt, completion, usd)
        access_line(ctx, total, added, ttft)


_CLOSING = frozenset({"request_timeout", "request_too_large"})


async def read_body(request: Inbound, max_body: int, timeout: float) -> bytes:
    if request.content_length is not None and request.content_length > max_body:
        raise ProxyError("request_too_large", f"request body exceeds {max_body} bytes")
    try:
        if request.body_complete():  # the whole body came with the headers: no wait, no timer
            return await request.read()
        # A client trickling its body (slowloris) must not hold a connection and a slot for ever.
        async with asyncio.timeout(timeout):
            return await request.read()
    except BodyTooLarge:
        raise ProxyError("request_too_large", f"request body exceeds {max_body} bytes") from None
    except BodyMalformed:
        raise bad_request("the request body is not validly framed (the server closes the connection)") from None
    except TimeoutError:
        raise ProxyError("request_timeout", f"the request body was not received within {timeout:g}s") from None


def error_response(frontend: Frontend, err: ProxyError, ctx: RequestContext) -> Answer:
    """`err` in the caller's own format, with the request id and (if one was tried) the deployment."""
    ctx.error_kind = err.kind
    status, body = frontend.render_error(err)
    headers = {"x-request-id": ctx.request_id, "Server-Timing": ctx.server_timing(), **ctx.extra_headers}
    if err.retry_after is not None:
        headers["Retry-After"] = str(max(0, round(err.retry_after)))
    if ctx.deployment:
        headers[relay.DEPLOYMENT_HEADER] = ctx.deployment
    ctx.status = status
    headers["Content-Type"] = JSON_TYPE
    # What is left of a trickled or refused body is not waited for: the connection goes.
    return Answer(status, body, headers, close=err.kind in _CLOSING)


def _forbidden(model: str) -> ProxyError:
    return ProxyError("permission", f"this API key may not use model {model!r}", param="model", code="model_not_allowed")


def _top_level(raw: dict[str, msgspec.Raw], key: str, typ: type) -> Any:
    value = raw.get(key)
    if value is None:
        return None
    try:
        decoded = jsonio.loads(value)
    except jsonio.DecodeError:
        return None
    return decoded if isinstance(decoded, typ) else None
