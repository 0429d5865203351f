"""Unit tests of the routing machinery without sockets: breaker state machine, concurrency limiter and
queue, strategy order, retry delays and the fallback chain (proxy/breaker.py, balancer.py, dispatch.py)."""

from __future__ import annotations

import asyncio
import collections
from types import SimpleNamespace

import pytest

from adapters.errors import ProxyError
from proxy.balancer import ABANDONED, Balancer, Limiter
from proxy.breaker import CLOSED, HALF_OPEN, OPEN, BreakerBoard
from proxy.config import ModelConfig, RoutingConfig, Timeouts
from proxy.dispatch import Dispatcher
from proxy.routing import Deployment, Route

pytestmark = pytest.mark.timeout(10)


def dep(backend: str, weight: float = 1.0, **kw) -> Deployment:
    runtime = SimpleNamespace(name=backend, config=SimpleNamespace(timeouts=Timeouts()), load=None)
    return Deployment(backend=runtime, target=SimpleNamespace(model="x"), weight=weight,
                      label=f"{backend}/x", **kw)


def route(*deps: Deployment, name: str = "m", **cfg) -> Route:
    return Route(name, list(deps), ModelConfig(name=name, backend="unused", **cfg))


# -- breaker -----------------------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_only():
    br = BreakerBoard(3, 10.0, ["a"]).get("a/x", "a")
    for kind in ("server", "timeout", None, "overloaded", "rate_limit"):  # a success resets the run
        br.record(kind, now=0)
    assert br.state(0) == CLOSED
    br.record("upstream_unavailable", now=1)
    assert br.state(1) == OPEN and not br.available(5) and br.retry_in(5) == 6


@pytest.mark.parametrize("kind,opens", [
    ("server", True), ("timeout", True), ("upstream_unavailable", True), ("overloaded", True),
    ("rate_limit", True), ("upstream_protocol", True),
    ("invalid_request", False), ("context_length", False), ("authentication", False), (None, False),
])
def test_breaker_failure_kinds(kind, opens):
    br = BreakerBoard(1, 10.0, ["a"]).get("a/x", "a")
    br.record(kind, now=0)
    assert (br.state(0) == OPEN) is opens


def test_half_open_admits_one_probe_and_its_verdict_decides():
    board = BreakerBoard(1, 1.0, ["a"])
    br = board.get("a/x", "a")
    br.record("server", now=0)
    assert br.state(1.5) == HALF_OPEN and br.available(1.5)
    br.begin(1.5)
    assert not br.available(1.5)  # one probe at a time
    br.abandon()  # the probe's client went away: no verdict, the next request may probe
    assert br.available(1.5)
    br.begin(1.5)
    br.record("timeout", now=1.6)
    assert br.state(2.0) == OPEN and br.state(2.7) == HALF_OPEN  # a fresh cooldown from the failed probe
    br.begin(2.7)
    br.record(None, now=2.8)
    assert br.state(2.8) == CLOSED and br.failures == 0


def test_board_reports_backend_state_from_its_deployments():
    board = BreakerBoard(1, 10.0, ["a", "b"])
    one, two = board.get("a/one", "a"), board.get("a/two", "a")
    one.record("server")
    assert board.backend_state("a") == CLOSED  # a/two still takes traffic
    two.record("server")
    report = board.report()
    assert report["a"]["state"] == OPEN and report["a"]["deployments"]["a/one"]["state"] == OPEN
    assert report["b"] == {"state": CLOSED, "deployments": {}}


# -- limiter -----------------------------------------------------------------------------------------


async def test_limiter_hands_slots_to_waiters_in_order():
    lim = Limiter(1, 2)
    assert lim.try_acquire() and not lim.try_acquire()
    order = []

    async def waiter(i):
        await lim.wait(1.0)
        order.append(i)

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(2)]
    await asyncio.sleep(0)
    assert not lim.can_queue()
    lim.release()
    await asyncio.sleep(0)
    lim.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1] and lim.active == 1
    lim.release()
    assert lim.active == 0


async def test_limiter_cancelled_and_timed_out_waiters_leave_the_queue():
    lim = Limiter(1, 2)
    lim.try_acquire()
    task = asyncio.ensure_future(lim.wait(5.0))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not lim.waiters
    with pytest.raises(ProxyError) as exc:
        await lim.wait(0.01)
    assert exc.value.kind == "rate_limit" and exc.value.retry_after == 1.0 and not lim.waiters
    lim.release()
    assert lim.active == 0


# -- strategies --------------------------------------------------------------------------------------


def balancer(**routing) -> Balancer:
    return Balancer(RoutingConfig(**routing), ["a", "b", "c"])


def test_weighted_round_robin_is_smooth():
    b = balancer()
    r = route(dep("a", 3), dep("b", 1), strategy="round-robin")
    picks = [b.candidates(r, [])[0].backend.name for _ in range(8)]
    assert picks == ["a", "a", "b", "a"] * 2


def test_least_busy_prefers_fewest_in_flight_per_weight():
    b = balancer()
    a_, b_, c_ = dep("a"), dep("b", 2), dep("c")
    r = route(a_, b_, c_, strategy="least-busy")
    b.state(a_).limiter.active = 1
    b.state(b_).limiter.active = 1  # 0.5 per unit of weight
    b.state(c_).limiter.active = 2
    assert [d.backend.name for d in b.candidates(r, [])] == ["b", "a", "c"]


def test_latency_prefers_lowest_ewma_and_tries_unmeasured():
    b = balancer()
    a_, b_, c_ = dep("a"), dep("b"), dep("c")
    r = route(a_, b_, c_, strategy="latency")
    for seconds in (1.0, 1.0):
        b.state(a_).observe_latency(seconds)
    b.state(b_).observe_latency(0.2)
    assert [d.backend.name for d in b.candidates(r, [])] == ["c", "b", "a"]
    b.state(c_).observe_latency(0.5)
    assert [d.backend.name for d in b.candidates(r, [])] == ["b", "c", "a"]


def test_candidates_skip_ejected_and_put_tried_last():
    b = balancer(breaker_failures=1)
    a_, b_, c_ = dep("a"), dep("b"), dep("c")
    r = route(a_, b_, c_, strategy="ordered")
    b.state(b_).breaker.record("server")
    assert [d.backend.name for d in b.candidates(r, [a_])] == ["c", "a"]


async def test_acquire_spills_over_full_deployments_then_refuses():
    b = balancer()
    a_, b_ = dep("a", max_concurrency=1), dep("b", max_concurrency=1)
    r = route(a_, b_, strategy="ordered")
    s1 = await b.acquire(r, [], 1.0)
    s2 = await b.acquire(r, [], 1.0)
    assert (s1.dep.backend.name, s2.dep.backend.name) == ("a", "b")
    with pytest.raises(ProxyError) as exc:
        await b.acquire(r, [], 1.0)
    assert exc.value.kind == "rate_limit" and exc.value.code == "deployments_busy"
    s1.close(None)
    s1.close(None)  # idempotent
    assert b.state(a_).limiter.active == 0 and b.state(b_).limiter.active == 1
    s2.close(ABANDONED)


async def test_acquire_with_everything_ejected_says_when_to_come_back():
    b = balancer(breaker_failures=1, breaker_cooldown=7)
    a_ = dep("a")
    b.state(a_).breaker.record("server")
    with pytest.raises(ProxyError) as exc:
        await b.acquire(route(a_), [], 1.0)
    assert exc.value.kind == "overloaded" and 6 <= exc.value.retry_after <= 7


# -- retry delay and fallbacks -----------------------------------------------------------------------


def dispatcher(routes: dict[str, Route], **routing) -> Dispatcher:
    router = SimpleNamespace(resolve=routes.get)
    return Dispatcher(router, RoutingConfig(**routing), ["a", "b"])


@pytest.mark.parametrize("attempt,cap", [(1, 0.1), (2, 0.2), (3, 0.4), (6, 1.0)])
def test_backoff_is_exponential_with_full_jitter_and_capped(attempt, cap):
    d = dispatcher({}, retry_backoff=0.1, retry_backoff_max=1.0)
    r = route(dep("a"))
    delays = [d._retry_delay(attempt, ProxyError("server", "x"), r, []) for _ in range(300)]
    assert all(0 <= x <= cap for x in delays) and max(delays) > cap * 0.7


def test_retry_after_counts_only_when_going_back_to_the_same_deployment():
    d = dispatcher({}, retry_backoff=0.001, max_retry_after=2.0)
    a_, b_ = dep("a"), dep("b")
    err = ProxyError("rate_limit", "slow down", retry_after=30)
    assert d._retry_delay(1, err, route(a_, b_), [a_]) < 0.01  # b is fresh: go now
    assert d._retry_delay(1, err, route(a_), [a_]) == 2.0  # capped by max_retry_after


def test_fallback_chain_by_error_kind():
    routes = {n: route(dep("a"), name=n) for n in ("x", "y", "big")}
    d = dispatcher(routes)
    m = route(dep("a"), fallbacks=["x", "y"], context_window_fallbacks=["big"])
    nxt, reason, pending = d._fallback(m, ProxyError("overloaded", "busy"), {"m"}, [])
    assert (nxt.name, reason, pending) == ("x", "overloaded", ["y"])
    nxt, reason, _ = d._fallback(m, ProxyError("context_length", "too long"), {"m"}, [])
    assert (nxt.name, reason) == ("big", "context_length")
    assert d._fallback(m, ProxyError("invalid_request", "bad"), {"m"}, [])[0] is None
    # x failed too and has no fallbacks of its own: the pending y is next; nothing is visited twice.
    nxt, _, pending = d._fallback(routes["x"], ProxyError("timeout", "t"), {"m", "x"}, ["y"])
    assert nxt.name == "y" and pending == []
    assert d._fallback(routes["y"], ProxyError("timeout", "t"), {"m", "x", "y"}, [])[0] is None


async def test_hedged_twin_is_cancelled_and_its_slot_returned(monkeypatch):
    a_, b_ = dep("a"), dep("b")
    r = route(a_, b_, strategy="ordered", hedge_after=0.05)
    d = dispatcher({"m": r})
    started = collections.Counter()
    cancelled = []

    async def fake_serve(call, dep):
        started[dep.backend.name] += 1
        try:
            await asyncio.sleep(10 if dep is a_ else 0.05)
        except asyncio.CancelledError:
            cancelled.append(dep.backend.name)
            raise
        return f"answer from {dep.backend.name}"

    monkeypatch.setattr("proxy.dispatch.relay.serve", fake_serve)
    ctx = SimpleNamespace(stream=False, error_kind=None, first_write=None, backend="", deployment="",
                          fallback_from=None)
    call = SimpleNamespace(ctx=ctx)
    assert await d.dispatch(call, r) == "answer from b"
    assert started == {"a": 1, "b": 1} and cancelled == ["a"]
    assert ctx.deployment == "b/x"
    assert d.balancer.state(a_).limiter.active == 0 and d.balancer.state(b_).limiter.active == 0
