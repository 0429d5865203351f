"""Per-key admission and reconciliation: a limited key's request reserves its share in the state
store before any upstream call, and settles what it really used when the answer ends.

How this works.  `admit` estimates the request (prompt tokens from the body size, completion tokens
from the client's own max-tokens field or the model's default; USD from the model's price) and asks
the store to admit it in one atomic step (`proxy.state`).  A refusal becomes a 429 in the caller's
format with `Retry-After`; a spent budget a 429 `insufficient_quota`.  `settle` runs when the
request ends, however it ends: usage the backend reported wins; a stream cut short is charged its
prompt plus one token per upstream chunk relayed; a request that failed before any answer costs no
tokens (but still counts as a request).  Keys with no limits never reach this module.

Store trouble: with `state.on_error: closed` the request is refused with 503; with `open` it is
admitted without a reservation and a warning is logged (at most once per `WARN_EVERY` seconds).
"""

from __future__ import annotations

import datetime
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adapters import jsonio
from adapters.base import RateLimitHeaders
from adapters.errors import ProxyError

from .config import PriceConfig, StateConfig
from .context import RequestContext
from .keys import Identity
from .state.base import WINDOW, Ask, Decision, Done, StateStore, StoreUnavailable

log = logging.getLogger("llm_proxy")

BYTES_PER_TOKEN = 4  # prompt estimate from the body size, before the backend counts
DEFAULT_COMPLETION_TOKENS = 1024  # reserved when neither the request nor the model says
WARN_EVERY = 10.0

_LEASE_PREFIX = "l" + os.urandom(6).hex()
_leases = itertools.count(1)


@dataclass(slots=True)
class Ticket:
    """An admitted request's reservation, settled when it ends."""

    key: Identity
    lease: str
    prompt: int  # estimated prompt tokens
    tokens: int  # reserved tokens
    cost: float  # reserved USD
    price: PriceConfig | None


class Limiter:
    def __init__(self, state: StateConfig, store: StateStore | None, lease_ttl: float,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.store = store
        self.closed = state.on_error == "closed"
        self.lease_ttl = lease_ttl
        self.clock = clock
        self._warned = 0.0

    # -- admission --------------------------------------------------------------------------------------
    async def admit(self, key: Identity, ctx: RequestContext, max_tokens_fields: tuple[tuple[str, ...], ...] | None,
                    body: bytes, raw: dict[str, Any], default_max_tokens: int | None, price: PriceConfig | None,
                    dialects: Sequence[RateLimitHeaders], refresh=None) -> Ticket | None:  # fmt: skip
        """Reserve the request's share, or raise the refusal.  `refresh(key)` re-reads a run-time key
        whose stored version changed (returns None once it is gone).  `max_tokens_fields`: where the
        operation's format puts the client's completion cap (`ChatOp.max_tokens_fields`); None for an
        operation that generates nothing (embeddings, token counts).  Read from the top-level raw
        fields, so a pass-through body is never decoded whole.  `dialects`: the rate-limit headers
        the caller's format declares (`Frontend.rate_limit_headers`)."""
        prompt = len(body) // BYTES_PER_TOKEN + 1
        completion = 0
        if max_tokens_fields is not None:
            completion = _max_tokens(raw, max_tokens_fields) or default_max_tokens or DEFAULT_COMPLETION_TOKENS
        for _ in range(2):
            ask = self._ask(key, prompt, completion, price)
            try:
                d = await self.store.admit(ask, self.clock())
            except StoreUnavailable as exc:
                return self._unavailable(exc, "admit")
            if d.reason != "stale" or refresh is None:
                break
            key = await refresh(key)  # the key changed on another worker: read it again, once
            if key is None:
                break
        if d.reason in ("revoked", "stale"):
            raise ProxyError("authentication", "invalid API key (revoked)", code="invalid_api_key")
        ctx.extra_headers.update(rate_headers(key, d, dialects, self.clock()))
        if not d.admitted:
            raise _refusal(key, d, ask.tokens, self.clock())
        return Ticket(key, d.lease, prompt, ask.tokens, ask.cost, price)

    def _ask(self, key: Identity, prompt: int, completion: int, price: PriceConfig | None) -> Ask:
        lim = key.limits
        tokens = prompt + completion
        if lim.tpm is not None:
            tokens = min(tokens, lim.tpm)  # one request alone always fits an empty window
        return Ask(name=key.name, tokens=tokens, cost=cost_usd(price, prompt, completion) if lim.budget else 0.0,
                   rpm=lim.rpm, tpm=lim.tpm, max_parallel=lim.max_parallel,
                   budget=lim.budget.usd if lim.budget is not None else None, period=key.period,
                   lease_ttl=self.lease_ttl, version=key.version, lease=f"{_LEASE_PREFIX}{next(_leases):x}")

    def _unavailable(self, exc: StoreUnavailable, what: str) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning("state store unavailable (%s, on_error=%s): %s", what, "closed" if self.closed else "open", exc)
        if self.closed and what == "admit":
            raise ProxyError("overloaded", "the gateway's state store is unavailable; try again shortly", status=503)
        return None

    # -- reconciliation ---------------------------------------------------------------------------------
    async def settle(self, ticket: Ticket, ctx: RequestContext, outcome: str) -> None:
        prompt, completion = ctx.charged = charged_tokens(ctx, outcome, ticket.prompt, ticket.tokens)
        used_cost = cost_usd(ticket.price, prompt, completion)
        key = ticket.key
        if not (key.limits.tpm or key.limits.max_parallel or ticket.cost or used_cost):
            return  # e.g. an rpm-only key on an unpriced model: nothing to reconcile, no second step
        done = Done(key.name, ticket.lease, ticket.tokens, prompt + completion, ticket.cost, used_cost, key.period)
        try:
            await self.store.settle(done, self.clock())
        except StoreUnavailable as exc:
            self._unavailable(exc, "settle")


def charged_tokens(ctx: RequestContext, outcome: str, prompt_estimate: int, reserved: int) -> tuple[int, int]:
    """(prompt, completion) tokens a finished request is charged.  `outcome`: ok | error | cut."""
    u = ctx.usage
    if u is not None and outcome == "ok" and not ctx.error_kind:
        return u.input_tokens, u.output_tokens
    if ctx.first_write is not None:  # a stream reached the client, then ended early or in an error
        prompt = u.input_tokens if u is not None and u.input_tokens else prompt_estimate
        return prompt, max(u.output_tokens if u is not None else 0, ctx.stream_chunks)
    if u is not None:
        return u.input_tokens, u.output_tokens
    if outcome == "ok":  # answered, but the backend reports no usage: keep the reservation
        return prompt_estimate, max(0, reserved - prompt_estimate)
    return 0, 0  # refused or failed before any answer


def cost_usd(price: PriceConfig | None, prompt: int, completion: int) -> float:
    if price is None:
        return 0.0
    return (prompt * price.input + completion * price.output) / 1_000_000


def _max_tokens(raw: dict[str, Any], fields: tuple[tuple[str, ...], ...]) -> int | None:
    for path in fields:
        value = raw.get(path[0])
        if value is None:
            continue
        try:
            value = jsonio.loads(value)
        except jsonio.DecodeError:
            continue
        for part in path[1:]:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


# --------------------------------------------------------------------------------------------------
# What the client sees


def _refusal(key: Identity, d: Decision, tokens: int, now: float) -> ProxyError:
    lim, name = key.limits, key.name
    if d.reason == "budget":
        b = lim.budget
        if d.period_end is None:
            when = "it is a lifetime budget and does not reset"
        else:
            when = "it resets at " + rfc3339(d.period_end)
        per = f" per {b.period}" if b.period else ""
        return ProxyError("quota_exhausted", f"the budget of key {name!r} is spent (${b.usd:g}{per}); {when}",
                          retry_after=d.retry_after)  # fmt: skip
    if d.reason == "max_parallel":
        msg = f"key {name!r} already has {lim.max_parallel} requests in flight (max_parallel)"
    elif d.reason == "rpm":
        msg = f"rate limit of key {name!r} reached: {lim.rpm} requests per minute"
    else:
        msg = f"rate limit of key {name!r} reached: {lim.tpm} tokens per minute (this request reserves {tokens})"
    return ProxyError("rate_limit", msg, retry_after=max(1.0, d.retry_after or 1.0), code="rate_limit_exceeded")


def rate_headers(key: Identity, d: Decision, dialects: Sequence[RateLimitHeaders], now: float) -> dict[str, str]:
    """The key's request and token limits, in each header dialect the caller's format reads."""
    lim = key.limits
    out: dict[str, str] = {}
    for kind, limit, used in (("requests", lim.rpm, d.requests), ("tokens", lim.tpm, d.tokens)):
        if limit is None:
            continue
        # Reset: the window is back to its initial state once the newest entry leaves it.
        reset = d.retry_after if not d.admitted and d.retry_after is not None else WINDOW
        remaining = str(max(0, limit - used))
        for h in dialects:
            out[h.limit.format(kind=kind)] = str(limit)
            out[h.remaining.format(kind=kind)] = remaining
            out[h.reset.format(kind=kind)] = h.reset_value(reset, now)
    if d.reason == "budget":
        out["x-should-retry"] = "false"  # the official SDKs then do not retry a spent budget
    return out


def rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
