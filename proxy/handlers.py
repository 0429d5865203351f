"""HTTP endpoints.  Each API handler does the same few steps: authenticate, read the body (bounded),
read `model`/`stream` from the top level only, route, dispatch -- and turns any ProxyError into the
caller's own error format.  Metrics and the one access-log line are written in exactly one place."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from aiohttp import web

from adapters import jsonio, registry
from adapters.errors import ProxyError, bad_request

from . import relay
from .accesslog import access_line
from .config import Config
from .context import RequestContext, new_request_id
from .dispatch import Dispatcher
from .keys import KeyRing
from .metrics import Recorder, exposition, sample_process
from .pools import BackendRuntime, build_backends
from .relay import Call, FrontendOps
from .routing import Router
from .tracing import Tracing

log = logging.getLogger("llm_proxy")

# Operation -> the frontend's (parse, render, stream encoder) method names.
_CHAT = ("parse_chat", "render_chat", "stream_encoder")
_COMPLETION = ("parse_completion", "render_completion", "completion_stream_encoder")
_EMBED = ("parse_embeddings", "render_embeddings", None)
_COUNT = ("parse_chat", "render_chat", None)
_GEMINI = {
    "generate": _CHAT,
    "count_tokens": _COUNT,
    "embed": _EMBED,
    "batch_embed": ("parse_batch_embeddings", "render_batch_embeddings", None),
}

# Route -> (frontend name, operations).  A route with one operation takes the model from the body;
# a route with several (Gemini: POST /v1beta/models/{model}:{action}) asks its frontend's
# `request_target` for the model, the operation and whether to stream.  Routes of frontends that
# are not installed are not served.
API_ROUTES: dict[str, tuple[str, dict[str, tuple[str, str, str | None]]]] = {
    "/v1/chat/completions": ("openai", {"chat": _CHAT}),
    "/v1/completions": ("openai", {"completions": _COMPLETION}),
    "/v1/embeddings": ("openai", {"embeddings": _EMBED}),
    "/v1/responses": ("openai-responses", {"responses": _CHAT}),
    "/v1/messages": ("anthropic", {"messages": _CHAT}),
    "/v1/messages/count_tokens": ("anthropic", {"count_tokens": _COUNT}),
    "/api/chat": ("ollama", {"chat": _CHAT}),
    "/api/generate": ("ollama", {"completions": _COMPLETION}),
    "/api/embed": ("ollama", {"embeddings": _EMBED}),
    "/v1beta/models/{target}": ("gemini", _GEMINI),
    "/v1/models/{target}": ("gemini", _GEMINI),  # POST only: GET /v1/models/{id} stays OpenAI's
}

ESTIMATE_HEADER = "x-llm-proxy-token-count"
LOGGED_BODY_MAX = 4096
MAX_REQUEST_ID = 128  # a longer client id is replaced (it travels to logs, backends and responses)


class Gateway:
    """Everything a worker builds once from the config: backends, router, frontends, metrics."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.backends: dict[str, BackendRuntime] = build_backends(cfg)
        self.router = Router(cfg, self.backends)
        self.dispatcher = Dispatcher(self.router, cfg.routing, list(self.backends))
        self.recorder = Recorder()
        self.keys = KeyRing(cfg.auth)
        self.frontends = {name: registry.frontend(name) for name in registry.FRONTENDS}
        self.routes = [path for path, (fname, _) in API_ROUTES.items() if fname in self.frontends]
        self.ready = False
        self.max_body = cfg.server.max_body_bytes
        self.tracing = Tracing(cfg.tracing)
        self.log_prompts = cfg.server.log_prompts

    # -- the API handlers ---------------------------------------------------------------------------
    def api_handler(self, route: str):
        fname, operations = API_ROUTES[route]
        frontend = self.frontends[fname]
        ops = {
            op: FrontendOps(getattr(frontend, p), getattr(frontend, r), getattr(frontend, e) if e else None)
            for op, (p, r, e) in operations.items()
        }

        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._handle(request, route, frontend, ops)

        return handler

    async def _handle(self, request: web.Request, route: str, frontend: Any, ops: dict[str, FrontendOps]) -> web.StreamResponse:
        rid = request.headers.get("x-request-id")
        ctx = RequestContext(rid if rid and len(rid) <= MAX_REQUEST_ID else new_request_id(), route)
        ctx.span = self.tracing.start_request(request.headers, route, ctx.request_id)
        gauge = self.recorder.in_flight(route)
        gauge.inc()
        resp: web.StreamResponse | None = None
        try:
            resp = await self._serve(request, ctx, frontend, ops)
        except ProxyError as err:
            resp = self._error(frontend, err, ctx)
        except (asyncio.CancelledError, ConnectionError):
            # The client went away (cancelled handler, or a write on its closed connection); the
            # relay has released the upstream exchange.
            ctx.status = 499
            raise
        except Exception:  # a bug: log it with its traceback, give the client a clean 500
            log.exception("internal error serving request %s", ctx.request_id)
            resp = self._error(frontend, ProxyError("server", "internal error in the gateway"), ctx)
        finally:
            gauge.dec()
            if resp is not None and not ctx.status:
                ctx.status = resp.status
            self._record(ctx)
            self.tracing.end_request(ctx.span, ctx.status, ctx.client_model, ctx.error_kind)
        return resp

    async def _serve(self, request: web.Request, ctx: RequestContext, frontend: Any,
                     ops: dict[str, FrontendOps]) -> web.StreamResponse:
        key = await self.keys.authenticate(request)
        body = await self._read_body(request)
        if self.log_prompts:  # explicit debug opt-in: request bodies are user data
            ctx.debug_body = body[:LOGGED_BODY_MAX].decode("utf-8", "replace")
        try:
            raw = jsonio.top_level_raw(body)
        except (jsonio.DecodeError, jsonio.ValidationError):
            raise bad_request("the request body is not a valid JSON object") from None
        if len(ops) == 1:
            ((op, op_methods),) = ops.items()
            model = _top_level(raw, "model", str)
            if model is None:
                raise bad_request("missing required field 'model' (a string)", param="model")
            stream = _top_level(raw, "stream", bool)
            ctx.stream = getattr(frontend, "default_stream", False) if stream is None else stream
        else:  # model, operation and streaming are in the URL
            model, op, ctx.stream = frontend.request_target(request.match_info["target"], request.query)
            op_methods = ops[op]
            ctx.route = f"{ctx.route.split('{', 1)[0]}*:{op}"
        ctx.client_model = model
        if key is not None and not key.may_use(model):
            raise ProxyError("permission", f"this API key may not use model {model!r}", param="model",
                             code="model_not_allowed")  # fmt: skip
        route = self.router.resolve(model)
        if route is None:
            raise ProxyError("not_found", f"model {model!r} is not configured on this gateway", param="model", code="model_not_found")
        ctx.model_label = route.config.name
        call = Call(request, ctx, frontend, op, body, raw, op_methods, self.tracing)
        if op == "count_tokens" and route.deployments[0].backend.family != frontend.name:
            return self._estimate_tokens(call)
        return await self.dispatcher.dispatch(call, route)

    def _estimate_tokens(self, call: Call) -> web.Response:
        frontend = call.frontend
        n = frontend.count_tokens_estimate(call.body)
        headers = {"x-request-id": call.ctx.request_id, "Server-Timing": call.ctx.server_timing(),
                   ESTIMATE_HEADER: "estimate"}
        return web.Response(body=frontend.render_token_count(n), content_type="application/json", headers=headers)

    async def _read_body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body:
            raise ProxyError("request_too_large", f"request body exceeds {self.max_body} bytes")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ProxyError("request_too_large", f"request body exceeds {self.max_body} bytes") from None

    def _error(self, frontend: Any, err: ProxyError, ctx: RequestContext) -> web.Response:
        ctx.error_kind = err.kind
        status, body = frontend.render_error(err)
        headers = {"x-request-id": ctx.request_id, "Server-Timing": ctx.server_timing()}
        if err.retry_after is not None:
            headers["Retry-After"] = str(max(0, round(err.retry_after)))
        if ctx.deployment:
            headers[relay.DEPLOYMENT_HEADER] = ctx.deployment
        ctx.status = status
        return web.Response(status=status, body=body, content_type="application/json", headers=headers)

    def _record(self, ctx: RequestContext) -> None:
        total = ctx.elapsed()
        ttft = None
        if ctx.first_write is not None and ctx.stream:
            ttft = ctx.first_write - ctx.t0
            added = ttft - (ctx.upstream_ttfb or 0.0)
        else:
            added = total - ctx.upstream_time
        backend = ctx.backend or "none"
        self.recorder.observe(
            ctx.route, backend, ctx.model_label, ctx.stream, ctx.status, max(0.0, added),
            ctx.upstream_time if ctx.backend else None, ttft,
        )  # fmt: skip
        if ctx.usage is not None:
            self.recorder.tokens(backend, ctx.model_label, ctx.usage.input_tokens, ctx.usage.output_tokens)
        access_line(ctx, total, added, ttft)

    # -- other endpoints ------------------------------------------------------------------------------
    async def _model_names(self, request: web.Request) -> list[str]:
        """The configured models the caller's key may use."""
        key = await self.keys.authenticate(request)
        names = self.router.names()
        return names if key is None or key.allows is None else [n for n in names if key.allows(n)]

    async def models(self, request: web.Request) -> web.Response:
        try:
            names = await self._model_names(request)
        except ProxyError as err:
            return self._error(self.frontends["openai"], err, RequestContext(new_request_id(), "/v1/models"))
        if "anthropic-version" in request.headers:
            data = [{"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"} for n in names]
            body = {"data": data, "has_more": False, "first_id": names[0] if names else None, "last_id": names[-1] if names else None}
        else:
            body = {"object": "list", "data": [_openai_model(n) for n in names]}
        return web.Response(body=jsonio.dumps(body), content_type="application/json")

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        try:
            key = await self.keys.authenticate(request)
        except ProxyError as err:
            return self._error(self.frontends["openai"], err, RequestContext(new_request_id(), "/v1/models"))
        if self.router.resolve(name) is None or (key is not None and not key.may_use(name)):
            err = ProxyError("not_found", f"model {name!r} is not configured on this gateway", code="model_not_found")
            status, body = self.frontends["openai"].render_error(err)
            return web.Response(status=status, body=body, content_type="application/json")
        return web.Response(body=jsonio.dumps(_openai_model(name)), content_type="application/json")

    async def ollama_tags(self, request: web.Request) -> web.Response:
        try:
            names = await self._model_names(request)
        except ProxyError as err:
            return self._error(self.frontends["ollama"], err, RequestContext(new_request_id(), "/api/tags"))
        body = self.frontends["ollama"].render_models(names)
        return web.Response(body=body, content_type="application/json")

    async def ollama_version(self, request: web.Request) -> web.Response:
        return web.Response(body=self.frontends["ollama"].render_version(), content_type="application/json")

    async def metrics(self, request: web.Request) -> web.Response:
        sample_process()
        body, content_type = exposition()
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = content_type
        return resp

    async def live(self, request: web.Request) -> web.Response:
        # The pid tells multi-worker deployments (and their tests) which process answered.
        return web.json_response({"status": "ok", "pid": os.getpid()})

    async def ready_check(self, request: web.Request) -> web.Response:
        health = self.dispatcher.health()  # circuit-breaker state per backend and deployment
        backends = {
            name: {"pool": "open" if b.session is not None else "closed", **health.get(name, {})}
            for name, b in self.backends.items()
        }
        ok = self.ready and all(b.session is not None for b in self.backends.values())
        return web.json_response({"status": "ready" if ok else "not ready", "backends": backends}, status=200 if ok else 503)


def _openai_model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "llm-proxy"}


def _top_level(raw: dict[str, Any], key: str, typ: type) -> Any:
    value = raw.get(key)
    if value is None:
        return None
    try:
        decoded = jsonio.loads(value)
    except jsonio.DecodeError:
        return None
    return decoded if isinstance(decoded, typ) else None
