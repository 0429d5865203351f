"""/health/ready and the state store: a gateway whose keys need no store never checks one; with a
limited key the store's health is reported, and an unreachable store makes the gateway not ready only
with `state.on_error: closed` (it would refuse every limited request), not with `open`.  Real stores:
an SQLite file and a real redis-server (killed to make it unreachable)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import proxy_url

pytestmark = pytest.mark.timeout(60)


def config(emu: str, state_url: str | None, limited: bool, on_error: str = "closed") -> dict:
    key = {"key": "sk-team-0123456789", "name": "team", "rpm": 100} if limited else "sk-free-0123456789"
    cfg = {
        "backends": {"emu": {"provider": "openai", "base_url": emu + "/v1"}},
        "models": [{"name": "llama", "backend": "emu"}],
        "auth": {"keys": [key]},
    }
    if state_url:
        cfg["state"] = {"url": state_url, "on_error": on_error, "timeout": 0.2}
    return cfg


async def ready(server) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.get(proxy_url(server, "/health/ready")) as r:
        return r.status, await r.json()


@pytest.fixture
async def emu(start_emulator):
    return await start_emulator("openai")


async def test_no_limited_key_means_no_store_in_readiness(emu, start_proxy, own_redis):
    own_redis.stop()  # even a configured, dead Redis does not matter
    status, body = await ready(await start_proxy(config(emu, own_redis.url, limited=False)))
    assert status == 200 and "state" not in body


async def test_reachable_store_is_reported(emu, start_proxy, state_url):
    status, body = await ready(await start_proxy(config(emu, state_url, limited=True)))
    assert status == 200
    assert body["state"] == {"store": "sqlite" if state_url.startswith("sqlite") else "redis", "status": "ok"}


@pytest.mark.parametrize(("on_error", "expected"), [("closed", 503), ("open", 200)])
async def test_unreachable_store_with_a_limited_key(emu, start_proxy, own_redis, on_error, expected):
    server = await start_proxy(config(emu, own_redis.url, limited=True, on_error=on_error))
    assert (await ready(server))[0] == 200
    own_redis.stop()
    status, body = await ready(server)
    assert status == expected
    assert body["state"] == {"store": "redis", "status": "unreachable"}
    assert body["status"] == ("ready" if expected == 200 else "not ready")


async def test_store_url_and_password_never_shown(emu, start_proxy, own_redis):
    own_redis.stop()
    url = own_redis.url.replace("redis://", "redis://:s3cret-pw@")
    status, body = await ready(await start_proxy(config(emu, url, limited=True)))
    assert status == 503 and body["state"]["status"] == "unreachable"
    assert "s3cret" not in str(body) and own_redis.url.split("//")[-1] not in str(body)
