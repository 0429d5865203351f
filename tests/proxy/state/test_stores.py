"""Both state stores, same behaviour, real servers: SQLite files and a real redis-server.  Windows,
reconciliation, leases, budgets and periods are driven with explicit clock values."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from proxy.state.base import WINDOW, Ask, Done, KeyRecord, StoreUnavailable, open_store

pytestmark = pytest.mark.timeout(30)
T0 = 1_000_000.0


@pytest.fixture
async def store(state_url):
    s = open_store(state_url, 1.0)
    yield s
    await s.close()


_n = 0


def ask(name="k", **kw) -> Ask:
    global _n
    _n += 1
    kw.setdefault("tokens", 10)
    return Ask(name=name, lease=f"lease-{_n}", **kw)


def done(a: Ask, d, used_tokens=None, used_cost=0.0) -> Done:
    return Done(a.name, d.lease, a.tokens, a.tokens if used_tokens is None else used_tokens, a.cost, used_cost, a.period)


async def test_rpm_sliding_window(store):
    a = ask(rpm=2)
    assert (await store.admit(a, T0)).admitted
    d = await store.admit(ask(rpm=2), T0 + 30)
    assert d.admitted and d.requests == 2
    refused = await store.admit(ask(rpm=2), T0 + 59)
    assert not refused.admitted and refused.reason == "rpm"
    assert refused.retry_after == pytest.approx(1.0)
    # the first request leaves the window at T0+60: one slot, not a fresh minute
    assert (await store.admit(ask(rpm=2), T0 + 60.5)).admitted
    again = await store.admit(ask(rpm=2), T0 + 61)
    assert again.reason == "rpm" and again.retry_after == pytest.approx(29.0)


async def test_tpm_reconciled_lower_frees_tokens(store):
    first = ask(tpm=100, tokens=60)
    d1 = await store.admit(first, T0)
    assert d1.admitted and d1.tokens == 60
    second = await store.admit(ask(tpm=100, tokens=60), T0 + 1)
    assert second.reason == "tpm" and second.retry_after == pytest.approx(WINDOW - 1)
    await store.settle(done(first, d1, used_tokens=10), T0 + 2)
    d3 = await store.admit(ask(tpm=100, tokens=60), T0 + 3)
    assert d3.admitted and d3.tokens == 70


async def test_tpm_reconciled_higher_blocks_until_the_window_moves(store):
    first = ask(tpm=100, tokens=10)
    d1 = await store.admit(first, T0)
    await store.settle(done(first, d1, used_tokens=95), T0 + 5)
    refused = await store.admit(ask(tpm=100, tokens=10), T0 + 10)
    assert refused.reason == "tpm" and refused.tokens == 95 and refused.retry_after == pytest.approx(50.0)
    assert (await store.admit(ask(tpm=100, tokens=10), T0 + 60.01)).admitted


async def test_max_parallel_leases_and_their_expiry(store):
    a1, a2 = ask(max_parallel=2, lease_ttl=30), ask(max_parallel=2, lease_ttl=30)
    d1 = await store.admit(a1, T0)
    d2 = await store.admit(a2, T0)
    assert d1.admitted and d2.admitted and d2.in_flight == 2
    refused = await store.admit(ask(max_parallel=2), T0 + 1)
    assert refused.reason == "max_parallel" and refused.retry_after == 1.0
    await store.settle(done(a1, d1), T0 + 2)
    assert (await store.admit(ask(max_parallel=2, lease_ttl=30), T0 + 3)).in_flight == 2
    # a worker that died mid-request: its leases expire
    assert (await store.admit(ask(max_parallel=2, lease_ttl=30), T0 + 40)).admitted


async def test_budget_reservations_spend_and_period_reset(store):
    day = 86400.0
    kw = dict(budget=1.0, period=day, cost=0.6)
    a1, a2 = ask(**kw), ask(**kw)
    d1 = await store.admit(a1, T0)
    d2 = await store.admit(a2, T0 + 1)  # 0.6 held < 1.0: admitted; now 1.2 reserved
    assert d1.admitted and d2.admitted and d2.spend == pytest.approx(1.2) and d2.period_end == T0 + day
    refused = await store.admit(ask(**kw), T0 + 2)
    assert refused.reason == "budget" and refused.retry_after == pytest.approx(day - 2)
    await store.settle(done(a1, d1, used_cost=0.3), T0 + 3)
    await store.settle(done(a2, d2, used_cost=0.3), T0 + 3)
    usage = await store.usage("k", day, T0 + 4)
    assert usage.spend == pytest.approx(0.6) and usage.held == pytest.approx(0.0) and usage.period_start == T0
    a3 = ask(**kw)
    d3 = await store.admit(a3, T0 + 5)
    await store.settle(done(a3, d3, used_cost=0.5), T0 + 6)
    assert (await store.admit(ask(**kw), T0 + 7)).reason == "budget"
    # the next period starts a day after the first request, back to back
    fresh = await store.admit(ask(**kw), T0 + day + 10)
    assert fresh.admitted and fresh.period_end == T0 + 2 * day


async def test_lifetime_budget_has_no_reset(store):
    a = ask(budget=0.5, cost=0.1)
    d = await store.admit(a, T0)
    await store.settle(done(a, d, used_cost=0.7), T0 + 1)
    refused = await store.admit(ask(budget=0.5, cost=0.1), T0 + 10 * 365 * 86400)
    assert refused.reason == "budget" and refused.retry_after is None and refused.period_end is None


async def test_run_time_keys_and_versions(store):
    rec = KeyRecord("team-a", "ab" * 32, b'{"rpm": 5}', "v1", T0)
    assert await store.create_key(rec)
    assert not await store.create_key(KeyRecord("team-a", "cd" * 32, b"{}", "v9", T0))
    assert (await store.key_by_digest("ab" * 32)).limits == b'{"rpm": 5}'
    assert (await store.key_by_name("team-a")).version == "v1"
    assert [r.name for r in await store.list_keys()] == ["team-a"]
    assert (await store.admit(ask("team-a", version="v1"), T0)).admitted
    assert await store.update_key(KeyRecord("team-a", "ab" * 32, b'{"rpm": 6}', "v2", T0))
    assert (await store.admit(ask("team-a", version="v1"), T0)).reason == "stale"
    assert (await store.admit(ask("team-a", version="v2"), T0)).admitted
    assert await store.delete_key("team-a")
    assert not await store.delete_key("team-a")
    assert (await store.admit(ask("team-a", version="v2"), T0)).reason == "revoked"
    assert await store.key_by_digest("ab" * 32) is None and await store.list_keys() == []
    assert not await store.update_key(rec)


async def test_records_with_scope_and_ttl(store):
    now = time.time()
    await store.put_record("team-a", "resp_1", b'{"x": 1}', None, now)
    await store.put_record("team-b", "resp_1", b'{"x": 2}', 0.2, now)
    await store.put_record("team", "a:resp_1", b'{"x": 3}', None, now)  # scope/id boundaries stay apart
    assert await store.get_record("team-a", "resp_1", now) == b'{"x": 1}'
    assert await store.get_record("team-b", "resp_1", now) == b'{"x": 2}'
    assert await store.get_record("team", "a:resp_1", now) == b'{"x": 3}'
    await store.put_record("team-a", "resp_1", b'{"x": 4}', None, now)
    assert await store.get_record("team-a", "resp_1", now) == b'{"x": 4}'
    await asyncio.sleep(0.3)
    assert await store.get_record("team-b", "resp_1", time.time()) is None
    assert await store.delete_record("team-a", "resp_1")
    assert not await store.delete_record("team-a", "resp_1")
    assert await store.get_record("team-a", "resp_1", time.time()) is None


async def test_records_in_batches(store):
    now = time.time()
    await store.put_records("s", [("a", b"1"), ("b", b"2")], None, now)
    await store.put_records("s", [("c", b"3")], 0.2, now)
    await store.put_records("s", [], None, now)
    assert await store.get_records("s", ["b", "zz", "a", "c"], now) == [b"2", None, b"1", b"3"]
    assert await store.get_records("other", ["a"], now) == [None]
    assert await store.get_records("s", [], now) == []
    many = [f"id{i}" for i in range(1200)]  # past SQLite's bound on parameters of one statement
    await store.put_records("s", [(i, i.encode()) for i in many], None, now)
    assert await store.get_records("s", many, now) == [i.encode() for i in many]
    await asyncio.sleep(0.3)
    assert await store.get_records("s", ["c", "a"], time.time()) == [None, b"1"]


async def test_lists_append_in_order_within_their_bound(store):
    now = time.time()
    assert await store.read_list("s", "l", now) == []
    assert await store.append_list("s", "l", [b"1", b"2"], None, now, limit=3) == 2
    assert await store.append_list("s", "l", [b"3", b"4"], None, now, limit=3) is None  # nothing appended
    assert await store.append_list("s", "l", [b"3"], None, now, limit=3) == 3
    assert await store.append_list("s", "l2", [b"x"], None, now, limit=3) == 1
    assert await store.read_list("s", "l", now) == [b"1", b"2", b"3"]
    assert await store.read_list("t", "l", now) == []
    assert await store.delete_list("s", "l")
    assert not await store.delete_list("s", "l")
    assert await store.read_list("s", "l", now) == []
    assert await store.read_list("s", "l2", now) == [b"x"]


async def test_list_ttl_restarts_on_append(store):
    now = time.time()
    await store.append_list("s", "l", [b"1"], 0.3, now, limit=10)
    await asyncio.sleep(0.2)
    await store.append_list("s", "l", [b"2"], 0.3, time.time(), limit=10)
    await asyncio.sleep(0.2)  # past the first entry's first expiry
    assert await store.read_list("s", "l", time.time()) == [b"1", b"2"]
    await asyncio.sleep(0.2)
    assert await store.read_list("s", "l", time.time()) == []


async def test_sqlite_writes_sweep_expired_rows(tmp_path):
    import sqlite3

    from proxy.state.sqlite_store import SWEEP_EVERY

    store = open_store(f"sqlite:///{tmp_path}/s.db", 1.0)
    try:
        now = time.time()
        await store.put_records("s", [(f"old{i}", b"x") for i in range(50)], 1.0, now)
        await store.append_list("s", "l", [b"x"] * 50, 1.0, now, 100)
        for i in range(SWEEP_EVERY):  # one of these sweeps: by then everything above has expired
            await store.put_record("s", f"new{i}", b"y", None, now + 10)
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "s.db") as c:
        assert c.execute("SELECT COUNT(*) FROM records").fetchone()[0] == SWEEP_EVERY
        assert c.execute("SELECT COUNT(*) FROM lists").fetchone()[0] == 0


async def test_concurrent_appends_through_two_connections_all_land_within_the_bound(state_url):
    stores = [open_store(state_url, 2.0), open_store(state_url, 2.0)]
    try:
        now = time.time()
        results = await asyncio.gather(*(stores[i % 2].append_list("s", "l", [b"%d" % i, b"%d" % i], None, now, 30)
                                         for i in range(20)))  # fmt: skip
        assert sorted(r for r in results if r is not None) == list(range(2, 31, 2))
        got = await stores[0].read_list("s", "l", now)
        assert len(got) == 30 and all(got[i] == got[i + 1] for i in range(0, 30, 2))  # each append whole
    finally:
        for s in stores:
            await s.close()


async def test_concurrent_admissions_through_two_connections_are_exact(state_url):
    """50 at once against rpm 10 through two independent store objects (two workers' connections)."""
    stores = [open_store(state_url, 2.0), open_store(state_url, 2.0)]
    try:
        now = time.time()
        results = await asyncio.gather(*(stores[i % 2].admit(ask("race", rpm=10, tpm=10_000), now) for i in range(50)))
        assert sum(d.admitted for d in results) == 10
        assert {d.reason for d in results if not d.admitted} == {"rpm"}
    finally:
        for s in stores:
            await s.close()


async def test_sqlite_unreachable_raises(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/missing-dir/state.db", 0.2)
    with pytest.raises(StoreUnavailable):
        await s.admit(ask(rpm=1), T0)
    await s.close()


async def test_redis_refused_connection_raises_at_once():
    from tests.redis_support import free_port

    s = open_store(f"redis://127.0.0.1:{free_port()}/0", 0.2)
    t = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await s.admit(ask(rpm=1), T0)
    assert time.monotonic() - t < 2
    await s.close()


async def test_redis_that_never_answers_times_out():
    """A server that accepts and then stays silent: the call ends after the store timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    s = open_store(f"redis://127.0.0.1:{port}/0", 0.2)
    try:
        t = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await s.admit(ask(rpm=1), T0)
        assert time.monotonic() - t < 2
    finally:
        await s.close()
        listener.close()


async def test_redis_idle_window_expiring_whole_resets_the_token_sum(redis_url):
    """Redis expires an idle key's window structures (2 x WINDOW); the running sum must not outlive them."""
    import redis.asyncio as aioredis

    s = open_store(redis_url, 1.0)
    try:
        assert (await s.admit(ask("idle", tpm=100, tokens=80), T0)).admitted
        r = aioredis.from_url(redis_url)
        await r.delete("llmp:h:idle", "llmp:t:idle")  # what PEXPIRE does after two idle minutes
        await r.aclose()
        d = await s.admit(ask("idle", tpm=100, tokens=80), T0 + 1)
        assert d.admitted and d.tokens == 80
    finally:
        await s.close()
