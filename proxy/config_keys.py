"""The `auth` section: client keys (each with its models and limits) and the admin key.  The same
limits are what the admin API accepts for run-time keys (`check_limits`)."""

from __future__ import annotations

import hashlib
import re

from msgspec import Struct, field

from .config_base import ConfigError


class BudgetConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    usd: float  # spend cap
    period: str | None = None  # "1h", "1d", "7d", "30d" (counted from the key's first request); None = lifetime


class KeyLimits(Struct, forbid_unknown_fields=True, kw_only=True):
    """What a client key may do; every field absent = unlimited.  Shared by config keys and the admin API."""

    models: list[str] | None = None  # globs over client model names
    rpm: int | None = None  # requests per minute (sliding 60 s window)
    tpm: int | None = None  # prompt + completion tokens per minute (sliding 60 s window)
    max_parallel: int | None = None  # requests in flight at once
    budget: BudgetConfig | None = None


class KeyConfig(KeyLimits, forbid_unknown_fields=True, kw_only=True):
    name: str = ""  # shown in metrics, logs and the admin API; never the secret
    key: str | None = None
    key_sha256: str | None = None  # hex digest, so the config need not hold the secret


class AuthConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    keys: list[str | KeyConfig] = field(default_factory=list)  # a plain string = an unlimited key
    admin_key: str | None = None  # Bearer key for /admin/*; absent = admin API off
    # Paths answered without a key (exact, or a prefix ending in "*"); every other route needs one.
    public: list[str] = field(default_factory=lambda: ["/health/live", "/health/ready", "/metrics"])


KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PERIOD = re.compile(r"([1-9][0-9]{0,4})([hd])")


def period_seconds(period: str | None) -> float | None:
    """A budget period ("1h", "30d") in seconds; None for a lifetime budget."""
    if period is None:
        return None
    m = _PERIOD.fullmatch(period)
    if m is None:
        raise ValueError(f"budget period {period!r}: expected a number of hours or days, e.g. 1h, 1d, 7d, 30d")
    return int(m.group(1)) * (3600 if m.group(2) == "h" else 86400)


def key_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_configs(auth: AuthConfig) -> list[KeyConfig]:
    """Every client key as a KeyConfig; a plain string is an unlimited key named after its hash."""
    out = []
    for k in auth.keys:
        if isinstance(k, str):
            if k:  # `${OPTIONAL_KEY:-}` that is unset drops the key
                out.append(KeyConfig(key=k, name="key-" + key_sha256(k)[:8]))
        else:
            out.append(k)
    return out


def check_limits(limits: KeyLimits, path: str) -> None:
    for name in ("rpm", "tpm", "max_parallel"):
        value = getattr(limits, name)
        if value is not None and value < 1:
            raise ConfigError(f"{path}.{name}: must be >= 1")
    if limits.models is not None and not all(isinstance(m, str) and m for m in limits.models):
        raise ConfigError(f"{path}.models: model name globs must be non-empty strings")
    if limits.budget is not None:
        if limits.budget.usd < 0:
            raise ConfigError(f"{path}.budget.usd: must be >= 0")
        try:
            period_seconds(limits.budget.period)
        except ValueError as exc:
            raise ConfigError(f"{path}.budget.period: {exc}") from None


def check_auth(auth: AuthConfig) -> None:
    for i, path in enumerate(auth.public):
        if not path.startswith("/") or "*" in path[:-1]:
            raise ConfigError(f"auth.public[{i}]: a path starting with '/', optionally ending in '*' (a prefix)")
    if auth.admin_key == "":
        auth.admin_key = None  # `${PROXY_ADMIN_KEY:-}` unset: admin API off
    keys = key_configs(auth)
    if not keys and auth.admin_key is None:
        raise ConfigError("auth.keys: empty (after environment interpolation); remove `auth` to disable client auth")
    names: set[str] = set()
    hashes: set[str] = set()
    for i, k in enumerate(keys):
        path = f"auth.keys[{i}]"
        if not KEY_NAME.fullmatch(k.name):
            raise ConfigError(f"{path}.name: required, 1-64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
        if k.name in names:
            raise ConfigError(f"{path}.name: duplicate key name {k.name!r}")
        names.add(k.name)
        if (k.key is None) == (k.key_sha256 is None):
            raise ConfigError(f"{path}: give exactly one of `key` and `key_sha256`")
        if k.key is not None and not k.key:
            raise ConfigError(f"{path}.key: empty (after environment interpolation)")
        if k.key_sha256 is not None:
            k.key_sha256 = k.key_sha256.lower()
            if not _SHA256.fullmatch(k.key_sha256):
                raise ConfigError(f"{path}.key_sha256: expected 64 hex digits (sha256 of the key)")
        digest = k.key_sha256 or key_sha256(k.key or "")
        if digest in hashes:
            raise ConfigError(f"{path}: the same key is listed twice")
        hashes.add(digest)
        check_limits(k, path)
    if auth.admin_key is not None and key_sha256(auth.admin_key) in hashes:
        raise ConfigError("auth.admin_key: must differ from every client key")
