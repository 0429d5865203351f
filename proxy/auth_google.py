"""Google OAuth2 access tokens for Vertex AI: google-auth credentials (extra `vertex`).

Credentials: the service-account JSON file in the backend's `credentials` (read at start-up, so a
missing or malformed file fails before the server starts; google-auth signs a JWT with its key and
exchanges it at the file's `token_uri`), else Application Default Credentials (GOOGLE_APPLICATION_
CREDENTIALS, gcloud's user credentials, workload identity, the GCE/GKE metadata server), resolved
on first use because that may need the network.

google-auth's refresh is synchronous HTTP, so it runs in a worker thread, at most one at a time per
backend, bounded by CREDENTIALS_TIMEOUT.  The token is cached; once it is stale (google-auth's
refresh threshold, a few minutes before expiry) requests keep using it while one background
refresh runs, and only a missing or expired token makes requests wait -- all for the same refresh.
A token the upstream answers 401 to is dropped (`rejected`), so a revoked one costs one request.
"""

from __future__ import annotations

import functools

import google.auth
import google.auth.transport.requests
from google.auth.credentials import Credentials, TokenState
from google.auth.exceptions import GoogleAuthError
from google.oauth2 import service_account

from adapters.base import Backend, HttpRequest

from .config import ConfigError
from .upstream_auth import CREDENTIALS_TIMEOUT, BlockingRefresh

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


class GoogleOAuthStep:
    __slots__ = ("name", "_credentials", "_token", "_http")

    def __init__(self, name: str, adapter: Backend) -> None:
        self.name = name
        path = getattr(adapter.options, "credentials", None)
        self._credentials: Credentials | None = None
        if path:
            try:
                self._credentials = service_account.Credentials.from_service_account_file(path, scopes=SCOPES)
            except (OSError, ValueError, KeyError) as exc:
                raise ConfigError(f"backends.{name}.credentials: not a readable service-account JSON file ({exc})") from None
        self._token = BlockingRefresh(name, "a Google access token", self._refresh, (GoogleAuthError,))
        self._http = None  # google-auth's requests transport, made in the worker thread on first refresh

    async def apply(self, req: HttpRequest) -> None:
        creds = self._credentials
        state = creds.token_state if creds is not None else TokenState.INVALID
        if state == TokenState.FRESH:
            token = creds.token  # type: ignore[union-attr]
        elif state == TokenState.STALE:
            token = creds.token  # type: ignore[union-attr]  # still valid: refresh ahead, do not wait
            self._token.start()
        else:
            token = await self._token.wait()
        req.headers["authorization"] = f"Bearer {token}"

    def rejected(self, req: HttpRequest) -> None:
        """Vertex refused the token this step added (revoked, or issued for a deleted key): forget it,
        so the next request waits for a new one instead of failing until it would have expired."""
        creds = self._credentials
        if creds is not None and creds.token and req.headers.get("authorization") == f"Bearer {creds.token}":
            creds.token = None

    def _refresh(self) -> str:
        """In a worker thread: resolve ADC once, then fetch a new access token."""
        creds = self._credentials
        if creds is None:
            creds, _project = google.auth.default(scopes=SCOPES)
        if self._http is None:
            self._http = functools.partial(google.auth.transport.requests.Request(), timeout=CREDENTIALS_TIMEOUT)
        creds.refresh(self._http)
        self._credentials = creds
        return creds.token
