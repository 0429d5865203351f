"""BackendRuntime's scrubbing: nothing an upstream quotes of its own address or credentials reaches a
client -- neither in the error's message, nor its code or param, nor as a bare host or a masked key."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp import web

from adapters.errors import ProxyError
from proxy.config import load_config_dict
from proxy.pools import build_backends
from tests.conftest import proxy_url

KEY = "sk-LEAKY-backend-secret-6789"


def runtime(base_url: str = "http://10.1.2.3:8000/v1", **extra):
    cfg = load_config_dict({"backends": {"b": {"provider": "openai", "base_url": base_url, "api_key": KEY,
                                                "headers": {"x-tenant-token": "tenant-secret"}, **extra}}})
    return build_backends(cfg)["b"]


@pytest.mark.parametrize("text", [
    f"auth=[Bearer {KEY}]", "host 10.1.2.3 refused", "at 10.1.2.3:8000", "see http://10.1.2.3:8000/v1/chat",
    "Incorrect API key provided: sk-LEAKY****6789.", "key sk-proj-********************abcd is invalid",
    "token tenant-secret rejected",
])
def test_scrub_text_every_field(text):
    rt = runtime()
    err = rt.scrub(ProxyError("authentication", text, code=text, param=text))
    for value in (err.message, err.code, err.param):
        assert "10.1.2.3" not in value and "LEAKY" not in value and "6789" not in value
        assert "tenant-secret" not in value and "abcd" not in value
    assert rt.scrub_bytes(text.encode()).decode() == err.message


def test_scrub_leaves_plain_text_alone():
    assert runtime().scrub_text("model 'x' not found (HTTP 404) * 2") == "model 'x' not found (HTTP 404) * 2"


async def test_error_code_param_host_and_masked_key_never_reach_the_client(aiohttp_server, start_proxy):
    """An upstream quoting its credentials in every field of its error, on the pass-through and the
    translated path, non-stream and stream."""
    async def leaky(request: web.Request) -> web.Response:
        host = request.host.partition(":")[0]
        err = {"message": f"Incorrect API key provided: sk-LEAK****6789 (from {host})",
               "type": "invalid_request_error", "code": f"auth=[Bearer {KEY}]", "param": f"{host}:{request.url.port}"}
        return web.json_response({"error": err}, status=401)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", leaky)
    up = await aiohttp_server(app)
    server = await start_proxy({"backends": {"b": {"provider": "openai", "base_url": str(up.make_url("/v1")), "api_key": KEY}},
                                "models": [{"name": "m", "backend": "b"}]})
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    outs = []
    async with aiohttp.ClientSession() as s:
        for path in ("/v1/chat/completions", "/v1/messages"):  # pass-through, then translated
            for stream in (False, True):
                async with s.post(proxy_url(server, path), json={**body, "stream": stream}) as r:
                    assert r.status == 401
                    outs.append(await r.text())
    for out in outs:
        json.loads(out)
        assert KEY not in out and "LEAK" not in out and "6789" not in out
        assert "127.0.0.1" not in out and str(up.port) not in out
