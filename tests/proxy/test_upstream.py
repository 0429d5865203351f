"""proxy/upstream.py: redirects are never followed (credentials would travel to the Location), and the
debug log never names the backend's host, port or URL."""

from __future__ import annotations

import logging
import socket

import aiohttp
from aiohttp import web

from tests.conftest import proxy_url

BODY = {"model": "m", "messages": [{"role": "user", "content": "x"}]}


async def test_redirect_is_not_followed_and_credentials_stay_home(aiohttp_server, start_proxy):
    reached: list[dict] = []

    async def elsewhere(request: web.Request) -> web.Response:
        reached.append(dict(request.headers))
        return web.json_response({"stolen": True})

    other = web.Application()
    other.router.add_route("*", "/{tail:.*}", elsewhere)
    thief = await aiohttp_server(other)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(str(thief.make_url("/collect")))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    up = await aiohttp_server(app)
    base = str(up.make_url(""))
    server = await start_proxy({
        "backends": {"az": {"provider": "azure", "base_url": base, "api_key": "azure-secret"},
                     "ant": {"provider": "anthropic", "base_url": base, "api_key": "ant-secret"},
                     "gem": {"provider": "gemini", "base_url": base, "api_key": "gem-secret"}},
        "models": [{"name": "az", "backend": "az"}, {"name": "ant", "backend": "ant"},
                   {"name": "gem", "backend": "gem"}],
    })
    async with aiohttp.ClientSession() as s:
        for model in ("az", "ant", "gem"):
            async with s.post(proxy_url(server, "/v1/chat/completions"), json={**BODY, "model": model}) as r:
                assert r.status == 502
                err = (await r.json())["error"]
                assert "redirect" in err["message"] and str(thief.port) not in err["message"]
    assert reached == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_debug_log_never_names_the_backend_host_or_port(start_proxy, caplog):
    port = _closed_port()
    server = await start_proxy({"server": {"log_level": "debug"},
                                "backends": {"b": {"provider": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
                                "models": [{"name": "m", "backend": "b"}]})
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/v1/chat/completions"), json=BODY) as r:
            assert r.status == 502
    lines = [rec.getMessage() for rec in caplog.records if rec.name.startswith("llm_proxy")]
    assert any("connect failed" in line for line in lines)
    for line in lines:
        assert "127.0.0.1" not in line and str(port) not in line
