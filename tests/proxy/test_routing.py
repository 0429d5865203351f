"""Client model names (proxy/routing.py `check_model_name`): at most 256 bytes and printable, refused
with a 400 in the caller's format before any backend is called; what reaches a response header is
ASCII; a wildcard's state key keeps its `*`."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from adapters.errors import ProxyError
from proxy.config import load_config_dict
from proxy.pools import build_backends
from proxy.routing import MAX_MODEL_NAME, Router, check_model_name, header_safe
from tests.conftest import proxy_url
from tests.proxy.hardening_support import assert_caller_error, error_message

BAD_NAMES = ["oa-x\r\ny", "oa-x\ny", "oa-\x00", "oa-\x01", "oa-\x7f", "oa-\u202egnp.exe", "oa-\u200bx", "oa-\u2028",
             "oa-\ud800", "oa-" + "x" * 254, "oa-" + "é" * 127, "oa-" + "x" * 300_000]


@pytest.mark.parametrize("name", ["gpt-4o", "meta-llama/Llama-3.1-8B-Instruct", "llama3.1:8b", "a b", "é" * 128,
                                  "x" * MAX_MODEL_NAME])
def test_good_names_pass(name):
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n[:12]) + f"+{len(n)}")
def test_bad_names_are_a_400_that_does_not_echo_them(name):
    with pytest.raises(ProxyError) as err:
        check_model_name(name)
    assert err.value.status == 400 and err.value.param == "model" and name not in err.value.message


def test_header_safe_percent_encodes_non_ascii_only():
    assert header_safe("oa/gpt-4o:latest") == "oa/gpt-4o:latest"
    assert header_safe("oa/é ü") == "oa/%C3%A9 %C3%BC"


def test_wildcard_deployments_share_the_configured_key():
    cfg = load_config_dict({"backends": {"oa": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                            "models": [{"name": "oa-*", "backend": "oa"}, {"name": "fixed", "backend": "oa", "model": "m"}]})
    router = Router(cfg, build_backends(cfg))
    a, b = router.resolve("oa-one"), router.resolve("oa-tw\u00e9")
    assert (a.deployments[0].label, b.deployments[0].label) == ("oa/one", "oa/tw%C3%A9")
    assert a.deployments[0].key == b.deployments[0].key == "oa/*"
    assert a.deployments[0].target.model == "one" and b.deployments[0].target.model == "tw\u00e9"
    assert router.resolve("fixed").deployments[0].key == "oa/m"


ROUTES = [("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
          ("/v1/messages", {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
          ("/api/chat", {"stream": False, "messages": [{"role": "user", "content": "hi"}]}),
          ("/v1/embeddings", {"input": "hi"})]


@pytest.mark.parametrize("path, body", ROUTES, ids=[p for p, _ in ROUTES])
@pytest.mark.parametrize("name", [n for n in BAD_NAMES if "\ud800" not in n], ids=lambda n: repr(n[:12]) + f"+{len(n)}")
async def test_bad_names_never_reach_a_backend(aiohttp_server, start_proxy, path, body, name):
    """Before: `oa/x\\r\\ny` was sent to the backend (billed), then aiohttp refused the deployment header
    and dropped the connection while the access line said 200."""
    calls: list[str] = []

    async def backend(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.json_response({"error": {"message": "should not be called"}}, status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", backend)
    up = await aiohttp_server(app)
    server = await start_proxy({"backends": {"oa": {"provider": "openai", "base_url": str(up.make_url("/v1"))}},
                                "models": [{"name": "oa-*", "backend": "oa"}]})
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, path), json={**body, "model": name}) as r:
            raw = await r.read()
            assert r.status == 400, raw[:300]
            assert "x-llm-proxy-deployment" not in r.headers and len(raw) < 1000
    doc = assert_caller_error(path, 400, raw)
    assert "model name" in error_message(path, doc)
    assert calls == []


async def test_non_ascii_name_reaches_the_backend_and_the_header_is_ascii(start_emulator, start_proxy):
    url = await start_emulator("openai")
    server = await start_proxy({"backends": {"oa": {"provider": "openai", "base_url": url + "/v1"}},
                                "models": [{"name": "oa-*", "backend": "oa"}]})
    async with aiohttp.ClientSession() as s:
        body = {"model": "oa-modèle", "messages": [{"role": "user", "content": "hi"}]}
        async with s.post(proxy_url(server, "/v1/chat/completions"), json=body) as r:
            assert r.status == 200
            assert r.headers["x-llm-proxy-deployment"] == "oa/mod%C3%A8le"
            assert (await r.json())["choices"][0]["message"]["content"] == "echo: hi"
