"""Config reload on SIGHUP without dropping in-flight requests.

How this works.  The app's routes call through a `GatewaySwitch`, which holds the Gateway that new
requests use.  A reload builds a complete new Gateway from the file (config, backends, routes); if
any step fails the error is logged and the old Gateway stays.  Otherwise the new one's pools are
opened and it becomes current in one assignment: requests already running keep the Gateway (and
Route objects) they started with, new ones get the new state.  The old Gateway's pools are closed
once its last request has finished.  Breaker, latency and concurrency state starts afresh with the
new Gateway; `server.*` settings (address, workers, drain timeout) need a restart.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from .config import Config
from .gateway import Gateway

log = logging.getLogger("llm_proxy")

Handler = Callable[[web.Request], "asyncio.Future[web.StreamResponse]"]


class GatewaySwitch:
    def __init__(self, gw: Gateway) -> None:
        self.current = gw
        self._active: dict[int, int] = {id(gw): 0}
        self._idle: dict[int, asyncio.Event] = {}
        self._retiring: dict[asyncio.Task, Gateway] = {}

    # -- routing through the current gateway ------------------------------------------------------
    def route(self, method: str, path: str) -> Handler:
        """A route some frontend declares, served by whichever gateway is current."""

        async def handler(request: web.Request) -> web.StreamResponse:
            gw = self.current
            key = id(gw)
            self._active[key] += 1
            try:
                return await gw.handlers[(method, path)](request)
            finally:
                self._active[key] -= 1
                if not self._active[key] and key in self._idle:
                    self._idle[key].set()

        return handler

    def forward(self, method: str) -> Handler:
        """An endpoint of the gateway itself (metrics, health) of whichever gateway is current."""

        async def handler(request: web.Request) -> web.StreamResponse:
            return await self.current.endpoint(method, request)

        return handler

    def admin(self, name: str) -> Handler:
        """An admin API endpoint of the current gateway (404 once a reload turned the admin API off)."""

        async def handler(request: web.Request) -> web.StreamResponse:
            api = self.current.admin
            if api is None:
                return await self.current.unrouted(request)
            return await getattr(api, name)(request)

        return handler

    # -- lifetime -------------------------------------------------------------------------------------
    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        """`cleanup_ctx`: open the pools at start-up, close every gateway's pools at shutdown."""
        _open(self.current)
        try:
            yield
        finally:
            self.current.ready = False
            for task in self._retiring:
                task.cancel()
            await asyncio.gather(*self._retiring, return_exceptions=True)
            await _close(self.current)

    async def reload(self, load: Callable[[], Config]) -> bool:
        """Build a gateway from `load()` and switch to it; False (old one kept) if anything fails."""
        try:
            new = Gateway(load())
        except Exception as exc:  # noqa: BLE001 - any failure keeps the old config: a reload must not kill the server
            log.error("config reload refused, keeping the running config: %s", exc)
            return False
        self._active[id(new)] = 0
        _open(new)
        old, self.current = self.current, new
        old.ready = False
        task = asyncio.ensure_future(self._retire(old))
        self._retiring[task] = old
        task.add_done_callback(self._retiring.pop)
        log.info("config reloaded: %d backends, %d models", len(new.backends), len(new.cfg.models))
        return True

    async def _retire(self, old: Gateway) -> None:
        key = id(old)
        try:
            if self._active[key]:
                event = self._idle[key] = asyncio.Event()
                await event.wait()
        finally:
            await _close(old)
            self._idle.pop(key, None)
            self._active.pop(key, None)


def _open(gw: Gateway) -> None:
    for b in gw.backends.values():
        b.open()
    gw.ready = True


async def _close(gw: Gateway) -> None:
    gw.ready = False
    for b in gw.backends.values():
        await b.close()
    if gw.store is not None:
        await gw.store.close()
    if gw.stored.store is not gw.store:
        await gw.stored.store.close()
    await asyncio.to_thread(gw.tracing.shutdown)  # flushes spans: may wait on the collector


def sighup_reload(switch: GatewaySwitch, load: Callable[[], Config]):
    """An `on_startup` hook that reloads the config from `load()` on every SIGHUP."""

    async def install(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        reloads: set[asyncio.Task] = set()

        def on_hup() -> None:
            task = asyncio.ensure_future(switch.reload(load))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)

    return install
