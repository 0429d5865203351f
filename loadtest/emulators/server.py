"""Run emulator apps on loopback (tests, the demo and the benchmark harness share this)."""

from __future__ import annotations

from aiohttp import web


async def start(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Start `app` on host:port (0 = any free port); return the runner and the root URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    sock = site._server.sockets[0]  # type: ignore[union-attr]  # aiohttp keeps no public accessor
    bound = sock.getsockname()[1]
    return runner, f"http://{host}:{bound}"
