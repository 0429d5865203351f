"""The `state` section: where counters, run-time keys and usage are kept."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from .config_base import ConfigError

STATE_SCHEMES = ("sqlite:///", "redis://", "rediss://", "unix://")


class StateConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    # Counters, run-time keys and usage.  SQLAlchemy-style URL: sqlite:///relative.db,
    # sqlite:////absolute/path.db, redis://host:6379/0 (shared by every replica).
    url: str = "sqlite:///llm-proxy-state.db"
    on_error: Literal["closed", "open"] = "closed"  # store unreachable: 503 (closed) or admit and log (open)
    timeout: float = 0.25  # seconds, every call to the store


def check_state(state: StateConfig) -> None:
    if not state.url.startswith(STATE_SCHEMES):
        raise ConfigError(f"state.url: must start with one of {', '.join(STATE_SCHEMES)}")
    if state.timeout <= 0:
        raise ConfigError("state.timeout: must be > 0")
