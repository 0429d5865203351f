"""Resilient routing: retries, fallbacks, hedging and circuit breaking around `relay.serve`.

How this works.  `relay.serve(call, dep)` runs one attempt and raises ProxyError only while nothing
has reached the client, so everything here happens before that commit point:

1. `dispatch` serves the requested model; when that fails it moves to a fallback model and serves
   that, and so on (each model at most once per request):
   - a `context_length` error goes to the failed model's `context_window_fallbacks`;
   - a retryable error (connect, timeout, 429, 5xx, 529; `ProxyError.retryable`) left over after the
     model's retries goes to its `fallbacks` (then to earlier models' unused fallbacks);
   - anything else (a client error) is the answer.
2. `_serve_model` makes up to `retries + 1` attempts on the model's deployments.  Each attempt takes a
   slot from the Balancer (strategy order, breaker state, concurrency limit and queue; see
   balancer.py), preferring deployments this request has not tried.  Before a retry it sleeps an
   exponential backoff with full jitter (`routing.retry_backoff` * 2^n, at most `retry_backoff_max`);
   when the retry can only go back to a deployment that sent Retry-After, the wait is at least that
   (capped by `routing.max_retry_after`).  Non-retryable errors are never retried.
3. With `hedge_after` (non-streaming requests only) an attempt that has not answered after that many
   seconds gets a twin on another deployment with a free slot; the first answer wins and the other is
   cancelled.  An attempt that fails waits for its twin before counting as failed.

Every attempt's outcome feeds its deployment's breaker (a committed stream that ended in an error
event counts as that error).  Cancellation (client disconnect, shutdown) reaches every attempt in
flight: attempts run in this task, and hedged twins are cancelled and awaited in a `finally`.
"""

from __future__ import annotations

import asyncio
import random
from time import perf_counter

from adapters.base import ChatOp
from adapters.errors import ProxyError

from . import affinity, relay
from .balancer import ABANDONED, Balancer, Slot
from .config import RoutingConfig
from .handlers import Call
from .metrics import FALLBACKS, RETRIES
from .routing import Deployment, Route, Router
from .serverio import Reply


class Dispatcher:
    def __init__(self, router: Router, routing: RoutingConfig | None = None, backends: list[str] | None = None) -> None:
        self.router = router
        self.routing = routing or RoutingConfig()
        self.balancer = Balancer(self.routing, backends or [])

    async def dispatch(self, call: Call, route: Route) -> Reply:
        visited = {route.config.name}
        pending: list[str] = []  # fallbacks named by models already tried, not yet used
        while True:
            try:
                return await self._serve_model(call, route)
            except ProxyError as err:
                nxt, reason, pending = self._fallback(route, err, visited, pending)
                if nxt is None:
                    raise
                FALLBACKS.labels(route.config.name, reason).inc()
                if call.ctx.fallback_from is None:
                    call.ctx.fallback_from = route.name
                visited.add(nxt.config.name)
                route = nxt

    def _fallback(self, route: Route, err: ProxyError, visited: set[str],
                  pending: list[str]) -> tuple[Route | None, str, list[str]]:
        """The next model to try after `route` failed with `err`, the reason, and what stays pending."""
        if err.kind == "context_length":
            names, reason = list(route.config.context_window_fallbacks), "context_length"
        elif err.retryable:
            names, reason = [*route.config.fallbacks, *pending], err.kind
        else:
            return None, "", pending
        names = [n for n in dict.fromkeys(names) if n not in visited]
        for i, name in enumerate(names):
            nxt = self.router.resolve(name)
            if nxt is not None:
                return nxt, reason, names[i + 1 :]
        return None, reason, []

    # -- one model: attempts with retries ----------------------------------------------------------------
    async def _serve_model(self, call: Call, route: Route) -> Reply:
        cfg = route.config
        hedge = cfg.hedge_after if cfg.hedge_after is not None and not call.ctx.stream else None
        queue_timeout = route.deployments[0].backend.config.timeouts.first_byte
        tried: list[Deployment] = []
        last: ProxyError | None = None
        prefix = _prefix_key(call, route)
        for attempt in range(cfg.retries + 1):
            if last is not None:
                RETRIES.labels(tried[-1].backend.name, cfg.name, last.kind).inc()
                delay = self._retry_delay(attempt, last, route, tried)
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                slot = await self.balancer.acquire(route, tried, queue_timeout, prefix=prefix)
            except ProxyError as none_free:
                raise last or none_free from None
            tried.append(slot.dep)
            try:
                if hedge is not None:
                    return await self._hedged(call, route, slot, tried, hedge)
                return await self._attempt(call, slot)
            except ProxyError as err:
                if not err.retryable:
                    raise
                last = err
        assert last is not None
        raise last

    def _retry_delay(self, attempt: int, err: ProxyError, route: Route, tried: list[Deployment]) -> float:
        r = self.routing
        delay = random.uniform(0.0, min(r.retry_backoff_max, r.retry_backoff * 2 ** (attempt - 1)))
        if err.retry_after is not None:
            seen = {d.label for d in tried}
            # Retry-After speaks for the deployment that sent it: it matters only if we must go back.
            if not any(d.label not in seen for d in self.balancer.candidates(route, [])):
                delay = max(delay, min(err.retry_after, r.max_retry_after))
        return delay

    async def _attempt(self, call: Call, slot: Slot) -> Reply:
        """One upstream attempt on the slot's deployment; its outcome feeds the breaker."""
        ctx = call.ctx
        t0 = perf_counter()
        outcome: str | None = ABANDONED
        try:
            resp = await relay.serve(call, slot.dep)
            outcome = ctx.error_kind  # None, or the error event that ended a committed stream
            if outcome is None:
                first = ctx.first_write if ctx.stream and ctx.first_write is not None else perf_counter()
                slot.observe_latency(max(0.0, first - t0))
            return resp
        except ProxyError as err:
            outcome = err.kind
            raise
        finally:
            slot.close(outcome)

    async def _hedged(self, call: Call, route: Route, first: Slot, tried: list[Deployment],
                      hedge_after: float) -> Reply:
        tasks: dict[asyncio.Task, Slot] = {asyncio.ensure_future(self._attempt(call, first)): first}
        try:
            done, _ = await asyncio.wait(tasks, timeout=hedge_after)
            if not done:
                second = await self._hedge_slot(route, tried)
                if second is not None:
                    tried.append(second.dep)
                    RETRIES.labels(first.dep.backend.name, route.config.name, "hedge").inc()
                    tasks[asyncio.ensure_future(self._attempt(call, second))] = second
            return await self._first_answer(call, tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for slot in tasks.values():
                slot.close()  # only matters for a twin cancelled before it ever ran

    async def _hedge_slot(self, route: Route, tried: list[Deployment]) -> Slot | None:
        try:
            return await self.balancer.acquire(route, tried, 0.0, hedge=True)
        except ProxyError:
            return None

    @staticmethod
    async def _first_answer(call: Call, tasks: dict[asyncio.Task, Slot]) -> Reply:
        pending = set(tasks)
        error: BaseException | None = None
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    dep = tasks[task].dep
                    call.ctx.backend, call.ctx.deployment = dep.backend.name, dep.label
                    return task.result()
            for task in done:
                error = task.exception()
                if not isinstance(error, ProxyError):
                    raise error  # a gateway bug: surface it as is
        assert error is not None
        raise error

    # -- health --------------------------------------------------------------------------------------
    def health(self) -> dict[str, dict]:
        """Per backend: breaker state of the backend and of each deployment seen so far."""
        return self.balancer.report()


def _prefix_key(call: Call, route: Route) -> int | None:
    """The prompt-prefix key when the model routes by prefix affinity (decoded once per request; on
    the pass-through path the body is still relayed as sent)."""
    cfg = route.config.prefix_affinity
    if cfg is None or not isinstance(call.op, ChatOp):
        return None
    try:
        req = call.chat_request(call.op)
    except ProxyError:
        return None  # the backend will say what is wrong with the body
    return affinity.prefix_key(affinity.prompt_prefix(req, cfg.chars))
