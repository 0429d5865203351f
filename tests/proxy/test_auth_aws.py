"""The SigV4 auth step, checked by the emulator's independent verifier (hashlib/hmac, not botocore)."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from botocore.credentials import RefreshableCredentials
from multidict import CIMultiDict

from adapters.base import HttpRequest
from adapters.errors import ProxyError
from loadtest.emulators.sigv4 import SigV4Error, verify
from proxy.auth_aws import SigV4Step
from proxy.config import ConfigError

KEY, SECRET = "AKIDTESTKEY", "test/secret+key"
URL = "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"


def adapter(**opts):
    options = SimpleNamespace(region="us-east-1", aws_access_key_id=None, aws_secret_access_key=None,
                              aws_session_token=None)
    options.__dict__.update(opts)
    return SimpleNamespace(options=options, signing_name="bedrock", provider="bedrock")


def request(url: str = URL, body: bytes = b'{"messages": []}') -> HttpRequest:
    return HttpRequest(url=url, body=body, headers={"Content-Type": "application/json"})


def check(req: HttpRequest, secrets=None, tokens=None, sent_url: str | None = None, body: bytes | None = None) -> str:
    """Verify as the server would see it: Host from the URL actually called, the path bytes sent."""
    url = sent_url or req.url
    host_and_path = url.split("://", 1)[1]
    host, _, path = host_and_path.partition("/")
    headers = CIMultiDict(req.headers)
    headers["Host"] = host
    return verify(req.method, "/" + path, headers, req.body if body is None else body,
                  secrets or {KEY: SECRET}, "bedrock", tokens=tokens)


@pytest.fixture(autouse=True)
def isolated_aws_env(monkeypatch, tmp_path):
    """No credentials from this machine's environment, files or instance metadata."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


async def test_explicit_keys_sign_the_encoded_path_and_the_body():
    req = request()
    await SigV4Step("b", adapter(aws_access_key_id=KEY, aws_secret_access_key=SECRET)).apply(req)
    assert req.headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY}/")
    assert "/us-east-1/bedrock/aws4_request" in req.headers["Authorization"]
    assert "X-Amz-Security-Token" not in req.headers
    assert check(req) == "us-east-1"
    with pytest.raises(SigV4Error, match="signature we calculated"):
        check(req, body=b'{"messages": [1]}')
    # What yarl would send without encoded=True: ':' instead of '%3A' -> AWS refuses the signature.
    with pytest.raises(SigV4Error) as exc:
        check(req, sent_url=URL.replace("%3A", ":"))
    assert exc.value.error_type == "InvalidSignatureException"


async def test_the_host_signed_is_the_one_called():
    req = request("http://127.0.0.1:9999/model/m%3A0/converse")
    await SigV4Step("b", adapter(aws_access_key_id=KEY, aws_secret_access_key=SECRET)).apply(req)
    check(req)  # Host 127.0.0.1:9999
    with pytest.raises(SigV4Error):
        check(req, sent_url="http://127.0.0.1:9998/model/m%3A0/converse")


async def test_each_attempt_is_signed_afresh():
    step = SigV4Step("b", adapter(aws_access_key_id=KEY, aws_secret_access_key=SECRET))
    req = request()
    await step.apply(req)
    await step.apply(req)  # a retry of the same request: the old signature is replaced, not kept
    assert sum(k == "Authorization" for k in req.headers) == 1
    check(req)


@pytest.mark.parametrize("token", ["", None])
async def test_an_empty_session_token_means_none(token):
    req = request()
    await SigV4Step("b", adapter(aws_access_key_id=KEY, aws_secret_access_key=SECRET, aws_session_token=token)).apply(req)
    assert "X-Amz-Security-Token" not in req.headers
    check(req)


async def test_a_session_token_is_sent_and_signed():
    req = request()
    await SigV4Step("b", adapter(aws_access_key_id=KEY, aws_secret_access_key=SECRET, aws_session_token="tok")).apply(req)
    assert req.headers["X-Amz-Security-Token"] == "tok"
    check(req, tokens={KEY: "tok"})
    req.headers["X-Amz-Security-Token"] = "other"
    with pytest.raises(SigV4Error, match="security token"):
        check(req, tokens={KEY: "tok"})


def test_half_a_key_pair_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^backends\.b: give both aws_access_key_id and aws_secret_access_key"):
        SigV4Step("b", adapter(aws_access_key_id=KEY))


async def test_default_chain_reads_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    req = request()
    await SigV4Step("b", adapter()).apply(req)
    check(req)


async def test_default_chain_reads_a_shared_profile(monkeypatch, tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text(f"[team]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", "team")
    req = request()
    await SigV4Step("b", adapter()).apply(req)
    check(req)


async def test_no_credentials_anywhere_is_a_clear_error():
    with pytest.raises(ProxyError, match="no AWS credentials found") as exc:
        await SigV4Step("b", adapter()).apply(request())
    assert exc.value.kind == "upstream_unavailable"


class Refresher:
    """A refreshable credential source (like STS AssumeRoleWithWebIdentity) that records its calls."""

    def __init__(self, first: timedelta, delay: float = 0.0, lifetime: timedelta = timedelta(hours=1)) -> None:
        self.calls: list[str] = []
        self.first = first
        self.lifetime = lifetime
        self.delay = delay

    def __call__(self) -> dict[str, str]:
        self.calls.append(threading.current_thread().name)
        if self.delay:
            import time

            time.sleep(self.delay)
        expiry = datetime.now(timezone.utc) + (self.lifetime if len(self.calls) > 1 else self.first)
        return {"access_key": KEY, "secret_key": SECRET, "token": f"t{len(self.calls)}", "expiry_time": expiry.isoformat()}


def refreshable_step(monkeypatch, source: Refresher) -> SigV4Step:
    step = SigV4Step("b", adapter())
    first = source()
    creds = RefreshableCredentials.create_from_metadata(first, source, "test")
    monkeypatch.setattr(step._session, "get_credentials", lambda: creds)
    return step


async def test_credentials_about_to_expire_are_refreshed_off_the_loop_once(monkeypatch):
    source = Refresher(first=timedelta(minutes=5), delay=0.05)  # inside botocore's refresh window
    step = refreshable_step(monkeypatch, source)
    loop_thread = threading.current_thread().name
    reqs = [request() for _ in range(5)]
    await asyncio.gather(*(step.apply(r) for r in reqs))
    refreshes = source.calls[1:]  # the first call built the initial credentials
    assert refreshes and loop_thread not in refreshes
    assert len(refreshes) == 1  # five concurrent requests, one refresh
    for r in reqs:
        check(r, tokens={KEY: "t2"})  # all signed with the refreshed set


async def test_short_lived_credentials_never_refresh_on_the_loop(monkeypatch):
    source = Refresher(first=timedelta(minutes=5), lifetime=timedelta(minutes=5))  # always due
    step = refreshable_step(monkeypatch, source)
    for _ in range(3):
        await step.apply(request())
    assert source.calls[1:] and threading.current_thread().name not in source.calls[1:]


async def test_fresh_credentials_are_not_refreshed(monkeypatch):
    source = Refresher(first=timedelta(hours=1))
    step = refreshable_step(monkeypatch, source)
    await step.apply(request())  # resolves the chain (once)
    before = len(source.calls)
    for _ in range(3):
        await step.apply(request())
    assert len(source.calls) == before
