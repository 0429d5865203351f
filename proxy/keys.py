"""Client keys: who is calling, which models they may use, and which limits apply.

A key is known by the sha256 of its secret, never the secret itself: config keys are hashed once at
start-up (or given as `key_sha256`), keys made through the admin API are stored only as that hash.
Looking a key up is one hash and one dict lookup, so a key with no limits costs nothing more.

Run-time keys (admin API) live in the state store.  A worker caches what it read, but every request
of a run-time key is admitted by the store in one atomic step that also checks the key still exists
at the version the worker read (see `proxy.limiter`): a revoked or changed key is seen at once by every
worker and replica.  Unknown hashes are remembered briefly so a flood of wrong keys does not become a
flood of store reads (a new key's hash cannot be among them: its secret was only just made).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from adapters.base import KeyIn
from adapters.errors import ProxyError

from .config import AuthConfig, KeyLimits, key_configs, period_seconds
from .serverio import RequestHead
from .state.base import KeyRecord, StateStore, StoreUnavailable

NEGATIVE_TTL = 5.0  # seconds an unknown key hash is not looked up again
CACHE_MAX = 4096  # run-time keys cached per worker (and unknown hashes remembered)


@dataclass(slots=True)
class Identity:
    """One client key as the request path sees it."""

    name: str
    digest: str  # sha256 hex of the secret
    limits: KeyLimits
    source: str = "config"  # "config" | "admin"
    version: str = ""  # run-time keys: the stored record's version (admission checks it)
    allows: Callable[[str], bool] | None = None  # model-name filter; None = every model
    period: float | None = None  # budget period in seconds (None = lifetime)

    @property
    def limited(self) -> bool:
        """True when admission must go through the state store."""
        lim = self.limits
        return self.source == "admin" or bool(lim.rpm or lim.tpm or lim.max_parallel or lim.budget)

    def may_use(self, model: str) -> bool:
        return self.allows is None or self.allows(model)


def identity(name: str, digest: str, limits: KeyLimits, source: str = "config", version: str = "") -> Identity:
    budget = limits.budget
    return Identity(name, digest, limits, source, version, model_filter(limits.models),
                    period_seconds(budget.period) if budget is not None else None)  # fmt: skip


def from_record(rec: KeyRecord) -> Identity:
    """A run-time key from its stored record."""
    return identity(rec.name, rec.digest, msgspec.json.decode(rec.limits, type=KeyLimits), "admin", rec.version)


def model_filter(globs: list[str] | None) -> Callable[[str], bool] | None:
    """One compiled regex for a key's model globs (`*`, `?`, `[...]` as in shell patterns)."""
    if globs is None:
        return None
    if not globs:
        return lambda model: False
    pattern = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))
    return lambda model: pattern.match(model) is not None


def sha256_hex(secret: str) -> str:
    # surrogateescape: a header's non-UTF-8 bytes (aiohttp decodes them so) hash as sent -> no match, 401
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def supplied_key(request: RequestHead, places: Sequence[KeyIn]) -> str:
    """The key from the first of the places the route's format declares (`Frontend.client_key`)."""
    for place in places:
        if place.query is not None:
            supplied = request.query.get(place.query, "")
        else:
            supplied = request.headers.get(place.header, "")
            if place.scheme is not None:
                scheme, _, supplied = supplied.partition(" ")
                if scheme.lower() != place.scheme.lower():
                    continue
        supplied = supplied.strip()
        if supplied:
            return supplied
    return ""


def describe(places: Sequence[KeyIn]) -> str:
    """Where the key goes, for the 401 of a request without one: "x-api-key or Authorization: Bearer"."""
    return " or ".join(f"?{p.query}=" if p.query else f"{p.header}: {p.scheme}" if p.scheme else p.header
                       for p in places)  # fmt: skip


class KeyRing:
    """Config keys by hash, plus (with the admin API on) run-time keys read from the state store."""

    def __init__(self, auth: AuthConfig | None, store: StateStore | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.enabled = auth is not None
        public = auth.public if auth is not None else []
        self.public = frozenset(p for p in public if not p.endswith("*"))
        self.public_prefixes = tuple(p[:-1] for p in public if p.endswith("*"))
        self.config: dict[str, Identity] = {}
        if auth is not None:
            for k in key_configs(auth):
                digest = k.key_sha256 or sha256_hex(k.key or "")
                self.config[digest] = identity(k.name, digest, k)
        self.names = {ident.name for ident in self.config.values()}
        self.store = store  # run-time keys are read from it (None: admin API off)
        self._clock = clock
        self._cache: dict[str, Identity] = {}
        self._unknown: dict[str, float] = {}

    def is_public(self, path: str) -> bool:
        return path in self.public or (bool(self.public_prefixes) and path.startswith(self.public_prefixes))

    async def authenticate(self, request: RequestHead, places: Sequence[KeyIn]) -> Identity | None:
        """The caller's identity, from the key in `places` (the route's format's); None when auth is
        off or the path is public (`auth.public`: any key sent there is ignored).  Raises ProxyError
        401 for a missing or wrong key.  Every route but the admin API's goes through here."""
        if not self.enabled or self.is_public(request.path):
            return None
        supplied = supplied_key(request, places)
        if not supplied:
            raise ProxyError("authentication", f"missing API key ({describe(places)})", code="invalid_api_key")
        digest = sha256_hex(supplied)
        found = self.config.get(digest) or self._cache.get(digest)
        if found is None and self.store is not None:
            found = await self._lookup(digest)
        if found is None:
            raise ProxyError("authentication", "invalid API key", code="invalid_api_key")
        return found

    async def _lookup(self, digest: str) -> Identity | None:
        now = self._clock()
        seen = self._unknown.get(digest)
        if seen is not None and now - seen < NEGATIVE_TTL:
            return None
        found = await self._read(digest)
        if found is None:
            if len(self._unknown) >= CACHE_MAX:
                self._unknown.clear()
            self._unknown[digest] = now
            return None
        self.remember(found)
        return found

    async def _read(self, digest: str) -> Identity | None:
        try:
            rec = await self.store.key_by_digest(digest)
        except StoreUnavailable:
            # Never admit a key that cannot be checked, whatever state.on_error says.
            raise ProxyError("overloaded", "the gateway's state store is unavailable; try again shortly",
                             status=503) from None  # fmt: skip
        return None if rec is None else from_record(rec)

    async def refresh(self, key: Identity) -> Identity | None:
        """Read a run-time key again (its stored version changed); None once it is gone."""
        self.forget(key.digest)
        found = await self._read(key.digest)
        if found is not None:
            self.remember(found)
        return found

    def remember(self, ident: Identity) -> None:
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[ident.digest] = ident

    def forget(self, digest: str) -> None:
        """A run-time key changed or was revoked: read it again next time."""
        self._cache.pop(digest, None)
