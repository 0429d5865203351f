"""Key identities and per-key model access, driven with the official clients: a wrong key is 401, a
model outside the key's globs is 403 in the caller's own format, model lists show only the key's models."""

from __future__ import annotations

import hashlib

import aiohttp
import anthropic
import ollama
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors

from tests.conftest import proxy_url

SEARCH_KEY = "sk-team-search-0123456789"
HASHED_SECRET = "sk-hashed-only-in-config"


def config(emu: str) -> dict:
    return {
        "backends": {
            "emu": {"provider": "openai", "base_url": emu + "/v1"},
            "claude": {"provider": "anthropic", "base_url": emu.replace("/v1", "")},
        },
        "models": [
            {"name": "llama-3.1-70b", "backend": "emu"},
            {"name": "llama-3.1-8b", "backend": "emu"},
            {"name": "qwen-72b", "backend": "emu"},
            {"name": "gpt-4o", "backend": "emu"},
        ],
        "auth": {"public": ["/health/live"], "keys": [
            "plain-unlimited",
            {"key": SEARCH_KEY, "name": "team-search", "models": ["llama-3.1-*", "qwen-*"]},
            {"key_sha256": hashlib.sha256(HASHED_SECRET.encode()).hexdigest(), "name": "hashed", "models": ["gpt-4o"]},
        ]},
    }  # fmt: skip


@pytest.fixture
async def gw(start_emulator, start_proxy):
    emu = await start_emulator("openai")
    return await start_proxy(config(emu))


def oa(server, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key=key, max_retries=0)


async def test_allowed_models_are_served_and_others_refused_403_openai(gw):
    client = oa(gw, SEARCH_KEY)
    resp = await client.chat.completions.create(model="llama-3.1-70b", messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "echo: hi"
    with pytest.raises(openai.PermissionDeniedError) as info:
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 403
    err = info.value.body
    assert err["type"] == "permission_error" and "gpt-4o" in err["message"] and err["param"] == "model"
    # a model the gateway does not have at all is also refused before routing (no hint that it exists)
    with pytest.raises(openai.PermissionDeniedError):
        await client.chat.completions.create(model="mystery", messages=[{"role": "user", "content": "hi"}])
    await client.close()


async def test_key_given_only_as_sha256_works(gw):
    client = oa(gw, HASHED_SECRET)
    resp = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert resp.choices[0].message.content == "echo: x"
    await client.close()


async def test_wrong_and_missing_key_401(gw):
    client = oa(gw, "sk-wrong")
    with pytest.raises(openai.AuthenticationError) as info:
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "invalid_api_key"
    await client.close()
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(gw, "/v1/chat/completions"), json={"model": "gpt-4o", "messages": []}) as r:
            assert r.status == 401 and "missing API key" in (await r.json())["error"]["message"]


async def test_anthropic_client_gets_permission_error(gw):
    client = anthropic.AsyncAnthropic(base_url=proxy_url(gw), api_key=SEARCH_KEY, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        await client.messages.create(model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "permission_error"
    await client.close()


async def test_gemini_and_ollama_clients_get_403_in_their_format(gw):
    client = genai.Client(api_key=SEARCH_KEY, http_options={"base_url": proxy_url(gw), "timeout": 5000})
    with pytest.raises(genai_errors.ClientError) as info:
        await client.aio.models.generate_content(model="gpt-4o", contents="x")
    assert info.value.code == 403 and info.value.status == "PERMISSION_DENIED"
    ol = ollama.AsyncClient(host=proxy_url(gw), headers={"Authorization": f"Bearer {SEARCH_KEY}"})
    with pytest.raises(ollama.ResponseError) as oinfo:
        await ol.chat(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert oinfo.value.status_code == 403 and "gpt-4o" in oinfo.value.error


async def test_model_lists_show_only_the_keys_models(gw):
    client = oa(gw, SEARCH_KEY)
    ids = sorted(m.id for m in (await client.models.list()).data)
    assert ids == ["llama-3.1-70b", "llama-3.1-8b", "qwen-72b"]
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-4o")
    assert (await client.models.retrieve("qwen-72b")).id == "qwen-72b"
    await client.close()
    everything = oa(gw, "plain-unlimited")
    assert len((await everything.models.list()).data) == 4
    await everything.close()
    ol = ollama.AsyncClient(host=proxy_url(gw), headers={"Authorization": f"Bearer {HASHED_SECRET}"})
    assert [m.model for m in (await ol.list()).models] == ["gpt-4o"]
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy_url(gw, "/v1/models"), headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401


@pytest.mark.parametrize("globs, model, allowed", [
    (["llama-3.1-*"], "llama-3.1-70b", True),
    (["llama-3.1-*"], "llama-3.2-1b", False),
    (["qwen-?b"], "qwen-7b", True),
    (["qwen-?b"], "qwen-72b", False),
    (["a", "b*"], "bee", True),
    ([], "anything", False),
    (None, "anything", True),
    (["gpt-4o"], "gpt-4o-mini", False),  # whole-name match, not a prefix
])  # fmt: skip
def test_model_globs(globs, model, allowed):
    from proxy.config import KeyLimits
    from proxy.keys import identity

    assert identity("k", "0" * 64, KeyLimits(models=globs)).may_use(model) is allowed


async def test_keys_without_limits_never_open_the_state_store(start_emulator, start_proxy, tmp_path):
    emu = await start_emulator("openai")
    cfg = config(emu)
    cfg["state"] = {"url": f"sqlite:///{tmp_path}/never.db"}
    server = await start_proxy(cfg)
    client = oa(server, SEARCH_KEY)
    await client.chat.completions.create(model="qwen-72b", messages=[{"role": "user", "content": "x"}])
    await client.close()
    assert not (tmp_path / "never.db").exists()


GEMINI_COUNT = "/v1beta/models/gpt-4o:countTokens"
ANTHROPIC_LIST = {"anthropic-version": "2023-06-01"}


@pytest.mark.parametrize("method, path, headers, query, status", [
    # each format's own places (`Frontend.client_key`) ...
    ("GET", "/v1/models", {"Authorization": "Bearer plain-unlimited"}, {}, 200),
    ("GET", "/v1/models", {"authorization": "bearer  plain-unlimited "}, {}, 200),
    ("GET", "/v1/models", {**ANTHROPIC_LIST, "x-api-key": "plain-unlimited"}, {}, 200),
    ("GET", "/v1/models", {**ANTHROPIC_LIST, "Authorization": "Bearer plain-unlimited"}, {}, 200),
    ("GET", "/api/tags", {"Authorization": "Bearer plain-unlimited"}, {}, 200),
    ("POST", GEMINI_COUNT, {"x-goog-api-key": "plain-unlimited"}, {}, 200),
    ("POST", GEMINI_COUNT, {}, {"key": "plain-unlimited"}, 200),
    ("POST", GEMINI_COUNT, {"Authorization": "Bearer plain-unlimited"}, {}, 200),
    # ... and only those: another format's place is no key here
    ("GET", "/v1/models", {"x-api-key": "plain-unlimited"}, {}, 401),
    ("GET", "/v1/models", {}, {"key": "plain-unlimited"}, 401),
    ("GET", "/v1/models", {"Authorization": "Basic plain-unlimited"}, {}, 401),
    ("GET", "/api/tags", {"x-goog-api-key": "plain-unlimited"}, {}, 401),
    ("POST", GEMINI_COUNT, {"x-api-key": "plain-unlimited"}, {}, 401),
    # the gateway's own endpoints (when not public): the default frontend's places
    ("GET", "/metrics", {"Authorization": "Bearer plain-unlimited"}, {}, 200),
    ("GET", "/metrics", {"x-api-key": "plain-unlimited"}, {}, 401),
])  # fmt: skip
async def test_key_is_read_from_the_places_its_format_declares(gw, method, path, headers, query, status):
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]} if method == "POST" else None
    async with aiohttp.ClientSession() as s:
        async with s.request(method, proxy_url(gw, path), headers=headers, params=query, json=body) as r:
            assert r.status == status, await r.text()


async def test_anthropic_auth_token_is_a_bearer_key(gw):
    """Claude Code with ANTHROPIC_AUTH_TOKEN: the SDK's `auth_token` goes out as Authorization: Bearer."""
    client = anthropic.AsyncAnthropic(base_url=proxy_url(gw), auth_token=HASHED_SECRET, max_retries=0)
    assert [m.id for m in (await client.models.list()).data] == ["gpt-4o"]
    msg = await client.messages.create(model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == "echo: hi"
    with pytest.raises(anthropic.AuthenticationError) as info:
        await anthropic.AsyncAnthropic(base_url=proxy_url(gw), auth_token="wrong", max_retries=0).models.list()
    assert info.value.body["error"]["type"] == "authentication_error"
    await client.close()


async def test_missing_key_names_the_formats_places(gw):
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(gw, "/v1/messages"), json={"model": "gpt-4o"}) as r:
            assert r.status == 401
            assert (await r.json())["error"]["message"] == "missing API key (x-api-key or Authorization: Bearer)"
        async with s.post(proxy_url(gw, GEMINI_COUNT), json={}) as r:
            assert "x-goog-api-key or ?key= or Authorization: Bearer" in (await r.json())["error"]["message"]
