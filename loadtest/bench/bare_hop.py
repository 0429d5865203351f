"""The floor reference: a bare aiohttp + uvloop hop that forwards request bytes and relays the answer.

    python -m loadtest.bench.bare_hop --port P --route NAME=URL [--route ...]

`POST /NAME/rest/of/path` goes to `URL/rest/of/path` with the same body and content type; the response
body is relayed chunk by chunk.  No parsing, routing table, metrics or logging: what any Python proxy
on this stack costs at least.
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
ROUTES = web.AppKey("routes", dict)


async def forward(request: web.Request) -> web.StreamResponse:
    name, _, rest = request.match_info["tail"].partition("/")
    upstream = request.app[ROUTES][name] + "/" + rest
    body = await request.read()
    headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
    async with request.app[SESSION].post(upstream, data=body, headers=headers) as up:
        resp = web.StreamResponse(status=up.status, headers={"Content-Type": up.headers.get("Content-Type", "")})
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def session_ctx(app: web.Application):
    """One shared client session per hop process, closed at shutdown."""
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2048))
    yield
    await app[SESSION].close()


def create_app(routes: dict[str, str]) -> web.Application:
    app = web.Application()
    app[ROUTES] = routes
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{tail:.+}", forward)
    app.router.add_get("/health", lambda _: web.Response(text="ok"))
    return app


def main(argv: list[str] | None = None, create=create_app, prog: str = "bare_hop") -> None:
    """Serve `create(routes)` on 127.0.0.1 (the minimal hop reuses this with its own app)."""
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--route", action="append", default=[], help="NAME=URL")
    args = p.parse_args(argv)
    import uvloop

    uvloop.install()
    routes = dict(r.split("=", 1) for r in args.route)
    web.run_app(create(routes), host="127.0.0.1", port=args.port, access_log=None, print=None,
                handler_cancellation=True)  # fmt: skip


if __name__ == "__main__":
    main()
