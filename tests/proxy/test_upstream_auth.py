"""The per-backend auth step: built at start-up from the adapter's scheme, applied by upstream.send."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from aiohttp import web

from adapters.base import HttpRequest
from loadtest.emulators.sigv4 import SigV4Error, verify
from proxy import upstream_auth
from proxy.auth_aws import SigV4Step
from proxy.config import BackendConfig, ConfigError
from proxy.pools import BackendRuntime
from proxy.upstream import send

KEY, SECRET = "AKIDWIRE", "wire-secret"


def fake_adapter(scheme):
    options = SimpleNamespace(region="eu-west-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                              aws_session_token="")
    return SimpleNamespace(auth_scheme=scheme, provider="bedrock", signing_name="bedrock", options=options)


def test_no_scheme_no_step():
    assert upstream_auth.build("b", fake_adapter(None)) is None


def test_scheme_builds_its_step():
    assert isinstance(upstream_auth.build("b", fake_adapter("aws-sigv4")), SigV4Step)


def test_a_missing_extra_is_a_start_up_error_naming_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "proxy.auth_aws", raising=False)
    monkeypatch.setitem(sys.modules, "botocore", None)  # as if botocore were not installed
    with pytest.raises(ConfigError, match=r"^backends\.b: provider bedrock needs: pip install -e '\.\[bedrock\]'"):
        upstream_auth.build("b", fake_adapter("aws-sigv4"))


async def test_send_signs_every_attempt_over_the_exact_path_bytes(aiohttp_server):
    seen = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(request.method, request.raw_path, request.headers, body, {KEY: SECRET}, "bedrock")
        except SigV4Error as err:
            return web.json_response({"message": err.message}, status=err.status)
        seen.append(request.raw_path)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    rt = BackendRuntime("b", BackendConfig(provider="openai", base_url=str(server.make_url(""))), None)
    rt.auth = SigV4Step("b", fake_adapter("aws-sigv4"))
    rt.open()
    try:
        http = HttpRequest(url=f"{rt.adapter.base_url}/model/meta.llama3-1-70b-instruct-v1%3A0/converse",
                           body=b"{}", headers={"Content-Type": "application/json"})
        for _ in range(2):  # a retry re-signs the same request
            ex = await send(rt, http, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
            assert ex.status == 200, await ex.read()
            await ex.read()
            ex.finish()
    finally:
        await rt.close()
    assert seen == ["/model/meta.llama3-1-70b-instruct-v1%3A0/converse"] * 2


def test_configured_aws_credentials_are_scrubbed_from_upstream_errors():
    from adapters.bedrock_backend import BedrockOptions
    from adapters.errors import ProxyError

    options = BedrockOptions(region="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    rt = BackendRuntime("b", BackendConfig(provider="bedrock"), options)
    err = rt.scrub(ProxyError("server", f"key {KEY} with {SECRET} refused"))
    assert KEY not in err.message and SECRET not in err.message
