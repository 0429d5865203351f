"""EKS IRSA through the gateway: no keys in the config, AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE in
the environment, and botocore's chain exchanging the token at STS (a local stand-in, reached through
AWS_ENDPOINT_URL_STS) for temporary credentials the Bedrock emulator checks, session token included.
Credentials are fetched once while fresh and fetched again once they near expiry."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import openai
import pytest
from aiohttp import web

from loadtest.emulators import bedrock as emu
from tests.conftest import proxy_url

STS_RESPONSE = """<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>{key}</AccessKeyId>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>{token}</SessionToken>
      <Expiration>{expiry}</Expiration>
    </Credentials>
    <SubjectFromWebIdentityToken>system:serviceaccount:llm:proxy</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/llm-proxy/session</Arn>
      <AssumedRoleId>AROAEXAMPLE:session</AssumedRoleId>
    </AssumedRoleUser>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"""


async def irsa_gateway(start_emulator, start_proxy, aiohttp_server, monkeypatch, tmp_path, lifetime: timedelta):
    calls: list[dict[str, list[str]]] = []

    async def sts(request: web.Request) -> web.Response:
        form = parse_qs((await request.read()).decode())
        calls.append(form)
        expiry = (datetime.now(timezone.utc) + lifetime).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = STS_RESPONSE.format(key=emu.TEMP_ACCESS_KEY_ID, secret=emu.TEMP_SECRET_ACCESS_KEY,
                                   token=emu.SESSION_TOKEN, expiry=expiry)
        return web.Response(text=body, content_type="text/xml")

    app = web.Application()
    app.router.add_post("/", sts)
    sts_server = await aiohttp_server(app)
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.projected-service-account-token.sig")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/llm-proxy")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", str(sts_server.make_url("/")))
    url = await start_emulator("bedrock")
    server = await start_proxy({"backends": {"b": {"provider": "bedrock", "region": "us-east-1", "base_url": url}},
                                "models": [{"name": "m", "backend": "b", "model": "anthropic.claude-3-5-sonnet-20241022-v2:0"}]})
    return openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="k", max_retries=0), calls


async def ask(oai) -> str:
    r = await asyncio.wait_for(oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]), 15)
    return r.choices[0].message.content


@pytest.mark.parametrize("lifetime,fetches", [(timedelta(hours=1), 1), (timedelta(minutes=5), 3)])
async def test_web_identity_credentials(start_emulator, start_proxy, aiohttp_server, monkeypatch, tmp_path,
                                        lifetime, fetches):
    oai, calls = await irsa_gateway(start_emulator, start_proxy, aiohttp_server, monkeypatch, tmp_path, lifetime)
    try:
        for _ in range(3):
            assert await ask(oai) == "echo: hi"
    finally:
        await oai.close()
    assert calls[0]["Action"] == ["AssumeRoleWithWebIdentity"]
    assert calls[0]["RoleArn"] == ["arn:aws:iam::123456789012:role/llm-proxy"]
    assert calls[0]["WebIdentityToken"] == ["eyJhbGciOiJSUzI1NiJ9.projected-service-account-token.sig"]
    # fresh credentials are reused; ones inside botocore's refresh window are fetched again for each
    # request (off the loop)
    assert len(calls) == fetches
