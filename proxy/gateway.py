"""The Gateway: everything a worker builds once from a config (backends, router, dispatcher, frontends,
one handler per API route, keys, metrics, tracing), and the endpoints that are not an API format's own
(model lists, metrics, health).  A config reload builds a new Gateway (proxy/reload.py)."""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from adapters import jsonio, registry
from adapters.errors import ProxyError

from .config import Config
from .context import RequestContext, new_request_id
from .dispatch import Dispatcher
from .handlers import API_ROUTES, ApiHandler, error_response
from .admin import AdminAPI
from .keys import KeyRing
from .limiter import Limiter
from .metrics import Recorder, exposition, sample_process
from .pools import BackendRuntime, build_backends
from .routing import Router, check_model_name
from .state.base import StateStore, open_store
from .tracing import Tracing


class Gateway:
    """Everything a worker builds once from the config: backends, router, frontends, metrics."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.backends: dict[str, BackendRuntime] = build_backends(cfg)
        self.router = Router(cfg, self.backends)
        self.dispatcher = Dispatcher(self.router, cfg.routing, list(self.backends))
        self.recorder = Recorder()
        self.frontends = {name: registry.frontend(name) for name in registry.FRONTENDS}
        self.keys = KeyRing(cfg.auth)
        self.store, self.limiter, self.admin = self._limits(cfg)
        self.routes = [path for path, (fname, _) in API_ROUTES.items() if fname in self.frontends]
        self.ready = False
        self.max_body = cfg.server.max_body_bytes
        self.tracing = Tracing(cfg.tracing)
        self.log_prompts = cfg.server.log_prompts

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
            admin = AdminAPI(auth.admin_key, self.keys, store, self.frontends["openai"].render_error)
        return store, Limiter(cfg.state, store, lease_ttl), admin

    def api_handler(self, route: str) -> ApiHandler:
        fname, operations = API_ROUTES[route]
        return ApiHandler(self, route, self.frontends[fname], operations)

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
            return error_response(self.frontends["openai"], err, RequestContext(new_request_id(), "/v1/models"))
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
            check_model_name(name)
        except ProxyError as err:
            return error_response(self.frontends["openai"], err, RequestContext(new_request_id(), "/v1/models"))
        if self.router.resolve(name) is None or (key is not None and not key.may_use(name)):
            err = ProxyError("not_found", f"model {name!r} is not configured on this gateway", code="model_not_found")
            status, body = self.frontends["openai"].render_error(err)
            return web.Response(status=status, body=body, content_type="application/json")
        return web.Response(body=jsonio.dumps(_openai_model(name)), content_type="application/json")

    async def ollama_tags(self, request: web.Request) -> web.Response:
        try:
            names = await self._model_names(request)
        except ProxyError as err:
            return error_response(self.frontends["ollama"], err, RequestContext(new_request_id(), "/api/tags"))
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
