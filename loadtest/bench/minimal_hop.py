"""The minimal aiohttp + uvloop hop: the reference of `llm-proxy bench --compare-hop minimal`.

    python -m loadtest.bench.minimal_hop --port P --route NAME=URL [--route ...]

`POST /NAME/rest/of/path` goes to `URL/rest/of/path`.  The handler reads the request body, posts it
with one shared `ClientSession` and returns the answer's bytes; an answer without a Content-Length (a
stream) is relayed chunk by chunk as the chunks arrive.  Nothing is parsed and nothing is built per
request that can be built at start-up (the upstream URL prefix and the request headers are bound to
the route when the app starts).  This is the hop of issue 16's table, and less work than
`bare_hop.py` (which always streams the answer and builds its header dicts per request): the least
any Python proxy on this stack can cost.
"""

from __future__ import annotations

from aiohttp import web

from loadtest.bench import bare_hop
from loadtest.bench.bare_hop import SESSION, session_ctx

# Built once: the benchmark's backend credentials (the emulators, like real backends, refuse a request
# without a key), sent to every route whatever its format -- the hop knows no formats.
REQUEST_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer bench", "x-api-key": "bench",
                   "anthropic-version": "2023-06-01"}  # fmt: skip


def forwarder(base: str):
    """The handler of one route: `base` is the upstream URL the tail of the path is appended to."""

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        url = base + request.match_info["tail"]
        async with request.app[SESSION].post(url, data=body, headers=REQUEST_HEADERS) as up:
            content_type = up.headers.get("Content-Type", "application/octet-stream")
            if up.content_length is not None:
                return web.Response(body=await up.read(), status=up.status, headers={"Content-Type": content_type})
            resp = web.StreamResponse(status=up.status, headers={"Content-Type": content_type})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    return forward


async def _health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app(routes: dict[str, str]) -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    for name, url in routes.items():
        app.router.add_post(f"/{name}/{{tail:.+}}", forwarder(url.rstrip("/") + "/"))
    app.router.add_get("/health", _health)
    return app


if __name__ == "__main__":
    bare_hop.main(create=create_app, prog="minimal_hop")
