"""One worker's listening servers, from start-up to a graceful stop.

How this works.  The aiohttp application (proxy/app.py) is set up with an `AppRunner`: that runs its
start-up hooks (pools, readiness, SIGHUP reload) and gives the protocol factory of aiohttp's server.
With `server.http: raw` (the default) the port is the raw server's (proxy/rawserver.py): it serves
the API calls itself and hands every other connection (metrics, health, model lists, admin, stored
responses, anything its fast path does not take) to aiohttp's protocol, which then owns it.  With
`server.http: aiohttp` aiohttp listens and serves everything, the API calls through
proxy/aiohttp_io.py.

Stopping (SIGTERM, SIGINT, or `Served.close`): stop listening, close idle keep-alive connections, let
running requests and streams finish for up to `server.drain_timeout`, cancel what is left, then run
the app's clean-up (closing the pools).  The tests serve the gateway through this same module.
"""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web
from yarl import URL

from .app import SWITCH
from .config import Config
from .rawserver import RawServer


class Served:
    """A running worker: where it listens, and how to stop it."""

    def __init__(self, app: web.Application, runner: web.AppRunner, raw: RawServer | None, host: str, port: int,
                 drain_timeout: float) -> None:  # fmt: skip
        self.app, self.runner, self.raw = app, runner, raw
        self.host, self.port = host, port
        self.drain_timeout = drain_timeout
        self._closed = False

    def make_url(self, path: str = "") -> URL:
        return URL.build(scheme="http", host=self.host, port=self.port).join(URL(path))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.raw is not None:
            await self.raw.shutdown(self.drain_timeout)
        await self.runner.cleanup()  # aiohttp's own connections (handed over), then the app's clean-up


async def start(cfg: Config, app: web.Application, host: str, port: int, *, reuse_port: bool = False) -> Served:
    server = cfg.server
    runner = web.AppRunner(
        app,
        handle_signals=False,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=server.drain_timeout,
        # A connection that has not sent a whole request line and headers (or sits idle between
        # requests) this long is closed: the header half of the slowloris bound.
        keepalive_timeout=server.request_read_timeout,
    )
    await runner.setup()
    try:
        if server.http == "aiohttp":
            site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
            await site.start()
            return Served(app, runner, None, host, runner.addresses[0][1], server.drain_timeout)
        switch = app[SWITCH]
        routes = [(method, path, switch.route(method, path)) for method, path in sorted(switch.current.api_routes)]
        raw = RawServer(routes, runner.server, max_body=server.max_body_bytes, keepalive_timeout=server.request_read_timeout)
        await raw.start(host, port, reuse_port=reuse_port)
        return Served(app, runner, raw, host, raw.port, server.drain_timeout)
    except BaseException:
        await runner.cleanup()
        raise


def run(cfg: Config, app: web.Application, host: str, port: int, *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully (in the running event loop policy: uvloop)."""

    async def main() -> None:
        served = await start(cfg, app, host, port, reuse_port=reuse_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await served.close()

    asyncio.run(main())
