"""The admin API on both stores: keys made at run time (secret returned once, stored as a hash),
listed, inspected with usage, changed and revoked -- revocation and changes seen at once by a second
gateway sharing the store (another replica); config keys read-only; the admin key only."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import openai
import pytest

from tests.conftest import proxy_url

pytestmark = pytest.mark.timeout(60)
ADMIN = "adm-secret-0123456789"
CLIENT = "sk-config-0123456789"


def config(emu: str, state_url: str) -> dict:
    return {
        "state": {"url": state_url, "timeout": 0.5},
        "backends": {"emu": {"provider": "openai", "base_url": emu + "/v1"}},
        "models": [{"name": "llama", "backend": "emu", "price": {"input": 1, "output": 1}},
                   {"name": "qwen", "backend": "emu"}],
        "auth": {"admin_key": ADMIN, "keys": [{"key": CLIENT, "name": "from-config", "rpm": 50}]},
    }  # fmt: skip


@pytest.fixture
async def replicas(start_emulator, start_proxy, state_url):
    emu = await start_emulator("openai")
    return await start_proxy(config(emu, state_url)), await start_proxy(config(emu, state_url))


async def admin(server, method: str, path: str, body=None, key: str = ADMIN) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, proxy_url(server, path), json=body,
                             headers={"Authorization": f"Bearer {key}"}) as r:  # fmt: skip
            return r.status, await r.json()


async def ask(server, key: str, model: str = "llama") -> str:
    client = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key=key, max_retries=0)
    try:
        resp = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        return resp.choices[0].message.content
    finally:
        await client.close()


async def test_create_use_change_and_revoke_across_replicas(replicas):
    a, b = replicas
    status, made = await admin(a, "POST", "/admin/keys", {"name": "team-x", "models": ["llama"], "rpm": 2})
    assert status == 201 and made["key"].startswith("sk-llmp-") and made["source"] == "admin"
    secret = made["key"]
    assert await ask(b, secret) == "echo: hi"  # made on one replica, used on the other
    with pytest.raises(openai.PermissionDeniedError):
        await ask(b, secret, "qwen")
    assert await ask(a, secret) == "echo: hi"
    with pytest.raises(openai.RateLimitError):  # rpm 2 shared by both replicas
        await ask(b, secret)
    status, patched = await admin(b, "PATCH", "/admin/keys/team-x", {"rpm": 3, "models": None})
    assert status == 200 and patched["rpm"] == 3 and patched["models"] is None
    assert await ask(a, secret, "qwen") == "echo: hi"  # replica a sees the change on its next request
    status, shown = await admin(a, "GET", "/admin/keys/team-x")
    assert status == 200 and shown["usage"]["requests"] == 3 and shown["usage"]["in_flight"] == 0
    assert shown["usage"]["spend_usd"] > 0 and "key" not in shown
    status, gone = await admin(b, "DELETE", "/admin/keys/team-x")
    assert status == 200 and gone == {"name": "team-x", "deleted": True}
    with pytest.raises(openai.AuthenticationError):  # revoked at once on the other replica too
        await ask(a, secret)
    assert (await admin(a, "GET", "/admin/keys/team-x"))[0] == 404
    assert (await admin(a, "DELETE", "/admin/keys/team-x"))[0] == 404


async def test_list_shows_config_and_run_time_keys_without_secrets(replicas):
    a, _ = replicas
    await admin(a, "POST", "/admin/keys", {"name": "b-team", "budget": {"usd": 5, "period": "7d"}})
    status, listed = await admin(a, "GET", "/admin/keys")
    assert status == 200
    rows = {r["name"]: r for r in listed["data"]}
    assert rows["from-config"]["source"] == "config" and rows["from-config"]["rpm"] == 50
    assert rows["b-team"]["budget"] == {"usd": 5, "period": "7d"}
    text = str(listed)
    assert CLIENT not in text and hashlib.sha256(CLIENT.encode()).hexdigest() not in text and "sk-llmp-" not in text


async def test_config_keys_are_read_only_and_names_unique(replicas):
    a, _ = replicas
    assert (await admin(a, "PATCH", "/admin/keys/from-config", {"rpm": 1}))[0] == 403
    assert (await admin(a, "DELETE", "/admin/keys/from-config"))[0] == 403
    assert (await admin(a, "POST", "/admin/keys", {"name": "from-config"}))[0] == 409
    assert (await admin(a, "POST", "/admin/keys", {"name": "dup"}))[0] == 201
    assert (await admin(a, "POST", "/admin/keys", {"name": "dup"}))[0] == 409
    status, shown = await admin(a, "GET", "/admin/keys/from-config")
    assert status == 200 and shown["usage"]["requests"] == 0


@pytest.mark.parametrize("body, words", [
    ({"name": "bad name"}, "name"),
    ({"name": "x", "rpm": 0}, "rpm"),
    ({"name": "x", "budget": {"usd": 1, "period": "fortnight"}}, "period"),
    ({"name": "x", "colour": "red"}, "colour"),
    ({"rpm": 5}, "name"),
])  # fmt: skip
async def test_invalid_settings_400(replicas, body, words):
    status, err = await admin(replicas[0], "POST", "/admin/keys", body)
    assert status == 400 and words in err["error"]["message"]


async def test_only_the_admin_key_opens_the_admin_api(replicas):
    a, _ = replicas
    for key in ("", "wrong", CLIENT):
        status, err = await admin(a, "GET", "/admin/keys", key=key)
        assert status == 401 and err["error"]["code"] == "invalid_api_key"
    _, made = await admin(a, "POST", "/admin/keys", {"name": "client"})
    assert (await admin(a, "GET", "/admin/keys", key=made["key"]))[0] == 401


async def test_admin_api_off_without_admin_key(start_emulator, start_proxy, tmp_path):
    emu = await start_emulator("openai")
    cfg = config(emu, f"sqlite:///{tmp_path}/s.db")
    del cfg["auth"]["admin_key"]
    server = await start_proxy(cfg)
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy_url(server, "/admin/keys"), headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status in (404, 405)


async def test_non_utf8_admin_key_is_a_401(start_proxy, start_emulator, tmp_path):
    """The admin key is read like a client key (`keys.supplied_key`): undecodable bytes are a wrong
    key (before: a 500, the secret hashed with a strict UTF-8 encode)."""
    server = await start_proxy(config(await start_emulator("openai"), f"sqlite:///{tmp_path}/state.db"))
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /admin/keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \xff\xfe\r\n\r\n")
    head = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 401")
