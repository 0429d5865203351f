"""The load-aware strategy: each deployment scored by the time to first token a new request can expect
there, from its model server's own load.

How this works.  For a new request on deployment d (seconds):

    expected = (base + (ahead + RUNNING_SHARE x running) x (base + decode) / capacity) x kv_factor / weight

- running, waiting: the server's load (proxy/load.py: its gauges, corrected by our requests in flight);
- capacity: how many requests the server runs at once, learned from its gauges (the running count
  whenever it reports a queue: max_num_seqs, or fewer when the KV cache is the limit); unknown until
  it first queues, and then every request is assumed to fit;
- ahead: the requests to finish before this one is scheduled: the queue, plus one when the batch is full;
- base: the time to first byte of requests sent with nothing ahead (prefill plus one step), tracked
  as a floor (down fast, up slowly): the server's speed, so a server twice as slow counts twice as long;
- decode: EWMA of the time from a request's first byte to its end; a request holds its batch slot
  for about base + decode, so (base + decode) / capacity is how often a slot frees;
- RUNNING_SHARE: a full batch decodes a little slower, and the emptier of two idle servers should win;
- kv_factor: 1, up to 1 + KV_PENALTY as KV-cache use goes from KV_HIGH to full (the server is about
  to preempt running requests).

Without a fresh reading (no `load:` block, or a stale scrape) nothing is known about the queue, and
the score is `base x (1 + requests we have in flight there)`: least-busy weighed by speed.  A
deployment not measured yet borrows the best known base and decode, so it gets tried.  Ties rotate.
"""

from __future__ import annotations

from .load import Load

EWMA_ALPHA = 0.3
BASE_DOWN, BASE_UP = 0.3, 0.03  # base follows faster samples quickly, slower ones slowly
RUNNING_SHARE = 0.1
KV_HIGH = 0.9
KV_PENALTY = 4.0


class ServiceTimes:
    """What one deployment's requests took: the two EWMAs the score needs."""

    __slots__ = ("base", "decode")

    def __init__(self) -> None:
        self.base: float | None = None  # seconds to first byte with nothing ahead
        self.decode: float | None = None  # seconds from the first byte to the end of the answer

    def observe_first_byte(self, seconds: float) -> None:
        # The floor of the samples, not their mean: a request the estimate thought unqueued may have
        # queued after all (a burst between two scrapes), and that must not make the server look slow.
        if self.base is None:
            self.base = seconds
        else:
            self.base += (BASE_DOWN if seconds < self.base else BASE_UP) * (seconds - self.base)

    def observe_decode(self, seconds: float) -> None:
        self.decode = seconds if self.decode is None else self.decode + EWMA_ALPHA * (seconds - self.decode)


def ahead(load: Load, capacity: float | None) -> float:
    """Requests that must finish before a new one is scheduled."""
    full = capacity is not None and load.running + 1 > capacity
    return load.waiting + (1.0 if full else 0.0)


def expected(load: Load, capacity: float | None, base: float, decode: float, weight: float) -> float:
    """The score (lower is better) of one deployment; `base` and `decode` already defaulted."""
    if not load.fresh:
        return base * (1.0 + load.running) / weight
    slots = capacity or max(1.0, load.running + 1.0)
    score = base + (ahead(load, capacity) + RUNNING_SHARE * load.running) * (base + decode) / slots
    if load.kv_cache > KV_HIGH:
        score *= 1.0 + KV_PENALTY * (load.kv_cache - KV_HIGH) / (1.0 - KV_HIGH)
    return score / weight


def defaults(times: list[ServiceTimes]) -> tuple[float, float]:
    """(base, decode) for a deployment not measured yet: the best known, so that it gets tried."""
    bases = [t.base for t in times if t.base is not None]
    decodes = [t.decode for t in times if t.decode is not None]
    return min(bases) if bases else 0.001, min(decodes) if decodes else 0.0
