"""The load-aware strategy (proxy/load_aware.py) and how the balancer uses it: scores, the order they
give, learning a server's speed, prefix affinity in `acquire`, and the breaker probe a recovered
server earns (proxy/balancer.py).  No sockets: server loads are set by hand."""

from __future__ import annotations

from time import monotonic
from types import SimpleNamespace

import pytest

from adapters.base import LoadMetricNames
from proxy import affinity
from proxy.balancer import Balancer
from proxy.breaker import HALF_OPEN, OPEN
from proxy.config import LoadConfig, ModelConfig, PrefixAffinityConfig, RoutingConfig, Timeouts
from proxy.load import Load, Reading, ServerLoad
from proxy.load_aware import ServiceTimes, ahead, defaults, expected
from proxy.metrics import PREFIX_AFFINITY
from proxy.routing import Deployment, Route

pytestmark = pytest.mark.timeout(10)


# -- the score ----------------------------------------------------------------------------------------


def test_nothing_ahead_means_the_servers_own_speed():
    idle = Load(0, 0, 0.0, True)
    assert expected(idle, 8, base=0.02, decode=0.1, weight=1) == pytest.approx(0.02)
    assert expected(idle, 8, base=0.04, decode=0.2, weight=1) == pytest.approx(0.04)  # twice as slow


def test_queue_costs_a_slot_turnover_per_request_ahead():
    # capacity 4, 4 running and 2 waiting: 3 must finish first; a slot frees every (base + decode) / 4.
    load = Load(2, 4, 0.0, True)
    assert ahead(load, 4) == 3
    assert expected(load, 4, base=0.02, decode=0.18, weight=1) == pytest.approx(0.02 + (3 + 0.4) * 0.2 / 4)


def test_a_free_slot_on_a_slow_server_beats_a_queue_on_a_fast_one():
    fast_full = expected(Load(1, 4, 0.0, True), 4, base=0.02, decode=0.15, weight=1)
    slow_free = expected(Load(0, 2, 0.0, True), 4, base=0.04, decode=0.3, weight=1)
    assert slow_free < fast_full
    fast_free = expected(Load(0, 2, 0.0, True), 4, base=0.02, decode=0.15, weight=1)
    assert fast_free < slow_free


def test_unknown_capacity_assumes_the_request_fits():
    assert ahead(Load(0, 30, 0.0, True), None) == 0
    assert ahead(Load(2, 30, 0.0, True), None) == 2


def test_a_nearly_full_kv_cache_costs_up_to_five_times():
    base = expected(Load(0, 2, 0.5, True), 8, 0.02, 0.1, 1)
    assert expected(Load(0, 2, 0.9, True), 8, 0.02, 0.1, 1) == pytest.approx(base)
    assert expected(Load(0, 2, 0.95, True), 8, 0.02, 0.1, 1) == pytest.approx(base * 3)
    assert expected(Load(0, 2, 1.0, True), 8, 0.02, 0.1, 1) == pytest.approx(base * 5)


def test_without_a_fresh_reading_it_is_least_busy_weighed_by_speed_and_weight():
    assert expected(Load(0, 3, 0.0, False), None, 0.02, 0.1, 1) == pytest.approx(0.08)
    assert expected(Load(0, 3, 0.0, False), None, 0.02, 0.1, 2) == pytest.approx(0.04)


def test_base_tracks_the_floor_and_unmeasured_servers_borrow_the_best():
    t = ServiceTimes()
    for x in (0.02, 0.3, 0.3, 0.3):  # queued-after-all samples barely move it
        t.observe_first_byte(x)
    assert t.base < 0.05
    for _ in range(20):
        t.observe_first_byte(0.01)
    assert t.base == pytest.approx(0.01, abs=1e-3)
    t.observe_decode(0.2)
    other = ServiceTimes()
    other.observe_first_byte(0.05)
    other.observe_decode(0.1)
    assert defaults([t, other, ServiceTimes()]) == (pytest.approx(t.base), 0.1)
    assert defaults([ServiceTimes()]) == (0.001, 0.0)


# -- the balancer ---------------------------------------------------------------------------------------


def server(name: str) -> ServerLoad:
    return ServerLoad(name, LoadConfig(metrics_url="http://127.0.0.1:9/m"), LoadMetricNames(waiting=("w",)))


def dep(name: str, load: ServerLoad | None = None, weight: float = 1.0) -> Deployment:
    runtime = SimpleNamespace(name=name, config=SimpleNamespace(timeouts=Timeouts()), load=load)
    return Deployment(backend=runtime, target=SimpleNamespace(model="x"), weight=weight, label=f"{name}/x")


def route(*deps: Deployment, **cfg) -> Route:
    return Route("m", list(deps), ModelConfig(name="m", backend="unused", **cfg))


def read(s: ServerLoad, waiting: float, running: float, kv: float | None = None, capacity: float | None = 4) -> None:
    s.reading = Reading(waiting, running, kv, monotonic(), s.inflight)
    s.capacity = capacity


def balancer() -> Balancer:
    return Balancer(RoutingConfig(), ["a", "b", "c"])


def learn(b: Balancer, d: Deployment, base: float, decode: float) -> None:
    t = b.state(d).times
    t.base, t.decode = base, decode


def test_order_follows_the_servers_queues_not_our_counts():
    sa, sb = server("a"), server("b")
    a, b_ = dep("a", sa), dep("b", sb)
    bal = balancer()
    r = route(a, b_, strategy="load-aware")
    read(sa, waiting=5, running=4)  # another replica's traffic queues on a
    read(sb, waiting=0, running=1)
    assert bal.candidates(r, []) == [b_, a]
    read(sa, waiting=0, running=0)
    read(sb, waiting=3, running=4)
    assert bal.candidates(r, []) == [a, b_]


def test_a_server_twice_as_slow_gets_traffic_only_when_the_fast_one_is_full():
    sf, ss = server("fast"), server("slow")
    fast, slow = dep("fast", sf), dep("slow", ss)
    bal = balancer()
    learn(bal, fast, 0.02, 0.15)
    learn(bal, slow, 0.04, 0.3)
    r = route(fast, slow, strategy="load-aware")
    read(sf, 0, 3)
    read(ss, 0, 0)
    assert bal.candidates(r, [])[0] is fast
    read(sf, 0, 4)  # full: the next one would wait a slot turnover
    assert bal.candidates(r, [])[0] is slow


def test_requests_we_sent_since_the_scrape_count():
    sa, sb = server("a"), server("b")
    a, b_ = dep("a", sa), dep("b", sb)
    bal = balancer()
    r = route(a, b_, strategy="load-aware")
    read(sa, 0, 3)
    read(sb, 0, 3)
    sa.inflight = 2  # two of ours went to a after its reading: it is now full with one waiting
    assert bal.candidates(r, []) == [b_, a]


def test_ties_rotate():
    deps = [dep(n, server(n)) for n in "abc"]
    for d in deps:
        read(d.backend.load, 0, 0)
    bal = balancer()
    r = route(*deps, strategy="load-aware")
    firsts = [bal.candidates(r, [])[0].backend.name for _ in range(6)]
    assert sorted(set(firsts)) == ["a", "b", "c"]


def test_deployments_without_load_block_use_our_in_flight_count():
    a, b_ = dep("a"), dep("b")
    bal = balancer()
    r = route(a, b_, strategy="load-aware")
    bal.state(a).limiter.active = 3
    assert bal.candidates(r, []) == [b_, a]


def test_a_server_not_seen_queueing_borrows_the_others_capacity():
    sa, sb = server("a"), server("b")
    a, b_ = dep("a", sa), dep("b", sb)
    bal = balancer()
    r = route(a, b_, strategy="load-aware")
    read(sa, 0, 2, capacity=4)
    read(sb, 0, 4, capacity=None)  # b full if it is like a, which it most likely is
    assert bal.candidates(r, []) == [a, b_]


async def test_slots_count_in_flight_on_the_server_and_learn_its_speed():
    sa = server("a")
    a = dep("a", sa)
    bal = balancer()
    r = route(a, dep("b", server("b")), strategy="load-aware")
    read(sa, 0, 0)
    read(r.deployments[1].backend.load, 5, 4)
    slot = await bal.acquire(r, [], 1.0)
    assert slot.dep is a and sa.inflight == 1 and slot.queued is False
    slot.observe_latency(0.05)
    slot.close(None)
    t = bal.state(a).times
    assert sa.inflight == 0 and t.base == 0.05 and t.decode is not None and t.decode >= 0


async def test_queued_attempts_and_failures_teach_nothing():
    sa = server("a")
    a = dep("a", sa)
    bal = balancer()
    r = route(a, strategy="load-aware")
    read(sa, 3, 4)
    slot = await bal.acquire(r, [], 1.0)
    assert slot.queued is True
    slot.observe_latency(0.5)
    slot.close("server")
    assert bal.state(a).times.base is None and bal.state(a).times.decode is None


# -- prefix affinity through acquire ----------------------------------------------------------------------


def affinity_count(result: str) -> float:
    return PREFIX_AFFINITY.labels(result)._value.get()


@pytest.mark.parametrize("strategy", ["round-robin", "least-busy", "latency", "ordered", "load-aware"])
async def test_prefix_owner_first_for_every_strategy_and_spill_when_full(strategy):
    deps = [dep(n, server(n)) for n in "abc"]
    for d in deps:
        read(d.backend.load, 0, 0)
    bal = balancer()
    r = route(*deps, strategy=strategy, prefix_affinity=PrefixAffinityConfig(chars=64, max_imbalance=1.0))
    key = affinity.prefix_key("a shared system prompt")
    owner_key = next(affinity.Ring([(d.key, 1.0) for d in deps]).walk(key))
    hits, spills = affinity_count("hit"), affinity_count("spill")
    slots = [await bal.acquire(r, [], 1.0, prefix=key) for _ in range(3)]
    # max_imbalance 1: caps 1, 1, 1 as in-flight grows 0, 1, 2 -> owner, then spills around the ring.
    assert slots[0].dep.key == owner_key
    assert len({s.dep.key for s in slots}) == 3
    assert affinity_count("hit") - hits == 1 and affinity_count("spill") - spills == 2
    for s in slots:
        s.close(None)


async def test_affinity_skips_deployments_already_tried():
    deps = [dep(n, server(n)) for n in "ab"]
    bal = balancer()
    r = route(*deps, strategy="round-robin", prefix_affinity=PrefixAffinityConfig())
    key = affinity.prefix_key("p")
    first = await bal.acquire(r, [], 1.0, prefix=key)
    first.close("server")
    second = await bal.acquire(r, [first.dep], 1.0, prefix=key)
    assert second.dep is not first.dep
    second.close(None)


# -- a recovered server's breaker -----------------------------------------------------------------------


def test_a_scrape_working_again_lets_an_ejected_deployment_be_probed_early():
    sa = server("a")
    a, b_ = dep("a", sa), dep("b")
    bal = Balancer(RoutingConfig(breaker_failures=1, breaker_cooldown=30.0), ["a", "b"])
    r = route(a, b_, strategy="load-aware")
    br = bal.state(a).breaker
    br.record("upstream_unavailable")
    assert br.state() == OPEN and bal.candidates(r, []) == [b_]
    sa.back_at = br.opened_at - 1  # came back before it was ejected: no news
    assert bal.candidates(r, []) == [b_]
    sa.back_at = monotonic() + 0.001  # its metrics answer again after failing
    assert a in bal.candidates(r, []) and br.state() == HALF_OPEN
