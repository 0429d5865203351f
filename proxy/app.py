"""The aiohttp application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from .config import Config
from .handlers import API_ROUTES, Gateway
from .pools import pools_ctx

GATEWAY = web.AppKey("gateway", Gateway)


def create_app(cfg: Config) -> web.Application:
    gw = Gateway(cfg)
    # aiohttp enforces the body limit while reading; the handler turns it into a 413 in the
    # caller's format.
    app = web.Application(client_max_size=cfg.server.max_body_bytes)
    app[GATEWAY] = gw
    app.cleanup_ctx.append(pools_ctx(gw.backends))
    app.cleanup_ctx.append(_readiness(gw))
    for path in API_ROUTES:
        app.router.add_post(path, gw.api_handler(path))
    app.router.add_get("/v1/models", gw.models)
    app.router.add_get("/v1/models/{model:.+}", gw.model)
    app.router.add_get("/metrics", gw.metrics)
    app.router.add_get("/health/live", gw.live)
    app.router.add_get("/health/ready", gw.ready_check)
    return app


def _readiness(gw: Gateway):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        gw.ready = True
        yield
        gw.ready = False

    return ctx
