"""The `state` section: where counters, run-time keys, usage and stored responses are kept; and the
`responses` section: how long and how much of the Responses API's stored state is kept."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from .config_base import ConfigError
from .config_keys import period_seconds

STATE_SCHEMES = ("sqlite:///", "redis://", "rediss://", "unix://")


class StateConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    # Counters, run-time keys and usage.  SQLAlchemy-style URL: sqlite:///relative.db,
    # sqlite:////absolute/path.db, redis://host:6379/0 (shared by every replica).
    url: str = "sqlite:///llm-proxy-state.db"
    on_error: Literal["closed", "open"] = "closed"  # store unreachable: 503 (closed) or admit and log (open)
    timeout: float = 0.25  # seconds, every call to the store


class ResponsesConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    # Stored responses, their items and conversations (Responses API, `store` defaults to true).
    ttl: str | float = "30d"  # retention: "1h", "30d", or seconds (a conversation's restarts with each addition)
    max_stored_bytes: int = 4 * 1024 * 1024  # a larger response (input + output) is answered, not stored
    max_items: int = 4096  # items a response chain or a conversation may hold (beyond: 400)


def check_responses(cfg: ResponsesConfig) -> float:
    """The ttl in seconds (a bad section is a ConfigError)."""
    try:
        ttl = float(cfg.ttl) if not isinstance(cfg.ttl, str) else period_seconds(cfg.ttl)
    except ValueError as exc:
        raise ConfigError(f"responses.ttl: {exc}".replace("budget period", "duration")) from None
    if not ttl or ttl <= 0:
        raise ConfigError("responses.ttl: must be > 0")
    if cfg.max_stored_bytes < 1024:
        raise ConfigError("responses.max_stored_bytes: must be >= 1024")
    if cfg.max_items < 1:
        raise ConfigError("responses.max_items: must be >= 1")
    return ttl


def check_state(state: StateConfig) -> None:
    if not state.url.startswith(STATE_SCHEMES):
        raise ConfigError(f"state.url: must start with one of {', '.join(STATE_SCHEMES)}")
    if state.timeout <= 0:
        raise ConfigError("state.timeout: must be > 0")
