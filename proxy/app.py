"""The aiohttp application factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from .accesslog import flush_at_exit
from .aiohttp_io import aiohttp_route
from .config import Config
from .gateway import UNROUTED, Gateway
from .metrics import PROCESS_SAMPLE_INTERVAL, sample_process
from .reload import GatewaySwitch

# Names of the app's long-lived background tasks (leak checks tell them from request work by it).
BACKGROUND_TASK_PREFIX = "llm-proxy-background:"

GATEWAY = web.AppKey("gateway", Gateway)  # the gateway built at start-up
SWITCH = web.AppKey("gateway_switch", GatewaySwitch)  # `.current`: the live one (changes on reload)


def create_app(cfg: Config) -> web.Application:
    gw = Gateway(cfg)
    # aiohttp enforces the body limit while reading; the handler turns it into a 413 in the
    # caller's format.
    app = web.Application(client_max_size=cfg.server.max_body_bytes)
    app[GATEWAY] = gw
    # Routes go through the switch so that a SIGHUP reload can swap the gateway under them.
    switch = app[SWITCH] = GatewaySwitch(gw)
    app.cleanup_ctx.append(switch.lifetime)  # opens pools + readiness; closes every gateway's pools
    app.on_cleanup.append(_flush_access_log)
    app.cleanup_ctx.append(_process_sampler)
    for method, path in gw.handlers:  # every route the registered frontends declare
        if (method, path) in gw.api_routes:
            app.router.add_route(method, path, aiohttp_route(switch.route(method, path)))
        elif method == "GET":
            app.router.add_get(path, switch.route(method, path))  # (answers HEAD too)
        else:
            app.router.add_route(method, path, switch.route(method, path))
    if gw.admin is not None:  # turning the admin API on needs a restart; off works with a reload
        for method, path, endpoint in gw.admin.routes():
            app.router.add_route(method, path, switch.admin(endpoint.__name__))
    app.router.add_get("/metrics", switch.forward("metrics"))
    app.router.add_get("/health/live", switch.forward("live"))
    app.router.add_get("/health/ready", switch.forward("ready_check"))
    app.router.add_get("/", switch.forward("root"))
    # Last: unknown paths and methods get a JSON 404 / 405 in the caller's format, not aiohttp's text.
    app.router.add_route("*", "/{tail:.*}", switch.forward("unrouted"), name=UNROUTED)
    return app


async def _flush_access_log(app: web.Application) -> None:
    flush_at_exit()


async def _process_sampler(app: web.Application) -> AsyncIterator[None]:
    """Every worker refreshes its own CPU and memory figures: a scrape reaches only one worker (the
    scraper keeps its connection), but /metrics sums the figures of all of them."""

    async def loop() -> None:
        while True:
            sample_process()
            await asyncio.sleep(PROCESS_SAMPLE_INTERVAL)

    task = asyncio.get_running_loop().create_task(loop(), name=BACKGROUND_TASK_PREFIX + "process-sampler")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
