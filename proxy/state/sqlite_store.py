"""SQLite state store: one database file shared by every worker process of a host.

How this works.  Each step is one `BEGIN IMMEDIATE` transaction (the write lock is taken first, so
two workers' admissions are serialised by SQLite itself) in WAL mode with `synchronous=NORMAL` (a
commit appends to the log without an fsync; a power cut may lose the last moments of counters, never
corrupt them).  A transaction is a few indexed statements (tens of microseconds), so it runs on the
event loop's thread: handing it to a thread would cost more than the work.  When another worker holds
the lock for longer than `LOOP_BUSY_MS`, the step is retried on a worker thread with its own
connection, waiting up to the store timeout there instead of blocking the loop.  Commits never
checkpoint (the step that copies the log into the database and fsyncs): a worker thread does that
at most once per `CHECKPOINT_EVERY` seconds, so no fsync ever runs on the event loop.

Tables: `hits` (one row per admitted request in the window: time, tokens), `flights` (in-flight
leases with an expiry), `totals` (running request/token sums of the window, leases in flight, spend,
held reservations, period start, per key name: no step scans a window), `keys` (run-time keys: hash, limits JSON, version), `records`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .base import WINDOW, Ask, Decision, Done, KeyRecord, StoreUnavailable, Usage, roll_period, tokens_retry_after

T = TypeVar("T")
log = logging.getLogger("llm_proxy")
LOOP_BUSY_MS = 10  # longest the event loop waits for another worker's lock before moving to a thread
# Expired records and list entries are swept by one write in SWEEP_EVERY (a sweep costs as much as
# the write itself), at most RECORD_SWEEP rows per table: far more than SWEEP_EVERY writes add.
SWEEP_EVERY = 16
RECORD_SWEEP = 512
CHECKPOINT_EVERY = 1.0  # seconds between WAL checkpoints (off the loop)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY, name TEXT NOT NULL, ts REAL NOT NULL, tokens INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS hits_by_name ON hits (name, ts);
CREATE TABLE IF NOT EXISTS flights (id INTEGER PRIMARY KEY, name TEXT NOT NULL, until REAL NOT NULL);
CREATE INDEX IF NOT EXISTS flights_by_name ON flights (name, until);
CREATE TABLE IF NOT EXISTS totals (
    name TEXT PRIMARY KEY, requests INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,
    spend REAL NOT NULL DEFAULT 0, held REAL NOT NULL DEFAULT 0, period_start REAL,
    flying INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, limits BLOB NOT NULL, version TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS records (scope TEXT NOT NULL, id TEXT NOT NULL, data BLOB NOT NULL, expires REAL,
    PRIMARY KEY (scope, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_expiry ON records (expires);
CREATE TABLE IF NOT EXISTS lists (seq INTEGER PRIMARY KEY, scope TEXT NOT NULL, lid TEXT NOT NULL, data BLOB NOT NULL,
    expires REAL);
CREATE INDEX IF NOT EXISTS lists_by_id ON lists (scope, lid, seq);
CREATE INDEX IF NOT EXISTS lists_by_expiry ON lists (expires);
"""


class SQLiteStore:
    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._loop_conn: sqlite3.Connection | None = None
        self._thread_conn: sqlite3.Connection | None = None
        self._thread_lock = asyncio.Lock()
        self._checkpoint: asyncio.Future | None = None
        self._checkpointed = time.monotonic()
        self._writes = 0

    # -- connections and transactions ---------------------------------------------------------------
    def _connect(self, busy_ms: int) -> sqlite3.Connection:
        if self.path not in ("", ":memory:"):
            parent = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(parent):
                raise StoreUnavailable(f"state store directory {parent} does not exist")
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=busy_ms / 1000)
        try:
            conn.execute("PRAGMA busy_timeout = %d" % max(busy_ms, int(self.timeout * 1000)))
            # Small pages: a commit appends every page it changed to the log, and these rows are tiny
            # (halves the commit; only takes effect when the file is created).
            conn.execute("PRAGMA page_size = 1024")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # see _maybe_checkpoint
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
                result = _transaction(self._loop(), step)
                self._maybe_checkpoint()
                return result
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

    def _maybe_checkpoint(self) -> None:
        now = time.monotonic()
        if now - self._checkpointed < CHECKPOINT_EVERY or self._checkpoint is not None:
            return
        self._checkpointed = now
        self._checkpoint = asyncio.get_running_loop().run_in_executor(None, self._checkpoint_now)
        self._checkpoint.add_done_callback(self._checkpoint_done)

    def _checkpoint_now(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.timeout)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # never waits for readers or writers
        finally:
            conn.close()

    def _checkpoint_done(self, fut: asyncio.Future) -> None:
        self._checkpoint = None
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("state store (sqlite) checkpoint failed: %s", fut.exception())

    def _in_thread(self, step: Callable[[sqlite3.Connection], T]) -> T:
        if self._thread_conn is None:
            self._thread_conn = self._connect(int(self.timeout * 1000))
        return _transaction(self._thread_conn, step)

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        if self._checkpoint is not None:
            await asyncio.wait([self._checkpoint])
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
        await self.put_records(scope, [(rid, data)], ttl, now)

    async def put_records(self, scope: str, items: list[tuple[str, bytes]], ttl: float | None, now: float) -> None:
        expires = None if ttl is None else now + ttl

        def step(c: sqlite3.Connection) -> None:
            self._maybe_sweep(c, now)
            c.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)",
                          [(scope, rid, data, expires) for rid, data in items])  # fmt: skip

        await self._run(step)

    async def get_records(self, scope: str, rids: list[str], now: float) -> list[bytes | None]:
        def step(c: sqlite3.Connection) -> list[bytes | None]:
            found: dict[str, bytes] = {}
            for i in range(0, len(rids), 500):  # SQLite's bound on host parameters
                chunk = rids[i : i + 500]
                rows = c.execute(f"SELECT id, data FROM records WHERE scope = ? AND id IN ({','.join('?' * len(chunk))})"
                                 " AND (expires IS NULL OR expires > ?)", (scope, *chunk, now))  # fmt: skip
                found.update((rid, bytes(data)) for rid, data in rows)
            return [found.get(rid) for rid in rids]

        return await self._run(step)

    async def get_record(self, scope: str, rid: str, now: float) -> bytes | None:
        def step(c: sqlite3.Connection) -> bytes | None:
            row = c.execute("SELECT data FROM records WHERE scope = ? AND id = ? AND (expires IS NULL OR expires > ?)",
                            (scope, rid, now)).fetchone()  # fmt: skip
            return None if row is None else bytes(row[0])

        return await self._run(step)

    async def delete_record(self, scope: str, rid: str) -> bool:
        return await self._run(lambda c: c.execute("DELETE FROM records WHERE scope = ? AND id = ?", (scope, rid)).rowcount > 0)

    def _maybe_sweep(self, c: sqlite3.Connection, now: float) -> None:
        """Expired records and list entries are removed by every SWEEP_EVERY-th write of this process,
        so nothing needs a sweeper task (reads never see them: they check the expiry)."""
        self._writes += 1
        if self._writes % SWEEP_EVERY == 1:
            _sweep(c, now)

    # -- lists ------------------------------------------------------------------------------------------
    async def append_list(self, scope: str, lid: str, values: list[bytes], ttl: float | None, now: float,
                          limit: int) -> int | None:
        expires = None if ttl is None else now + ttl

        def step(c: sqlite3.Connection) -> int | None:
            self._maybe_sweep(c, now)
            (n,) = c.execute("SELECT COUNT(*) FROM lists WHERE scope = ? AND lid = ? AND (expires IS NULL OR expires > ?)",
                             (scope, lid, now)).fetchone()  # fmt: skip
            if n + len(values) > limit:
                return None
            c.execute("UPDATE lists SET expires = ? WHERE scope = ? AND lid = ?", (expires, scope, lid))
            c.executemany("INSERT INTO lists (scope, lid, data, expires) VALUES (?, ?, ?, ?)",
                          [(scope, lid, v, expires) for v in values])  # fmt: skip
            return n + len(values)

        return await self._run(step)

    async def read_list(self, scope: str, lid: str, now: float) -> list[bytes]:
        def step(c: sqlite3.Connection) -> list[bytes]:
            rows = c.execute("SELECT data FROM lists WHERE scope = ? AND lid = ? AND (expires IS NULL OR expires > ?) "
                             "ORDER BY seq", (scope, lid, now))  # fmt: skip
            return [bytes(r[0]) for r in rows]

        return await self._run(step)

    async def delete_list(self, scope: str, lid: str) -> bool:
        return await self._run(lambda c: c.execute("DELETE FROM lists WHERE scope = ? AND lid = ?", (scope, lid)).rowcount > 0)


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


def _sweep(c: sqlite3.Connection, now: float) -> None:
    c.execute("DELETE FROM records WHERE (scope, id) IN (SELECT scope, id FROM records WHERE expires <= ? LIMIT ?)",
              (now, RECORD_SWEEP))  # fmt: skip
    c.execute("DELETE FROM lists WHERE seq IN (SELECT seq FROM lists WHERE expires <= ? LIMIT ?)", (now, RECORD_SWEEP))


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


def _totals(c: sqlite3.Connection, name: str, now: float, period: float | None, leases: bool) -> list[Any]:
    """[requests, tokens, spend, held, period_start, flying] with expired window entries (and, with
    `leases`, expired in-flight leases) dropped and the budget period rolled; the caller writes it back."""
    row = c.execute(_READ_TOTALS, (name,)).fetchone()
    if row is None:
        c.execute("INSERT INTO totals (name) VALUES (?)", (name,))
        row = (0, 0, 0.0, 0.0, None, 0)
    requests, tokens, spend, held, start, flying = row
    gone = c.execute("DELETE FROM hits WHERE name = ? AND ts <= ? RETURNING tokens", (name, now - WINDOW)).fetchall()
    if gone:
        requests, tokens = max(0, requests - len(gone)), max(0, tokens - sum(n for (n,) in gone))
    if leases:
        lost = c.execute("DELETE FROM flights WHERE name = ? AND until <= ? RETURNING id", (name, now)).fetchall()
        flying = max(0, flying - len(lost))  # leases of a worker that died mid-request
    start, rolled = roll_period(start, period, now)
    if rolled:
        spend = 0.0
    return [requests, tokens, spend, held, start, flying]


_READ_TOTALS = "SELECT requests, tokens, spend, held, period_start, flying FROM totals WHERE name = ?"
_SAVE_TOTALS = "UPDATE totals SET requests = ?, tokens = ?, spend = ?, held = ?, period_start = ?, flying = ? WHERE name = ?"


def _admit(c: sqlite3.Connection, a: Ask, now: float) -> Decision:
    if a.version:
        row = c.execute("SELECT version FROM keys WHERE name = ?", (a.name,)).fetchone()
        if row is None or row[0] != a.version:
            return Decision(False, "revoked" if row is None else "stale")
    t = _totals(c, a.name, now, a.period, a.max_parallel is not None)
    requests, tokens, spend, held, start, flying = t
    period_end = start + a.period if a.period is not None else None
    refusal = _refusal(c, a, now, requests, tokens, flying, spend + held, period_end)
    if refusal is None:
        lease = c.execute("INSERT INTO hits (name, ts, tokens) VALUES (?, ?, ?)", (a.name, now, a.tokens)).lastrowid
        if a.max_parallel is not None:
            c.execute("INSERT INTO flights VALUES (?, ?, ?)", (lease, a.name, now + a.lease_ttl))
            flying += 1
        requests, tokens, held = requests + 1, tokens + a.tokens, held + a.cost
        t[0], t[1], t[3], t[5] = requests, tokens, held, flying
    c.execute(_SAVE_TOTALS, (*t, a.name))
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
    landed = c.execute("DELETE FROM flights WHERE id = ?", (lease,)).rowcount
    delta = d.used_tokens - d.reserved_tokens
    if delta and not c.execute("UPDATE hits SET tokens = ? WHERE id = ?", (d.used_tokens, lease)).rowcount:
        delta = 0  # the request outlived the window: its entry is gone, and so are its tokens
    if landed or delta or d.used_cost or d.reserved_cost:
        c.execute(_SETTLE_TOTALS, {"name": d.name, "landed": landed, "delta": delta, "reserved": d.reserved_cost,
                                   "used": d.used_cost, "period": d.period, "now": now})  # fmt: skip


# One statement: reconciliation is on every limited request's path.  A budget period that ended
# since admission starts afresh here too (as in base.roll_period).
_SETTLE_TOTALS = """
UPDATE totals SET
    flying = max(0, flying - :landed), tokens = max(0, tokens + :delta), held = max(0.0, held - :reserved),
    spend = CASE WHEN :period IS NOT NULL AND :now >= period_start + :period THEN :used ELSE spend + :used END,
    period_start = CASE WHEN :period IS NOT NULL AND :now >= period_start + :period
                   THEN period_start + CAST((:now - period_start) / :period AS INTEGER) * :period
                   ELSE period_start END
WHERE name = :name
"""


def _usage(c: sqlite3.Connection, name: str, period: float | None, now: float) -> Usage:
    t = _totals(c, name, now, period, True)
    c.execute(_SAVE_TOTALS, (*t, name))
    requests, tokens, spend, held, start, flying = t
    return Usage(requests, tokens, flying, spend, held, start, start + period if period is not None else None)


_KEY_COLUMNS = "name, digest, limits, version, created"


def _key(c: sqlite3.Connection, column: str, value: str) -> KeyRecord | None:
    row = c.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE {column} = ?", (value,)).fetchone()
    return None if row is None else KeyRecord(row[0], row[1], bytes(row[2]), row[3], row[4])
