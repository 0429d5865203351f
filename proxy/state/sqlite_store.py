"""SQLite state store: one database file shared by every worker process of a host.

How this works.  Each step is one `BEGIN IMMEDIATE` transaction (the write lock is taken first, so
two workers' admissions are serialised by SQLite itself) in WAL mode with `synchronous=NORMAL` (a
commit appends to the log without an fsync; a power cut may lose the last moments of counters, never
corrupt them).  A transaction is a few indexed statements (tens of microseconds), so it runs on the
event loop's thread: handing it to a thread would cost more than the work.  When another worker holds
the lock for longer than `LOOP_BUSY_MS`, the step is retried on a worker thread with its own
connection, waiting up to the store timeout there instead of blocking the loop.

Tables: `hits` (one row per admitted request in the window: time, tokens), `flights` (in-flight
leases with an expiry), `totals` (running request/token sums of the window, spend, held reservations,
period start, per key name), `keys` (run-time keys: hash, limits JSON, version), `records`.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from .base import WINDOW, Ask, Decision, Done, KeyRecord, StoreUnavailable, Usage, roll_period, tokens_retry_after

T = TypeVar("T")
LOOP_BUSY_MS = 10  # longest the event loop waits for another worker's lock before moving to a thread
RECORD_SWEEP = 64  # expired records removed per put

SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY, name TEXT NOT NULL, ts REAL NOT NULL, tokens INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS hits_by_name ON hits (name, ts);
CREATE TABLE IF NOT EXISTS flights (id INTEGER PRIMARY KEY, name TEXT NOT NULL, until REAL NOT NULL);
CREATE INDEX IF NOT EXISTS flights_by_name ON flights (name, until);
CREATE TABLE IF NOT EXISTS totals (
    name TEXT PRIMARY KEY, requests INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,
    spend REAL NOT NULL DEFAULT 0, held REAL NOT NULL DEFAULT 0, period_start REAL);
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, limits BLOB NOT NULL, version TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS records (scope TEXT NOT NULL, id TEXT NOT NULL, data BLOB NOT NULL, expires REAL,
    PRIMARY KEY (scope, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_expiry ON records (expires);
"""


class SQLiteStore:
    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._loop_conn: sqlite3.Connection | None = None
        self._thread_conn: sqlite3.Connection | None = None
        self._thread_lock = asyncio.Lock()

    # -- connections and transactions ---------------------------------------------------------------
    def _connect(self, busy_ms: int) -> sqlite3.Connection:
        if self.path not in ("", ":memory:"):
            parent = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(parent):
                raise StoreUnavailable(f"state store directory {parent} does not exist")
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=busy_ms / 1000)
        try:
            conn.execute("PRAGMA busy_timeout = %d" % max(busy_ms, int(self.timeout * 1000)))
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            _create_schema(conn)
            conn.execute("PRAGMA busy_timeout = %d" % busy_ms)
        except BaseException:
            conn.close()
            raise
        return conn

    def _loop(self) -> sqlite3.Connection:
        if self._loop_conn is None:
            self._loop_conn = self._connect(LOOP_BUSY_MS)
        return self._loop_conn

    async def _run(self, step: Callable[[sqlite3.Connection], T]) -> T:
        """Run one transaction: on the loop's thread, or on a worker thread while the lock is busy."""
        try:
            try:
                return _transaction(self._loop(), step)
            except sqlite3.OperationalError as exc:
                if not _locked(exc):
                    raise
            async with asyncio.timeout(self.timeout * 2):
                async with self._thread_lock:
                    return await asyncio.to_thread(self._in_thread, step)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"state store (sqlite) failed: {exc}") from None
        except TimeoutError:
            raise StoreUnavailable("state store (sqlite) did not answer in time") from None

    def _in_thread(self, step: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread_conn is None:
            self._thread_conn = self._connect(int(self.timeout * 1000))
        return _transaction(self._thread_conn, step)

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        async with self._thread_lock:
            for conn in (self._loop_conn, self._thread_conn):
                if conn is not None:
                    conn.close()
            self._loop_conn = self._thread_conn = None

    # -- admission --------------------------------------------------------------------------------------
    async def admit(self, ask: Ask, now: float) -> Decision:
        return await self._run(lambda c: _admit(c, ask, now))

    async def settle(self, done: Done, now: float) -> None:
        await self._run(lambda c: _settle(c, done, now))

    async def usage(self, name: str, period: float | None, now: float) -> Usage:
        return await self._run(lambda c: _usage(c, name, period, now))

    # -- run-time keys ----------------------------------------------------------------------------------
    async def create_key(self, rec: KeyRecord) -> bool:
        def step(c: sqlite3.Connection) -> bool:
            if c.execute("SELECT 1 FROM keys WHERE name = ?", (rec.name,)).fetchone():
                return False
            c.execute("DELETE FROM totals WHERE name = ?", (rec.name,))  # a fresh key starts from zero
            c.execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?)", (rec.name, rec.digest, rec.limits, rec.version, rec.created))
            return True

        return await self._run(step)

    async def key_by_digest(self, digest: str) -> KeyRecord | None:
        return await self._run(lambda c: _key(c, "digest", digest))

    async def key_by_name(self, name: str) -> KeyRecord | None:
        return await self._run(lambda c: _key(c, "name", name))

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self._run(lambda c: c.execute(f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY name").fetchall())
        return [KeyRecord(*row) for row in rows]

    async def update_key(self, rec: KeyRecord) -> bool:
        def step(c: sqlite3.Connection) -> bool:
            cur = c.execute("UPDATE keys SET limits = ?, version = ? WHERE name = ?", (rec.limits, rec.version, rec.name))
            return cur.rowcount > 0

        return await self._run(step)

    async def delete_key(self, name: str) -> bool:
        def step(c: sqlite3.Connection) -> bool:
            found = c.execute("DELETE FROM keys WHERE name = ?", (name,)).rowcount > 0
            for table in ("hits", "flights", "totals"):
                c.execute(f"DELETE FROM {table} WHERE name = ?", (name,))
            return found

        return await self._run(step)

    # -- records ----------------------------------------------------------------------------------------
    async def put_record(self, scope: str, rid: str, data: bytes, ttl: float | None, now: float) -> None:
        def step(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM records WHERE (scope, id) IN (SELECT scope, id FROM records WHERE expires <= ? LIMIT ?)",
                      (now, RECORD_SWEEP))  # fmt: skip
            c.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", (scope, rid, data, None if ttl is None else now + ttl))

        await self._run(step)

    async def get_record(self, scope: str, rid: str, now: float) -> bytes | None:
        def step(c: sqlite3.Connection) -> bytes | None:
            row = c.execute("SELECT data FROM records WHERE scope = ? AND id = ? AND (expires IS NULL OR expires > ?)",
                            (scope, rid, now)).fetchone()  # fmt: skip
            return None if row is None else bytes(row[0])

        return await self._run(step)

    async def delete_record(self, scope: str, rid: str) -> bool:
        return await self._run(lambda c: c.execute("DELETE FROM records WHERE scope = ? AND id = ?", (scope, rid)).rowcount > 0)


# --------------------------------------------------------------------------------------------------
# Transactions (plain functions over a connection, run by SQLiteStore._run)


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _locked(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _transaction(conn: sqlite3.Connection, step: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = step(conn)
        conn.execute("COMMIT")
        return result
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _totals(c: sqlite3.Connection, name: str, now: float, period: float | None) -> list[Any]:
    """[requests, tokens, spend, held, period_start] with expired window entries dropped and the
    budget period rolled; written back by the caller."""
    row = c.execute("SELECT requests, tokens, spend, held, period_start FROM totals WHERE name = ?", (name,)).fetchone()
    if row is None:
        c.execute("INSERT INTO totals (name) VALUES (?)", (name,))
        row = (0, 0, 0.0, 0.0, None)
    requests, tokens, spend, held, start = row
    cut = now - WINDOW
    n, t = c.execute("SELECT count(*), total(tokens) FROM hits WHERE name = ? AND ts <= ?", (name, cut)).fetchone()
    if n:
        c.execute("DELETE FROM hits WHERE name = ? AND ts <= ?", (name, cut))
        requests, tokens = max(0, requests - n), max(0, tokens - int(t))
    start, rolled = roll_period(start, period, now)
    if rolled:
        spend = 0.0
    return [requests, tokens, spend, held, start]


def _save_totals(c: sqlite3.Connection, name: str, t: list[Any]) -> None:
    c.execute("UPDATE totals SET requests = ?, tokens = ?, spend = ?, held = ?, period_start = ? WHERE name = ?", (*t, name))


def _admit(c: sqlite3.Connection, a: Ask, now: float) -> Decision:
    if a.version:
        row = c.execute("SELECT version FROM keys WHERE name = ?", (a.name,)).fetchone()
        if row is None or row[0] != a.version:
            return Decision(False, "revoked" if row is None else "stale")
    t = _totals(c, a.name, now, a.period)
    requests, tokens, spend, held, start = t
    flying = 0
    if a.max_parallel is not None:
        c.execute("DELETE FROM flights WHERE name = ? AND until <= ?", (a.name, now))
        flying = c.execute("SELECT count(*) FROM flights WHERE name = ?", (a.name,)).fetchone()[0]
    period_end = start + a.period if a.period is not None else None
    refusal = _refusal(c, a, now, requests, tokens, flying, spend + held, period_end)
    if refusal is None:
        lease = c.execute("INSERT INTO hits (name, ts, tokens) VALUES (?, ?, ?)", (a.name, now, a.tokens)).lastrowid
        if a.max_parallel is not None:
            c.execute("INSERT INTO flights VALUES (?, ?, ?)", (lease, a.name, now + a.lease_ttl))
            flying += 1
        requests, tokens, held = requests + 1, tokens + a.tokens, held + a.cost
        t[0], t[1], t[3] = requests, tokens, held
    _save_totals(c, a.name, t)
    if refusal is not None:
        return refusal
    return Decision(True, requests=requests, tokens=tokens, in_flight=flying, spend=spend + held,
                    period_end=period_end, lease=str(lease))  # fmt: skip


def _refusal(c: sqlite3.Connection, a: Ask, now: float, requests: int, tokens: int, flying: int, spent: float,
             period_end: float | None) -> Decision | None:  # fmt: skip
    state = dict(requests=requests, tokens=tokens, in_flight=flying, spend=spent, period_end=period_end)
    if a.budget is not None and spent >= a.budget:
        return Decision(False, "budget", None if period_end is None else max(0.0, period_end - now), **state)
    if a.max_parallel is not None and flying >= a.max_parallel:
        return Decision(False, "max_parallel", 1.0, **state)
    if a.rpm is not None and requests >= a.rpm:
        (ts,) = c.execute("SELECT ts FROM hits WHERE name = ? ORDER BY ts LIMIT 1 OFFSET ?",
                          (a.name, requests - a.rpm)).fetchone()  # fmt: skip
        return Decision(False, "rpm", max(0.0, ts + WINDOW - now), **state)
    if a.tpm is not None and tokens + a.tokens > a.tpm:
        entries = c.execute("SELECT ts, tokens FROM hits WHERE name = ? ORDER BY ts", (a.name,)).fetchall()
        return Decision(False, "tpm", tokens_retry_after(entries, tokens + a.tokens - a.tpm, now), **state)
    return None


def _settle(c: sqlite3.Connection, d: Done, now: float) -> None:
    lease = int(d.lease)
    c.execute("DELETE FROM flights WHERE id = ?", (lease,))
    delta = d.used_tokens - d.reserved_tokens
    if delta and not c.execute("UPDATE hits SET tokens = ? WHERE id = ?", (d.used_tokens, lease)).rowcount:
        delta = 0  # the request outlived the window: its entry is gone, and so are its tokens
    if not (delta or d.used_cost or d.reserved_cost):
        return
    t = _totals(c, d.name, now, d.period)
    t[1] = max(0, t[1] + delta)
    t[2] += d.used_cost
    t[3] = max(0.0, t[3] - d.reserved_cost)
    _save_totals(c, d.name, t)


def _usage(c: sqlite3.Connection, name: str, period: float | None, now: float) -> Usage:
    t = _totals(c, name, now, period)
    _save_totals(c, name, t)
    flying = c.execute("SELECT count(*) FROM flights WHERE name = ? AND until > ?", (name, now)).fetchone()[0]
    start = t[4]
    return Usage(t[0], t[1], flying, t[2], t[3], start, start + period if period is not None else None)


_KEY_COLUMNS = "name, digest, limits, version, created"


def _key(c: sqlite3.Connection, column: str, value: str) -> KeyRecord | None:
    row = c.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE {column} = ?", (value,)).fetchone()
    return None if row is None else KeyRecord(row[0], row[1], bytes(row[2]), row[3], row[4])
