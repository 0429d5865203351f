"""AWS Signature Version 4 for Bedrock: botocore's signer and credential chain (extra `bedrock`).

Credentials: the backend's `aws_access_key_id` / `aws_secret_access_key` (+ `aws_session_token`;
empty means none) when given, else botocore's default chain -- environment, shared profile, web
identity (EKS IRSA), container and instance roles.  The chain may do network I/O (STS, the instance
metadata service) and botocore refreshes temporary credentials synchronously, so resolving and
refreshing run in a worker thread, at most one at a time per backend, ahead of expiry (botocore's
advisory window) and bounded by CREDENTIALS_TIMEOUT; requests meanwhile wait for that one refresh.

Signing is pure CPU (a body hash and a few HMACs) and runs inline.  botocore signs the URL exactly as
given: its path is already percent-encoded (`%3A` in a model id) and botocore encodes it once more
for the canonical request, as AWS does for every service but S3.  The host signed is the one in the
URL, i.e. the one actually called (a `base_url` override included).
"""

from __future__ import annotations

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError

from adapters.base import Backend, HttpRequest
from adapters.errors import ProxyError

from .config import ConfigError
from .upstream_auth import BlockingRefresh

AUTH_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")


class SigV4Step:
    __slots__ = ("name", "region", "service", "secrets", "_credentials", "_session", "_refresh")

    def __init__(self, name: str, adapter: Backend) -> None:
        opts = adapter.options
        key = getattr(opts, "aws_access_key_id", None) or None
        secret = getattr(opts, "aws_secret_access_key", None) or None
        if (key is None) != (secret is None):
            raise ConfigError(
                f"backends.{name}: give both aws_access_key_id and aws_secret_access_key, or neither "
                "(then the standard AWS credential chain is used)"
            )
        self.name = name
        self.region: str = opts.region  # type: ignore[attr-defined]
        self.service: str = adapter.signing_name  # type: ignore[attr-defined]
        token = getattr(opts, "aws_session_token", None) or None  # "" (an unset ${VAR:-}) means none
        self.secrets = tuple(x for x in (key, secret, token) if x)  # never in an error text
        self._credentials: Credentials | None = Credentials(key, secret, token) if key else None
        self._session = None if key else botocore.session.Session()  # reads nothing until asked
        self._refresh = BlockingRefresh(name, "AWS credentials", self._load, (BotoCoreError,))

    async def apply(self, req: HttpRequest) -> None:
        creds = self._credentials
        if creds is None or (isinstance(creds, RefreshableCredentials) and creds.refresh_needed()):
            frozen = await self._refresh.wait()
        else:
            frozen = creds.get_frozen_credentials()  # nothing to refresh: no I/O
        headers = {k: v for k, v in req.headers.items() if k not in AUTH_HEADERS}  # a previous attempt's
        signed = AWSRequest(method=req.method, url=req.url, data=req.body, headers=headers)
        SigV4Auth(frozen, self.service, self.region).add_auth(signed)
        for name in AUTH_HEADERS:
            value = signed.headers.get(name)
            if value is not None:
                headers[name] = value
        req.headers = headers

    def rejected(self, req: HttpRequest) -> None:
        """Nothing cached to drop: every request is signed afresh and temporary credentials are
        refreshed by their expiry."""

    def _load(self) -> ReadOnlyCredentials:
        """In a worker thread: resolve the chain once, and refresh temporary credentials."""
        creds = self._credentials
        if creds is None:
            creds = self._session.get_credentials()  # type: ignore[union-attr]
            if creds is None:
                raise ProxyError(
                    "upstream_unavailable",
                    f"backend {self.name!r}: no AWS credentials found (set aws_access_key_id and "
                    "aws_secret_access_key, or the standard AWS environment, profile or role)",
                )
        frozen = creds.get_frozen_credentials()  # a RefreshableCredentials refreshes here, off the loop
        self._credentials = creds
        return frozen
