"""The one typed object that carries a request's facts through routing, relay, metrics and logs."""

from __future__ import annotations

import itertools
import os
from time import perf_counter

from adapters.ir import Usage


# Unique across workers and restarts without a syscall per request: a random per-process prefix
# and a counter.
_PREFIX = "req_" + os.urandom(6).hex()
_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_PREFIX}{next(_counter):010x}"


MAX_REQUEST_ID = 128  # a longer client id is replaced (it travels to logs, backends and responses)


def request_id(client_id: str | None) -> str:
    """The client's `x-request-id` if it is 1-128 visible ASCII characters (it is echoed in a header,
    sent to backends and logged; aiohttp hands over non-UTF-8 bytes as surrogates), else a new one."""
    if client_id and len(client_id) <= MAX_REQUEST_ID and client_id.isascii() and client_id.isprintable() \
            and " " not in client_id:
        return client_id
    return new_request_id()


class RequestContext:
    __slots__ = (
        "request_id",
        "route",
        "client_model",
        "model_label",
        "stream",
        "t0",
        "backend",
        "deployment",
        "status",
        "upstream_time",
        "upstream_ttfb",
        "first_write",
        "usage",
        "dropped",
        "error_kind",
        "attempts",
        "fallback_from",
        "span",
        "debug_body",
        "key_name",
        "extra_headers",
        "stream_chunks",
        "charged",
        "price",
    )

    def __init__(self, request_id: str, route: str) -> None:
        self.request_id = request_id
        self.route = route
        self.client_model = ""
        self.model_label = ""  # the configured model name (a wildcard's pattern): bounded cardinality
        self.stream = False
        self.t0 = perf_counter()
        self.backend = ""  # backend name (label)
        self.deployment = ""  # backend/model label of the deployment that answered
        self.status = 0
        self.upstream_time = 0.0  # seconds the upstream spent (send -> last byte), summed over attempts
        self.upstream_ttfb: float | None = None  # streams: send -> first upstream chunk
        self.first_write: float | None = None  # streams: perf_counter() of the first content write
        self.usage: Usage | None = None
        self.dropped: list[str] = []
        self.error_kind: str | None = None
        self.attempts = 0
        self.fallback_from: str | None = None
        self.span = None  # the request's tracing span, when tracing is on
        self.debug_body: str | None = None  # only with server.log_prompts (a debugging aid)
        self.key_name = ""  # the client key's name (never the secret)
        self.extra_headers: dict[str, str] = {}  # sent with the response, e.g. rate-limit state
        self.stream_chunks = 0  # upstream stream reads relayed (a cut stream's token estimate)
        self.charged: tuple[int, int] | None = None  # (prompt, completion) charged to a limited key
        self.price = None  # the routed model's PriceConfig

    def elapsed(self) -> float:
        return perf_counter() - self.t0

    def server_timing(self) -> str:
        total = self.elapsed()
        return f"proxy;dur={max(0.0, total - self.upstream_time) * 1000:.3f}, upstream;dur={self.upstream_time * 1000:.3f}"
