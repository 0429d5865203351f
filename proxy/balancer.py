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
  a deployment not measured yet counts as 0 so it gets tried.

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

from .breaker import HALF_OPEN, Breaker, BreakerBoard
from .config import RoutingConfig
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

    __slots__ = ("dep", "open", "state")

    def __init__(self, dep: Deployment, state: DeploymentState) -> None:
        self.dep = dep
        self.state = state
        self.open = True

    def close(self, outcome: str | None = ABANDONED) -> None:
        """Give the slot back; `outcome` is None (answered), a ProxyError kind, or ABANDONED."""
        if not self.open:
            return
        self.open = False
        self.state.limiter.release()
        if outcome == ABANDONED:
            self.state.breaker.abandon()
        else:
            self.state.breaker.record(outcome)


class DeploymentState:
    __slots__ = ("breaker", "ewma", "limiter")

    def __init__(self, breaker: Breaker, limiter: Limiter) -> None:
        self.breaker = breaker
        self.limiter = limiter
        self.ewma: float | None = None

    def observe_latency(self, seconds: float) -> None:
        self.ewma = seconds if self.ewma is None else self.ewma + EWMA_ALPHA * (seconds - self.ewma)


class Balancer:
    def __init__(self, routing: RoutingConfig, backends: list[str]) -> None:
        self.board = BreakerBoard(routing.breaker_failures, routing.breaker_cooldown, backends)
        self.states: dict[str, DeploymentState] = {}
        self._rr: dict[str, dict[str, float]] = {}

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
        healthy = [d for d in route.deployments if self.state(d).breaker.available(now)]
        ordered = self._order(route, healthy)
        seen = {d.label for d in tried}
        return [d for d in ordered if d.label not in seen] + [d for d in ordered if d.label in seen]

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
        return deps  # ordered

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
                      *, hedge: bool = False) -> Slot:
        """A slot on the best deployment for this attempt (the caller closes it).

        `hedge`: only a deployment not tried yet, and only if it has a slot free right now.
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
        for dep in candidates:
            st = self.state(dep)
            if st.limiter.try_acquire():
                st.breaker.begin()
                return Slot(dep, st)
            # A half-open deployment's single probe is never made to wait behind a queue.
            if not hedge and st.limiter.can_queue() and st.breaker.state() != HALF_OPEN:
                await st.limiter.wait(queue_timeout)
                st.breaker.begin()
                return Slot(dep, st)
        raise ProxyError("rate_limit", f"every deployment of model {route.name!r} is at its concurrency limit",
                         code="deployments_busy", retry_after=BUSY_RETRY_AFTER)

    def report(self) -> dict[str, dict]:
        return self.board.report()
