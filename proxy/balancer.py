"""Which deployment of a model gets the next attempt: strategies, concurrency slots, breaker state.

How this works.  `Balancer.candidates(route, tried)` lists the deployments a new attempt may use,
best first: those whose breaker lets traffic through, ordered by the model's strategy, with the ones
this request already tried moved to the end (a retry goes to another deployment when one is healthy).
`Balancer.acquire()` walks that list and takes a concurrency slot on the first deployment that has
one free; a full deployment with room in its wait queue makes the request wait there; a deployment
whose slots and queue are both full is skipped.  Strategies:

- ordered: config order (primary, then secondaries);
- round-robin: smooth weighted round-robin (nginx's), so weights 3:1 give A A B A, A A B A, ...;
- least-busy: fewest in-flight requests per unit of weight, ties broken at random;
- latency: lowest EWMA of the time to first byte (streams) or to the whole answer (non-streaming);
  a deployment not measured yet counts as 0 so it gets tried;
- load-aware: lowest expected time to first token, from the server's own queue, batch and KV-cache
  gauges (proxy/load.py) and what its requests took (proxy/load_aware.py); ties rotate.

With `prefix_affinity` (any strategy) the deployment that owns the request's prompt prefix on the
consistent-hash ring goes first while its load is under the bounded-loads cap (proxy/affinity.py).

State is kept per configured deployment (its key: the label `backend/model`, with the `*` of a
wildcard left in), so two model names routed to the same deployment share its slots, breaker and
latency figure, and the names a client makes up on a wildcard add no state: memory is bounded by the
config.  It belongs to one Gateway: a config reload
starts from fresh state.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from time import monotonic

from adapters.errors import ProxyError

from . import affinity, load_aware
from .breaker import HALF_OPEN, Breaker, BreakerBoard
from .config import RoutingConfig
from .load import Load
from .metrics import PREFIX_AFFINITY
from .routing import Deployment, Route

EWMA_ALPHA = 0.3
BUSY_RETRY_AFTER = 1.0  # seconds suggested to a client turned away because every deployment is full


class Limiter:
    """In-flight count of one deployment, with an optional cap and a bounded FIFO wait queue."""

    __slots__ = ("active", "limit", "max_queue", "waiters")

    def __init__(self, limit: int | None, max_queue: int) -> None:
        self.limit = limit
        self.max_queue = max_queue
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        if self.limit is not None and (self.active >= self.limit or self.waiters):
            return False
        self.active += 1
        return True

    def can_queue(self) -> bool:
        return len(self.waiters) < self.max_queue

    async def wait(self, timeout: float) -> None:
        """Wait in the queue for a slot (the caller checked `can_queue`); ProxyError on timeout."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we gave up: pass it on
            else:
                self.waiters.remove(fut)
            if isinstance(exc, TimeoutError):
                raise ProxyError("rate_limit", "deployment busy: waited too long for a slot",
                                 retry_after=BUSY_RETRY_AFTER) from None
            raise

    def release(self) -> None:
        # A freed slot goes straight to the oldest waiter, so `active` stays constant.
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.active -= 1


ABANDONED = "abandoned"  # Slot outcome: the attempt ended without saying anything about the backend


class Slot:
    """One attempt's hold on a deployment: a concurrency slot and, when half-open, the probe.

    `close()` is idempotent, so a caller can always close every slot it took in a `finally`, even for
    attempt tasks that were cancelled before they ever ran."""

    __slots__ = ("dep", "first_byte", "open", "queued", "sent", "state")

    def __init__(self, dep: Deployment, state: DeploymentState, queued: bool | None = None) -> None:
        self.dep = dep
        self.state = state
        self.open = True
        self.queued = queued  # load-aware: were requests expected ahead of this one (None: other strategy)
        self.sent = monotonic()
        self.first_byte: float | None = None  # seconds after `sent`
        if dep.backend.load is not None:
            dep.backend.load.inflight += 1

    def observe_latency(self, seconds: float) -> None:
        """Time to first byte (whole answer if not streaming) of this attempt."""
        self.state.observe_latency(seconds)
        self.first_byte = seconds
        if self.queued is False:
            self.state.times.observe_first_byte(seconds)

    def close(self, outcome: str | None = ABANDONED) -> None:
        """Give the slot back; `outcome` is None (answered), a ProxyError kind, or ABANDONED."""
        if not self.open:
            return
        self.open = False
        self.state.limiter.release()
        if self.dep.backend.load is not None:
            self.dep.backend.load.inflight -= 1
        if outcome is None and self.queued is not None and self.first_byte is not None:
            self.state.times.observe_decode(max(0.0, monotonic() - self.sent - self.first_byte))
        if outcome == ABANDONED:
            self.state.breaker.abandon()
        else:
            self.state.breaker.record(outcome)


class DeploymentState:
    __slots__ = ("breaker", "ewma", "limiter", "times")

    def __init__(self, breaker: Breaker, limiter: Limiter) -> None:
        self.breaker = breaker
        self.limiter = limiter
        self.ewma: float | None = None
        self.times = load_aware.ServiceTimes()

    def observe_latency(self, seconds: float) -> None:
        self.ewma = seconds if self.ewma is None else self.ewma + EWMA_ALPHA * (seconds - self.ewma)


class Balancer:
    def __init__(self, routing: RoutingConfig, backends: list[str]) -> None:
        self.board = BreakerBoard(routing.breaker_failures, routing.breaker_cooldown, backends)
        self.states: dict[str, DeploymentState] = {}
        self._rr: dict[str, dict[str, float]] = {}
        self._rings: dict[str, affinity.Ring] = {}
        self._tick = 0  # rotates load-aware ties

    def state(self, dep: Deployment) -> DeploymentState:
        st = self.states.get(dep.key)
        if st is None:
            st = self.states[dep.key] = DeploymentState(
                self.board.get(dep.key, dep.backend.name), Limiter(dep.max_concurrency, dep.max_queue)
            )
        return st

    # -- ordering ---------------------------------------------------------------------------------------
    def candidates(self, route: Route, tried: list[Deployment]) -> list[Deployment]:
        now = monotonic()
        healthy = [d for d in route.deployments if self._available(d, now)]
        ordered = self._order(route, healthy)
        if not tried:  # a request's first attempt: nothing to move to the back
            return ordered
        seen = {d.label for d in tried}
        return [d for d in ordered if d.label not in seen] + [d for d in ordered if d.label in seen]

    def _available(self, dep: Deployment, now: float) -> bool:
        breaker = self.state(dep).breaker
        if breaker.available(now):
            return True
        server = dep.backend.load
        # Ejected, and its server has since come back (a scrape that failed works again): probe it
        # now rather than after the whole cooldown -- a restarted server rejoins within a scrape or two.
        if server is not None and server.back_at is not None and breaker.opened_at is not None \
                and server.back_at > breaker.opened_at:
            breaker.end_cooldown(now)
            return breaker.available(now)
        return False

    def _order(self, route: Route, deps: list[Deployment]) -> list[Deployment]:
        if len(deps) < 2:
            return deps
        strategy = route.config.strategy
        if strategy == "round-robin":
            first = self._smooth_rr(route, deps)
            return [first, *(d for d in deps if d is not first)]
        if strategy == "least-busy":
            return sorted(deps, key=lambda d: (self.state(d).limiter.active / d.weight, random.random()))
        if strategy == "latency":
            return sorted(deps, key=lambda d: (self.state(d).ewma or 0.0, random.random()))
        if strategy == "load-aware":
            return self._by_load(deps)
        return deps  # ordered

    # -- load-aware ----------------------------------------------------------------------------------------
    def load_of(self, dep: Deployment, now: float, capacity: float | None = None) -> Load:
        """The deployment's server load (its own gauges), or our in-flight count on it."""
        server = dep.backend.load
        if server is None:
            return Load(0.0, float(self.state(dep).limiter.active), 0.0, False)
        return server.estimate(now, capacity)

    def _by_load(self, deps: list[Deployment]) -> list[Deployment]:
        now = monotonic()
        base, decode = load_aware.defaults([self.state(d).times for d in deps])
        # Replicas of one model usually share their engine settings: a server not seen queueing yet
        # borrows the smallest batch capacity seen on the others.
        caps = [c for d in deps if d.backend.load is not None and (c := d.backend.load.capacity) is not None]
        default_cap = min(caps) if caps else None
        self._tick += 1
        n = len(deps)

        def key(item: tuple[int, Deployment]) -> tuple[float, int]:
            i, d = item
            t = self.state(d).times
            server = d.backend.load
            cap = (server.capacity or default_cap) if server is not None else None
            score = load_aware.expected(self.load_of(d, now, cap), cap, t.base or base, t.decode or decode, d.weight)
            return score, (i + self._tick) % n

        return [d for _, d in sorted(enumerate(deps), key=key)]

    def _affine_first(self, route: Route, candidates: list[Deployment], tried: list[Deployment],
                      key: int) -> list[Deployment]:
        """`candidates` with the prefix owner (or where it spills) first; counts the decision."""
        cfg = route.config.prefix_affinity
        assert cfg is not None
        ring = self._rings.get(route.config.name)  # one per configured model: its deployments' keys
        if ring is None:
            ring = self._rings[route.config.name] = affinity.Ring([(d.key, d.weight) for d in route.deployments])
        seen = {d.key for d in tried}
        now = monotonic()
        if route.config.strategy == "load-aware":
            def load(d: Deployment) -> float:
                est = self.load_of(d, now)
                return est.waiting + est.running
        else:
            def load(d: Deployment) -> float:
                return float(self.state(d).limiter.active)
        chosen = affinity.pick(ring, key, [d for d in candidates if d.key not in seen], lambda d: d.key,
                               lambda d: d.weight, load, cfg.max_imbalance)
        if chosen is None:
            return candidates
        dep, owner = chosen
        PREFIX_AFFINITY.labels("hit" if owner else "spill").inc()
        return [dep, *(d for d in candidates if d is not dep)]

    def _smooth_rr(self, route: Route, deps: list[Deployment]) -> Deployment:
        current = self._rr.get(route.config.name)
        if current is None:
            current = self._rr[route.config.name] = {}
        total = 0.0
        best = deps[0]
        for d in deps:
            w = current.get(d.key, 0.0) + d.weight
            current[d.key] = w
            total += d.weight
            if w > current[best.key]:
                best = d
        current[best.key] -= total
        return best

    # -- slots -------------------------------------------------------------------------------------------
    async def acquire(self, route: Route, tried: list[Deployment], queue_timeout: float,
                      *, hedge: bool = False, prefix: int | None = None) -> Slot:
        """A slot on the best deployment for this attempt (the caller closes it).

        `hedge`: only a deployment not tried yet, and only if it has a slot free right now.
        `prefix`: the request's prompt-prefix key, when the model has `prefix_affinity`.
        Raises ProxyError: `overloaded` when every deployment is ejected (Retry-After = time to the next
        probe), `rate_limit` when every one is at its concurrency limit with a full queue."""
        candidates = self.candidates(route, tried)
        if hedge:
            seen = {d.label for d in tried}
            candidates = [d for d in candidates if d.label not in seen]
        if not candidates:
            retry_in = min(self.state(d).breaker.retry_in() for d in route.deployments)
            raise ProxyError("overloaded", f"no healthy deployment for model {route.name!r} (all ejected)",
                             code="no_healthy_deployment", retry_after=max(1.0, retry_in))
        if prefix is not None and len(candidates) > 1:
            candidates = self._affine_first(route, candidates, tried, prefix)
        for dep in candidates:
            st = self.state(dep)
            if st.limiter.try_acquire():
                st.breaker.begin()
                return Slot(dep, st, self._queued(route, dep))
            # A half-open deployment's single probe is never made to wait behind a queue.
            if not hedge and st.limiter.can_queue() and st.breaker.state() != HALF_OPEN:
                await st.limiter.wait(queue_timeout)
                st.breaker.begin()
                return Slot(dep, st, self._queued(route, dep))
        raise ProxyError("rate_limit", f"every deployment of model {route.name!r} is at its concurrency limit",
                         code="deployments_busy", retry_after=BUSY_RETRY_AFTER)

    def _queued(self, route: Route, dep: Deployment) -> bool | None:
        """Load-aware: whether requests are expected ahead of this one on the server."""
        if route.config.strategy != "load-aware":
            return None
        load = self.load_of(dep, monotonic())
        server = dep.backend.load
        if not load.fresh:
            return load.running > 0  # our own requests are all we know of
        return load_aware.ahead(load, server.capacity if server is not None else None) > 0

    def report(self) -> dict[str, dict]:
        return self.board.report()
