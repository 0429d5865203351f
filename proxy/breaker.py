"""Circuit breaking (outlier ejection) per deployment.

How this works.  Each deployment (identified by its label, `backend/model`) has one `Breaker`:

- closed: takes traffic; every failed attempt adds one to a run of consecutive failures, every
  success resets it.  When the run reaches `routing.breaker_failures` the breaker opens;
- open: the deployment gets no traffic until `routing.breaker_cooldown` seconds have passed;
- half-open: after the cooldown exactly one request (the probe) may go through.  Its success closes
  the breaker; its failure opens it again for another cooldown.  A probe that ends without a verdict
  (the client went away, the request was invalid) frees the slot for the next probe.

A failure is an attempt that says something about the backend's health: the retryable kinds
(connect error, timeout, 429, 5xx) and `upstream_protocol` (it answered something unparseable).  A
client error (400, context length, auth) proves the backend is up, so it counts as a success.

`llm_proxy_backend_up{backend}` is 1 while at least one deployment on that backend takes traffic;
`llm_proxy_backend_ejections_total{backend}` counts every transition to open.
"""

from __future__ import annotations

from time import monotonic

from adapters.errors import RETRYABLE_KINDS

from .metrics import BACKEND_UP, EJECTIONS

FAILURE_KINDS = RETRYABLE_KINDS | {"upstream_protocol"}

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class Breaker:
    __slots__ = ("_board", "backend", "cooldown", "failures", "opened_at", "probing", "threshold")

    def __init__(self, backend: str, threshold: int, cooldown: float, board: BreakerBoard) -> None:
        self.backend = backend
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self._board = board

    def state(self, now: float | None = None) -> str:
        if self.opened_at is None:
            return CLOSED
        now = monotonic() if now is None else now
        return OPEN if now < self.opened_at + self.cooldown else HALF_OPEN

    def available(self, now: float | None = None) -> bool:
        """May a new request be sent here now?"""
        state = self.state(now)
        return state == CLOSED or (state == HALF_OPEN and not self.probing)

    def retry_in(self, now: float | None = None) -> float:
        """Seconds until an ejected deployment may be probed (0 when it takes traffic)."""
        if self.opened_at is None:
            return 0.0
        now = monotonic() if now is None else now
        return max(0.0, self.opened_at + self.cooldown - now)

    def end_cooldown(self, now: float) -> None:
        """The backend proved alive another way (proxy/load.py: its metrics answer again after
        failing): the half-open probe may go now instead of at the end of the cooldown."""
        if self.state(now) == OPEN:
            assert self.opened_at is not None
            self.opened_at = now - self.cooldown

    def begin(self, now: float | None = None) -> None:
        """An attempt is being sent: in half-open it is the one probe."""
        if self.state(now) == HALF_OPEN:
            self.probing = True

    def record(self, kind: str | None, now: float | None = None) -> None:
        """The attempt's outcome: None (answered) or the ProxyError kind it ended with."""
        if kind in FAILURE_KINDS:
            self._failure(monotonic() if now is None else now)
        else:
            self._success()

    def abandon(self) -> None:
        """The attempt ended without a verdict (cancelled, or a gateway-side error)."""
        self.probing = False

    def _success(self) -> None:
        self.failures = 0
        self.probing = False
        if self.opened_at is not None:
            self.opened_at = None
            self._board.changed(self.backend)

    def _failure(self, now: float) -> None:
        self.failures += 1
        if self.probing or (self.opened_at is None and self.failures >= self.threshold):
            # A failed probe re-opens for a fresh cooldown; a closed breaker past the threshold opens.
            self.probing = False
            self.opened_at = now
            EJECTIONS.labels(self.backend).inc()
            self._board.changed(self.backend)


class BreakerBoard:
    """Every breaker of one gateway, by deployment label, and the per-backend health they add up to."""

    def __init__(self, threshold: int, cooldown: float, backends: list[str]) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.breakers: dict[str, Breaker] = {}
        self._by_backend: dict[str, dict[str, Breaker]] = {b: {} for b in backends}
        for b in backends:
            BACKEND_UP.labels(b).set(1)

    def get(self, label: str, backend: str) -> Breaker:
        br = self.breakers.get(label)
        if br is None:
            br = self.breakers[label] = Breaker(backend, self.threshold, self.cooldown, self)
            self._by_backend.setdefault(backend, {})[label] = br
        return br

    def changed(self, backend: str) -> None:
        BACKEND_UP.labels(backend).set(1 if self.backend_state(backend) != OPEN else 0)

    def backend_state(self, backend: str, now: float | None = None) -> str:
        """closed (some deployment takes traffic), half-open (all ejected, one awaits its probe) or open."""
        states = {br.state(now) for br in self._by_backend.get(backend, {}).values()}
        if not states or CLOSED in states:
            return CLOSED
        return HALF_OPEN if HALF_OPEN in states else OPEN

    def report(self) -> dict[str, dict]:
        """Per backend: its state and each known deployment's state (for /health/ready)."""
        now = monotonic()
        out: dict[str, dict] = {}
        for backend, brs in self._by_backend.items():
            out[backend] = {
                "state": self.backend_state(backend, now),
                "deployments": {
                    label: {"state": br.state(now), "consecutive_failures": br.failures} for label, br in brs.items()
                },
            }
        return out
