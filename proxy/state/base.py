"""The state store: what every worker and replica shares -- rate-limit windows, in-flight leases,
spend, run-time keys, and generic JSON records with a time to live.

How this works.  A store is one small async interface with two implementations: SQLite (the default;
one file shared by the workers of one host, WAL mode, each step one `BEGIN IMMEDIATE` transaction)
and Redis (shared by replicas; each step one server-side Lua script, so one round trip).  Limits are
enforced *inside* the store in one atomic step, never as read-check-write from the workers:

- `admit(ask, now)` expires old entries, checks budget, in-flight, requests and tokens against the
  limits, and either refuses (with the seconds until the window frees) or records the request with its
  token and cost reservation, all at once;
- `settle(done, now)` reconciles that reservation with what the request really used and frees its
  in-flight lease.

Windows are sliding logs over the last `WINDOW` seconds (each admitted request is an entry with its
time and tokens): at most `rpm` requests and `tpm` tokens are admitted in any 60 s, with no minute
boundary to burst across.  In-flight leases expire after `lease_ttl`, so a worker killed mid-request
does not hold its slots for ever.  Every call has a short timeout; failures raise `StoreUnavailable`.

The same stores keep generic records (`put_record` / `get_record` / `delete_record`, and the batch
forms `put_records` / `get_records`, one transaction or round trip each): opaque bytes under
(scope, id) with an optional time to live.  And append-only lists (`append_list` / `read_list` /
`delete_list`): values under (scope, list id) in the order they were appended.  `append_list` is one
atomic step (one `BEGIN IMMEDIATE` transaction, one Lua script): two processes appending to the same
list at once both land, whole and in some order, and the length bound holds across them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

WINDOW = 60.0  # seconds: the rate-limit window (per minute)


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer in time (the message names no secret)."""


@dataclass(slots=True)
class Ask:
    """One request asking to be admitted under a key's limits (None = no such limit)."""

    name: str  # the key's name: counters are per name, so a config reload keeps them
    tokens: int  # reserved tokens: estimated prompt + max completion (at most tpm)
    cost: float = 0.0  # reserved USD (budgeted keys)
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget: float | None = None  # USD
    period: float | None = None  # budget period in seconds; None = lifetime
    lease_ttl: float = 1200.0
    version: str = ""  # run-time keys: admit only if the stored key still has this version
    lease: str = ""  # a unique id for this admission, for stores that do not make their own


@dataclass(slots=True)
class Decision:
    admitted: bool
    reason: str = ""  # refused: "budget" | "max_parallel" | "rpm" | "tpm" | "revoked" | "stale"
    retry_after: float | None = None  # seconds until the refusing limit frees
    requests: int = 0  # in the window, this one included
    tokens: int = 0  # in the window, this reservation included
    in_flight: int = 0
    spend: float = 0.0  # USD in the current period, reservations of requests in flight included
    period_end: float | None = None  # when the current budget period ends (None: lifetime)
    lease: str = ""  # admitted: the id to settle with


@dataclass(slots=True)
class Done:
    """The end of an admitted request: its reservation and what it really used."""

    name: str
    lease: str
    reserved_tokens: int
    used_tokens: int
    reserved_cost: float = 0.0
    used_cost: float = 0.0
    period: float | None = None


@dataclass(slots=True)
class Usage:
    """A key's counters now (admin API)."""

    requests: int  # in the last WINDOW seconds
    tokens: int
    in_flight: int
    spend: float  # settled USD in the current period
    held: float  # USD reserved by requests in flight
    period_start: float | None
    period_end: float | None


@dataclass(slots=True)
class KeyRecord:
    """A key made through the admin API: only the hash of its secret is stored."""

    name: str
    digest: str
    limits: bytes  # JSON of config.KeyLimits
    version: str
    created: float


class StateStore(Protocol):
    async def admit(self, ask: Ask, now: float) -> Decision: ...

    async def settle(self, done: Done, now: float) -> None: ...

    async def usage(self, name: str, period: float | None, now: float) -> Usage: ...

    async def create_key(self, rec: KeyRecord) -> bool: ...  # False: the name is taken

    async def key_by_digest(self, digest: str) -> KeyRecord | None: ...

    async def key_by_name(self, name: str) -> KeyRecord | None: ...

    async def list_keys(self) -> list[KeyRecord]: ...

    async def update_key(self, rec: KeyRecord) -> bool: ...  # False: no such key

    async def delete_key(self, name: str) -> bool: ...  # also drops its counters

    async def put_record(self, scope: str, rid: str, data: bytes, ttl: float | None, now: float) -> None: ...

    async def get_record(self, scope: str, rid: str, now: float) -> bytes | None: ...

    async def delete_record(self, scope: str, rid: str) -> bool: ...

    async def put_records(self, scope: str, items: list[tuple[str, bytes]], ttl: float | None, now: float) -> None: ...

    async def get_records(self, scope: str, rids: list[str], now: float) -> list[bytes | None]: ...

    # Appends `values` unless the list would then hold more than `limit` (returns None, nothing
    # appended); else the new length.  The whole list's time to live restarts at `ttl`.
    async def append_list(self, scope: str, lid: str, values: list[bytes], ttl: float | None, now: float,
                          limit: int) -> int | None: ...

    async def read_list(self, scope: str, lid: str, now: float) -> list[bytes]: ...

    async def delete_list(self, scope: str, lid: str) -> bool: ...

    async def ping(self) -> None: ...  # raises StoreUnavailable (readiness: /health/ready)

    async def close(self) -> None: ...


def roll_period(start: float | None, period: float | None, now: float) -> tuple[float, bool]:
    """(current period start, whether a new period began).  Periods are counted from the key's first
    request and follow each other back to back, so a 30d budget resets every 30 days from then."""
    if start is None:
        return now, True
    if period is None or now < start + period:
        return start, False
    return start + ((now - start) // period) * period, True


def tokens_retry_after(entries: list[tuple[float, int]], excess: int, now: float) -> float:
    """Seconds until the oldest entries (time, tokens) holding `excess` tokens leave the window."""
    freed = 0
    for ts, n in entries:
        freed += n
        if freed >= excess:
            return max(0.0, ts + WINDOW - now)
    return WINDOW


def open_store(url: str, timeout: float) -> StateStore:
    """The store for a `state.url` (opened lazily: nothing connects until the first call)."""
    if url.startswith("sqlite:///"):
        from .sqlite_store import SQLiteStore

        return SQLiteStore(url[len("sqlite:///") :], timeout)
    from .redis_store import RedisStore

    return RedisStore(url, timeout)
