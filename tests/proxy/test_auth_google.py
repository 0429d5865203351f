"""The google-oauth auth step against the Vertex emulator's token endpoint: one token fetch for many
concurrent requests, the cached token reused, a stale token refreshed in the background while still
used, an expired one waited for, ADC, and the start-up and runtime errors."""

from __future__ import annotations

import asyncio
import datetime
import sys
from types import SimpleNamespace

import pytest
from google.auth import _helpers

from adapters.base import HttpRequest
from adapters.errors import ProxyError
from loadtest.emulators import vertex
from proxy import upstream_auth
from proxy.auth_google import GoogleOAuthStep
from proxy.config import ConfigError
from tests.vertex_support import new_service_account, start_vertex


def adapter(credentials):
    return SimpleNamespace(auth_scheme="google-oauth", provider="vertex", options=SimpleNamespace(credentials=credentials))


@pytest.fixture
async def emulator(aiohttp_server, tmp_path):
    url, app, path = await start_vertex(aiohttp_server, tmp_path)
    return app, path, url + "/token"


async def token_of(step) -> str:
    req = HttpRequest(url="http://x", headers={"content-type": "application/json"})
    await step.apply(req)
    assert req.headers["content-type"] == "application/json"
    scheme, _, token = req.headers["authorization"].partition(" ")
    assert scheme == "Bearer" and token
    return token


def grants(app) -> int:
    return app[vertex.SETTINGS]["grants"]


async def test_concurrent_requests_share_one_fetch_and_the_token_is_cached(emulator):
    app, path, _ = emulator
    step = upstream_auth.build("vx", adapter(str(path)))
    assert isinstance(step, GoogleOAuthStep)
    tokens = await asyncio.wait_for(asyncio.gather(*(token_of(step) for _ in range(20))), 20)
    assert len(set(tokens)) == 1 and tokens[0] in app[vertex.TOKENS]
    assert grants(app) == 1
    assert await token_of(step) == tokens[0] and grants(app) == 1


async def test_a_stale_token_is_used_while_one_background_refresh_runs(emulator):
    app, path, _ = emulator
    step = GoogleOAuthStep("vx", adapter(str(path)))
    old = await token_of(step)
    step._credentials.expiry = _helpers.utcnow() + datetime.timedelta(seconds=60)  # inside the refresh window
    assert [await token_of(step) for _ in range(5)] == [old] * 5
    await asyncio.wait_for(step._token.running(), 10)
    new = await token_of(step)
    assert new != old and grants(app) == 2


async def test_an_expired_token_is_waited_for(emulator):
    app, path, _ = emulator
    step = GoogleOAuthStep("vx", adapter(str(path)))
    old = await token_of(step)
    step._credentials.expiry = _helpers.utcnow() - datetime.timedelta(seconds=1)
    new = await asyncio.wait_for(token_of(step), 10)
    assert new != old and grants(app) == 2


async def test_application_default_credentials(emulator, monkeypatch):
    app, path, _ = emulator
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    step = GoogleOAuthStep("vx", adapter(None))
    assert await asyncio.wait_for(token_of(step), 10) in app[vertex.TOKENS]


@pytest.mark.parametrize("reachable", [True, False])
async def test_a_refused_or_unreachable_token_endpoint_is_a_gateway_error_without_details(emulator, tmp_path, reachable):
    _, _, emulator_token_uri = emulator
    token_uri = emulator_token_uri if reachable else "http://127.0.0.1:9/token"
    # The key is not registered at the emulator (or nothing listens): no token can be had.
    stranger, _ = new_service_account(tmp_path, token_uri, email="stranger@x.iam.gserviceaccount.com")
    step = GoogleOAuthStep("vx", adapter(str(stranger)))
    with pytest.raises(ProxyError) as e:
        await asyncio.wait_for(token_of(step), 20)
    assert e.value.kind == "upstream_unavailable" and "'vx'" in e.value.message
    assert "127.0.0.1" not in e.value.message and "stranger" not in e.value.message


def test_an_unreadable_credentials_file_fails_at_start_up(tmp_path):
    with pytest.raises(ConfigError, match=r"^backends\.vx\.credentials: "):
        GoogleOAuthStep("vx", adapter(str(tmp_path / "missing.json")))
    (tmp_path / "bad.json").write_text('{"type": "service_account"}')
    with pytest.raises(ConfigError, match=r"^backends\.vx\.credentials: "):
        GoogleOAuthStep("vx", adapter(str(tmp_path / "bad.json")))


def test_a_missing_extra_is_a_start_up_error_naming_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "proxy.auth_google", raising=False)
    monkeypatch.setitem(sys.modules, "google.auth", None)  # as if google-auth were not installed
    with pytest.raises(ConfigError, match=r"^backends\.vx: provider vertex needs: pip install -e '\.\[vertex\]'"):
        upstream_auth.build("vx", adapter(None))


async def test_a_rejected_token_is_dropped_and_the_next_request_fetches_one(emulator):
    app, path, _ = emulator
    step = GoogleOAuthStep("vx", adapter(str(path)))
    req = HttpRequest(url="http://x")
    await step.apply(req)
    old = req.headers["authorization"]
    step.rejected(HttpRequest(url="http://x", headers={"authorization": "Bearer someone-else"}))
    assert await token_of(step) == old.split()[1] and grants(app) == 1  # not ours: kept
    step.rejected(req)
    assert await token_of(step) != old.split()[1] and grants(app) == 2
