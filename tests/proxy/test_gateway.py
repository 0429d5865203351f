"""proxy/gateway.py: every route but `auth.public` needs a key (the GET routes included); unknown paths
and methods answer JSON 404 / 405 in the caller's format without echoing the path; `GET /` and
`HEAD /` answer 200 (connectivity probes)."""

from __future__ import annotations

import aiohttp
import pytest

from proxy.config import ConfigError, load_config_dict
from tests.conftest import proxy_url
from tests.proxy.hardening_support import assert_caller_error, error_message

KEY = "sk-gateway-client"
AUTH = {"Authorization": f"Bearer {KEY}"}
GET_ROUTES = ["/v1/models", "/v1/models/oa-anything", "/api/tags", "/api/version"]
PUBLIC = ["/health/live", "/health/ready", "/metrics"]


def config(**auth) -> dict:
    return {"auth": {"keys": [KEY], **auth},
            "backends": {"oa": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "models": [{"name": "oa-*", "backend": "oa"}, {"name": "fixed", "backend": "oa"}]}


async def fetch(server, method: str, path: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, proxy_url(server, path), headers=headers or {}) as r:
            return r.status, await r.read(), dict(r.headers)


@pytest.mark.parametrize("path", GET_ROUTES)
async def test_get_routes_need_a_key(start_proxy, path):
    """Before: these answered without a key, /v1/models/{id} resolving wildcards for anyone."""
    server = await start_proxy(config())
    status, body, _ = await fetch(server, "GET", path)
    assert status == 401
    assert_caller_error(path, 401, body)
    assert b"oa-anything" not in body and b"fixed" not in body
    assert (await fetch(server, "GET", path, {"Authorization": "Bearer wrong"}))[0] == 401
    assert (await fetch(server, "GET", path, AUTH))[0] == 200


@pytest.mark.parametrize("path", PUBLIC)
async def test_default_public_paths_need_no_key(start_proxy, path):
    server = await start_proxy(config())
    assert (await fetch(server, "GET", path))[0] in (200, 503)  # ready is 503 until pools open


async def test_auth_public_is_configurable(start_proxy):
    server = await start_proxy(config(public=["/health/*", "/v1/models"]))
    assert (await fetch(server, "GET", "/health/live"))[0] == 200
    assert (await fetch(server, "GET", "/v1/models"))[0] == 200
    assert (await fetch(server, "GET", "/metrics"))[0] == 401  # no longer listed
    assert (await fetch(server, "GET", "/v1/models/fixed"))[0] == 401  # exact path only
    body = {"model": "fixed", "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(server, "/v1/chat/completions"), json=body) as r:
            assert r.status == 401


@pytest.mark.parametrize("bad", [["health/live"], ["/a*b"], ["*"]])
def test_auth_public_entries_are_checked(bad):
    with pytest.raises(ConfigError) as err:
        load_config_dict(config(public=bad))
    assert "auth.public[0]" in str(err.value)


@pytest.mark.parametrize("auth", [True, False])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_root_answers_200(start_proxy, auth, method):
    cfg = config() if auth else {k: v for k, v in config().items() if k != "auth"}
    server = await start_proxy(cfg)
    status, body, _ = await fetch(server, method, "/")
    assert status == 200 and (method == "HEAD" or body == b'{"status": "ok"}')


UNKNOWN = [("GET", "/nope/%2e%2e/<script>", 404), ("POST", "/v1/chat/completion", 404), ("GET", "/v1/chat/completions", 405),
           ("DELETE", "/v1/messages", 405), ("PUT", "/v1/messages/count_tokens", 405), ("POST", "/health/live", 405),
           ("GET", "/v1/messages/nope", 404), ("PATCH", "/api/chat", 405), ("GET", "/v1beta/models", 404)]


@pytest.mark.parametrize("method, path, status", UNKNOWN)
async def test_unknown_paths_and_methods_are_json_in_the_callers_format(start_proxy, method, path, status):
    """Before: aiohttp's plain-text `404: Not Found` / `405: Method Not Allowed`."""
    server = await start_proxy(config())
    got, body, headers = await fetch(server, method, path, AUTH)
    assert got == status
    doc = assert_caller_error(path, status, body)
    assert "script" not in error_message(path, doc) and "nope" not in error_message(path, doc)
    if status == 405:
        assert headers["Allow"] and method not in headers["Allow"].split(", ")
    # Without a key too: the route table is no secret.
    assert (await fetch(server, method, path))[0] == status


async def test_without_auth_unknown_routes_are_404(start_proxy):
    server = await start_proxy({k: v for k, v in config().items() if k != "auth"})
    status, body, _ = await fetch(server, "GET", "/v1/nothing")
    assert status == 404 and assert_caller_error("/v1/nothing", 404, body)["error"]["code"] == "unknown_url"
