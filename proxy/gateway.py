"""The Gateway: everything a worker builds once from a config (backends, router, dispatcher, keys,
metrics, tracing, and one handler for every route a registered frontend declares), and the endpoints
that belong to no format (metrics, health).  A config reload builds a new Gateway (proxy/reload.py)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from aiohttp import web

from adapters import registry
from adapters.base import ApiRoute, Frontend, ModelInfo, ModelList, StaticInfo, StoreRoute
from adapters.errors import ProxyError

from .config import Config
from .context import RequestContext, new_request_id
from .dispatch import Dispatcher
from .handlers import ApiHandler, error_response, read_body
from .admin import AdminAPI
from .aiohttp_io import AiohttpInbound, answer_response
from .keys import KeyRing
from .limiter import Limiter
from .metrics import Recorder, exposition, sample_process
from .pools import BackendRuntime, build_backends
from .routing import Router, check_model_name
from .state.base import StateStore, StoreUnavailable, open_store
from .stored import Stored
from .tracing import Tracing

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gateway:
    """Everything a worker builds once from the config: backends, router, frontends, metrics."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.backends: dict[str, BackendRuntime] = build_backends(cfg)
        self.router = Router(cfg, self.backends)
        self.dispatcher = Dispatcher(self.router, cfg.routing, list(self.backends))
        self.recorder = Recorder()
        self.frontends: dict[str, Frontend] = {name: registry.frontend(name) for name in registry.FRONTENDS}
        # Speaks for the paths no frontend claims (and the gateway's own endpoints).
        self.default_frontend = self.frontends[registry.DEFAULT_FRONTEND]
        self.error_formats = [(prefix, f) for f in self.frontends.values() for prefix in f.error_prefixes]
        self.keys = KeyRing(cfg.auth)
        self.store, self.limiter, self.admin = self._limits(cfg)
        # Stored responses share the limits' store, or open their own (lazily: no file until used).
        self.stored = Stored(self.store or open_store(cfg.state.url, cfg.state.timeout), cfg.responses,
                             cfg.server.max_body_bytes)
        self.ready = False
        self.max_body = cfg.server.max_body_bytes
        self.read_timeout = cfg.server.request_read_timeout
        self.tracing = Tracing(cfg.tracing)
        self.log_prompts = cfg.server.log_prompts
        # (method, path) -> handler, for every route every frontend declares; the API calls among them
        # take a serverio.Inbound (either server), the others aiohttp's web.Request.
        self.api_routes: set[tuple[str, str]] = set()
        self.handlers: dict[tuple[str, str], Handler] = self._build_handlers()

    def _limits(self, cfg: Config) -> tuple[StateStore | None, Limiter, AdminAPI | None]:
        """The state store (only when some key needs it: keys without limits never touch it, and are
        served while it is unreachable; opened lazily), the limiter and the admin API."""
        auth = cfg.auth
        admin_on = auth is not None and auth.admin_key is not None
        needed = admin_on or any(k.limited for k in self.keys.config.values())
        store = open_store(cfg.state.url, cfg.state.timeout) if needed else None
        # A killed worker's in-flight leases expire after twice the longest exchange.
        lease_ttl = 2 * max((b.timeouts.total for b in cfg.backends.values()), default=600.0)
        admin = None
        if admin_on:
            self.keys.store = store  # run-time keys
            admin = AdminAPI(auth.admin_key, self.keys, store, self.default_frontend.render_error)
        return store, Limiter(cfg.state, store, lease_ttl), admin

    def _build_handlers(self) -> dict[tuple[str, str], Handler]:
        handlers: dict[tuple[str, str], Handler] = {}
        listings: dict[str, list[tuple[ModelList, Frontend]]] = {}
        for frontend in self.frontends.values():
            for route in frontend.routes():
                if isinstance(route, ModelList):
                    listings.setdefault(route.path, []).append((route, frontend))
                    continue
                if isinstance(route, ApiRoute):
                    handler: Handler = ApiHandler(self, route, frontend)
                    key = (route.method, route.path)
                    self.api_routes.add(key)
                elif isinstance(route, StoreRoute):
                    handler = self.stored.handler(route, frontend, self._owner, self._read_body)
                    key = (route.method, route.path)
                elif isinstance(route, ModelInfo):
                    handler, key = self._model_info(route, frontend), ("GET", route.path)
                else:
                    handler, key = self._static(route, frontend), ("GET", route.path)
                if key in handlers:
                    raise ValueError(f"two frontends serve {key[0]} {key[1]}")
                handlers[key] = handler
        for path, listing in listings.items():
            handlers[("GET", path)] = self._model_list(path, listing)
        return handlers

    # -- what the frontends declare beyond their API calls ---------------------------------------------
    async def _owner(self, request: web.Request, frontend: Frontend) -> str:
        """Whose stored objects a request sees: its key's name ("" with auth off: one shared space)."""
        key = await self.keys.authenticate(request, frontend.client_key)
        return key.name if key is not None else ""

    async def _read_body(self, request: web.Request) -> bytes:
        return await read_body(AiohttpInbound(request), self.max_body, self.read_timeout)

    async def _model_names(self, request: web.Request, frontend: Frontend) -> list[str]:
        """The configured models the caller's key may use."""
        key = await self.keys.authenticate(request, frontend.client_key)
        names = self.router.names()
        return names if key is None or key.allows is None else [n for n in names if key.allows(n)]

    def _model_list(self, path: str, listing: list[tuple[ModelList, Frontend]]) -> Handler:
        # A format that asks for a header answers the requests carrying it; the others fall through
        # to the one format that asks for none.
        by_header = [(r.when_header, r, f) for r, f in listing if r.when_header]
        default = next(((r, f) for r, f in listing if not r.when_header), None)

        async def handler(request: web.Request) -> web.StreamResponse:
            chosen = next(((r, f) for h, r, f in by_header if h in request.headers), default)
            if chosen is None:
                return await self.unrouted(request)
            route, frontend = chosen
            try:
                names = await self._model_names(request, frontend)
            except ProxyError as err:
                return answer_response(error_response(frontend, err, RequestContext(new_request_id(), path)))
            return web.Response(body=route.render(names), content_type="application/json")

        return handler

    def _model_info(self, route: ModelInfo, frontend: Frontend) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            name = request.match_info["model"]
            ctx = RequestContext(new_request_id(), route.path)
            try:
                key = await self.keys.authenticate(request, frontend.client_key)
                check_model_name(name)
            except ProxyError as err:
                return answer_response(error_response(frontend, err, ctx))
            if self.router.resolve(name) is None or (key is not None and not key.may_use(name)):
                err = ProxyError("not_found", f"model {name!r} is not configured on this gateway", code="model_not_found")
                return answer_response(error_response(frontend, err, ctx))
            return web.Response(body=route.render(name), content_type="application/json")

        return handler

    def _static(self, route: StaticInfo, frontend: Frontend) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                await self.keys.authenticate(request, frontend.client_key)
            except ProxyError as err:
                return answer_response(error_response(frontend, err, RequestContext(new_request_id(), route.path)))
            return web.Response(body=route.render(), content_type="application/json")

        return handler

    # -- the gateway's own endpoints ----------------------------------------------------------------------
    # Each is served through `endpoint`: authenticated like every other route (unless `auth.public`
    # lists its path), errors in the format of the API the path belongs to.
    async def endpoint(self, method: str, request: web.Request) -> web.StreamResponse:
        if method not in ALWAYS_PUBLIC:
            try:
                await self.keys.authenticate(request, self._format_of(request.path).client_key)
            except ProxyError as err:
                return self.error(request, err)
        return await getattr(self, method)(request)

    def _format_of(self, path: str) -> Frontend:
        """The frontend that claims `path` (`Frontend.error_prefixes`), else the default one."""
        return next((f for prefix, f in self.error_formats if path.startswith(prefix)), self.default_frontend)

    def error(self, request: web.Request, err: ProxyError) -> web.Response:
        """`err` for a request outside the API routes, in the format of the frontend claiming its path."""
        path = request.path
        return answer_response(error_response(self._format_of(path), err, RequestContext(new_request_id(), path)))

    async def root(self, request: web.Request) -> web.Response:
        # Clients probe the base URL for connectivity (Claude Code sends HEAD /).
        return web.json_response({"status": "ok"})

    async def unrouted(self, request: web.Request) -> web.Response:
        """Unknown path (404) or method (405), as JSON in the caller's format; the path is not echoed."""
        allowed = await _allowed_methods(request)
        if not allowed:
            return self.error(request, ProxyError("not_found", "no such endpoint on this gateway", code="unknown_url"))
        err = ProxyError("invalid_request", f"method {request.method} is not allowed here; allowed: {', '.join(allowed)}",
                         code="method_not_allowed")
        resp = self.error(request, err)
        resp.set_status(405)
        resp.headers["Allow"] = ", ".join(allowed)
        return resp

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
            name: {"pool": "open" if b.client is not None else "closed", **health.get(name, {}),
                   # the server's own load gauges: informative only, a failing scrape never fails readiness
                   **({"load": b.load.report()} if b.load is not None else {})}
            for name, b in self.backends.items()
        }
        ok = self.ready and all(b.client is not None for b in self.backends.values())
        extra = {}
        if self.store is not None:  # only when some key needs it (limits or the admin API)
            extra["state"] = state = await self._store_health()
            ok = ok and (state["status"] == "ok" or self.cfg.state.on_error == "open")
        body = {"status": "ready" if ok else "not ready", "backends": backends, **extra}
        return web.json_response(body, status=200 if ok else 503)

    async def _store_health(self) -> dict[str, str]:
        """Whether the state store answers (within state.timeout).  Unreachable makes the pod not ready
        with `state.on_error: closed`, since it would refuse every limited request; with `open` it
        serves them unmetered, so it stays ready.  The URL is never shown (it may hold a password)."""
        kind = "redis" if self.cfg.state.url.startswith(("redis", "unix")) else "sqlite"
        try:
            await self.store.ping()
        except StoreUnavailable:
            return {"store": kind, "status": "unreachable"}
        return {"store": kind, "status": "ok"}


UNROUTED = "unrouted"  # name of the catch-all route, registered last (every path and method left)
# Answered without a key: a connectivity probe, and the 404/405 of routes that do not exist (the
# route table is no secret; a 401 there would only hide a typo).
ALWAYS_PUBLIC = frozenset({"root", "unrouted"})


async def _allowed_methods(request: web.Request) -> list[str]:
    """The methods other routes take on this path (empty: the path itself is unknown)."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name == UNROUTED:
            continue
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    return sorted(allowed)
