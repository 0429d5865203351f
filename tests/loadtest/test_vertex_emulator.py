"""The Vertex AI emulator checked against the official clients: anthropic.AsyncAnthropicVertex and
google-genai with vertexai=True, both authenticating with google-auth service-account credentials
whose token endpoint is the emulator's own."""

from __future__ import annotations

import asyncio
import time

import anthropic
import httpx
import pytest
from google import genai
from google.auth import crypt, jwt
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import Request
from google.genai import errors, types
from google.oauth2 import service_account

from loadtest.emulators import vertex
from tests.vertex_support import EMAIL, PROJECT, new_service_account, start_vertex

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def emulator(aiohttp_server, tmp_path):
    url, app, path = await start_vertex(aiohttp_server, tmp_path)
    creds = service_account.Credentials.from_service_account_file(str(path), scopes=SCOPES)
    return url, app, creds


@pytest.fixture
async def claude(emulator):
    url, _, creds = emulator
    client = anthropic.AsyncAnthropicVertex(region="us-east5", project_id=PROJECT, credentials=creds,
                                            base_url=url + "/v1", max_retries=0, timeout=10)
    yield client
    await client.close()


@pytest.fixture
async def gem(emulator):
    url, _, creds = emulator
    client = genai.Client(vertexai=True, project=PROJECT, location="us-central1", credentials=creds,
                          http_options=types.HttpOptions(base_url=url, timeout=10_000))
    yield client.aio
    await client.aio.aclose()


async def test_claude_message_and_stream(claude, emulator):
    msg = await asyncio.wait_for(claude.messages.create(model="claude-3-5-sonnet-v2@20241022", max_tokens=32, messages=USER), 10)
    assert msg.content[0].text == "echo: hello there" and msg.stop_reason == "end_turn"
    async with claude.messages.stream(model="claude-x::tools,chunks=3", max_tokens=32, messages=USER) as s:
        final = await asyncio.wait_for(s.get_final_message(), 10)
    assert final.stop_reason == "tool_use" and final.content[0].input == {"city": "Paris"}
    n = await asyncio.wait_for(claude.messages.count_tokens(model="claude-x", messages=USER), 10)
    assert n.input_tokens > 0
    assert emulator[1][vertex.SETTINGS]["grants"] == 1  # the SDK reused its token


async def test_claude_errors_google_or_anthropic_shaped(claude):
    with pytest.raises(anthropic.RateLimitError) as e:
        await claude.messages.create(model="claude-x::status=429", max_tokens=8, messages=USER)
    assert e.value.body["error"]["status"] == "RESOURCE_EXHAUSTED"  # Vertex's own format
    with pytest.raises(anthropic.InternalServerError) as e:
        await claude.messages.create(model="claude-x::status=529", max_tokens=8, messages=USER)
    assert e.value.status_code == 529 and e.value.body["error"]["type"] == "overloaded_error"


async def test_gemini_generate_and_stream(gem):
    r = await asyncio.wait_for(gem.models.generate_content(model="gemini-2.0-flash", contents="hello there"), 10)
    assert r.text == "echo: hello there"
    chunks = [c async for c in await gem.models.generate_content_stream(model="gemini-2.0-flash::chunks=3", contents="hi you")]
    assert "".join(c.text or "" for c in chunks) == "echo: hi you"
    with pytest.raises(errors.ClientError) as e:
        await gem.models.generate_content(model="gemini-2.0-flash::status=429", contents="x")
    assert e.value.code == 429 and e.value.status == "RESOURCE_EXHAUSTED"


async def test_text_embeddings_through_predict(gem):
    r = await asyncio.wait_for(gem.models.embed_content(
        model="text-embedding-005", contents=["a", "bb"], config=types.EmbedContentConfig(output_dimensionality=8)), 10)
    assert [len(e.values) for e in r.embeddings] == [8, 8]
    assert r.embeddings[0].statistics.token_count == 1


async def test_model_routes_refuse_tokens_it_did_not_issue_or_that_expired(emulator):
    url, app, creds = emulator
    path = "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-x:rawPredict"
    body = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 8, "messages": USER}
    async with httpx.AsyncClient(base_url=url) as http:
        r = await http.post(path, json=body, headers={"authorization": "Bearer ya29.forged"})
        assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
        r = await http.post(path, json=body)
        assert r.status_code == 401
        await asyncio.to_thread(creds.refresh, Request())
        auth = {"authorization": f"Bearer {creds.token}"}
        assert (await http.post(path, json=body, headers=auth)).status_code == 200
        app[vertex.TOKENS][creds.token] = time.time() - 1
        assert (await http.post(path, json=body, headers=auth)).status_code == 401


async def test_claude_body_checks(emulator):
    url, _, creds = emulator
    await asyncio.to_thread(creds.refresh, Request())
    base = "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-x"
    good = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 8, "messages": USER}
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {creds.token}"}) as http:
        for action, body in ((":rawPredict", {**good, "model": "claude-x"}),
                             (":rawPredict", {k: v for k, v in good.items() if k != "anthropic_version"}),
                             (":streamRawPredict", good), (":rawPredict", {**good, "stream": True})):
            r = await http.post(base + action, json=body)
            assert r.status_code == 400 and r.json()["type"] == "error", (action, body)


async def test_token_endpoint_refuses_unknown_keys(emulator, tmp_path):
    url, _, _ = emulator
    stranger, _ = new_service_account(tmp_path, url + "/token", email="stranger@x.iam.gserviceaccount.com")
    creds = service_account.Credentials.from_service_account_file(str(stranger), scopes=SCOPES)
    with pytest.raises(RefreshError, match="Invalid JWT Signature"):
        await asyncio.to_thread(creds.refresh, Request())


@pytest.mark.parametrize("claims,why", [
    ({"aud": "https://example.com/token"}, "short-lived"),
    ({"iat": -7200, "exp": -3600}, "short-lived"),
    ({"exp": 7200}, "short-lived"),
    ({"scope": "https://www.googleapis.com/auth/userinfo.email"}, "scope"),
])
async def test_token_endpoint_checks_the_claims(emulator, tmp_path, claims, why):
    url, _, _ = emulator
    signer = crypt.RSASigner.from_service_account_file(str(tmp_path / "gateway-sa.json"))
    now = int(time.time())
    payload = {"iss": EMAIL, "aud": "https://oauth2.googleapis.com/token", "scope": SCOPES[0], "iat": now, "exp": now + 3600}
    payload.update({k: now + v if k in ("iat", "exp") else v for k, v in claims.items()})
    assertion = jwt.encode(signer, payload).decode()
    async with httpx.AsyncClient(base_url=url) as http:
        ok = await http.post("/token", data={"grant_type": vertex.JWT_GRANT, "assertion": jwt.encode(signer, {
            **payload, "aud": "https://oauth2.googleapis.com/token", "scope": SCOPES[0], "iat": now, "exp": now + 3600}).decode()})
        assert ok.status_code == 200 and ok.json()["access_token"].startswith("ya29.")
        r = await http.post("/token", data={"grant_type": vertex.JWT_GRANT, "assertion": assertion})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant" and why in r.json()["error_description"]
