"""Logs: the one structured access-log line per request, and JSON formatting for every other line.

An access line carries ids, route, model, backend, status, durations and token counts -- never prompt
text, keys or backend URLs.  It is the only per-request log work, so it bypasses the `logging`
machinery (record objects, handler locks, one unbuffered write per line: a fifth of the proxy's own
per-request time when profiled): lines are encoded with orjson into a buffer that is written at most
every `FLUSH_INTERVAL` seconds, in writes of whole lines no larger than PIPE_BUF, so workers sharing a
pipe never interleave mid-line.  The line has the same shape as every other log line.
"""

from __future__ import annotations

import asyncio
import logging
import select
import sys
import time
from typing import Any, BinaryIO

from adapters import jsonio

from .context import RequestContext

FLUSH_INTERVAL = 0.05
PIPE_BUF = getattr(select, "PIPE_BUF", 4096)
ACCESS_LOGGER = "llm_proxy.access"


class AccessLog:
    __slots__ = ("enabled", "stream", "_buf", "_scheduled")

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.enabled = True
        self.stream = stream
        self._buf: list[bytes] = []
        self._scheduled = False

    def emit(self, fields: dict[str, Any]) -> None:
        line = jsonio.dumps({"ts": round(time.time(), 3), "level": "info", "logger": ACCESS_LOGGER, **fields})
        self._buf.append(line + b"\n")
        if self._scheduled:
            return
        try:
            asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)
            self._scheduled = True
        except RuntimeError:  # no event loop (tools, tests): write now
            self.flush()

    def flush(self) -> None:
        self._scheduled = False
        lines, self._buf = self._buf, []
        if not lines:
            return
        stream = self.stream or sys.stderr.buffer
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > PIPE_BUF:
                stream.write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        stream.write(b"".join(chunk))
        stream.flush()


ACCESS = AccessLog()


def access_line(ctx: RequestContext, total: float, added: float, ttft: float | None) -> None:
    if not ACCESS.enabled:
        return
    record: dict[str, Any] = {
        "request_id": ctx.request_id,
        "route": ctx.route,
        "model": ctx.client_model,
        "backend": ctx.backend or None,
        "deployment": ctx.deployment or None,
        "status": ctx.status,
        "key_name": ctx.key_name or None,
        "stream": ctx.stream,
        "duration_ms": round(total * 1000, 3),
        "upstream_ms": round(ctx.upstream_time * 1000, 3),
        "added_ms": round(added * 1000, 3),
    }
    if ttft is not None:
        record["ttft_ms"] = round(ttft * 1000, 3)
    if ctx.usage is not None:
        record["prompt_tokens"] = ctx.usage.input_tokens
        record["completion_tokens"] = ctx.usage.output_tokens
    if ctx.attempts > 1:
        record["attempts"] = ctx.attempts
    if ctx.fallback_from:
        record["fallback_from"] = ctx.fallback_from
    if ctx.dropped:
        record["dropped_params"] = ctx.dropped
    if ctx.error_kind:
        record["error"] = ctx.error_kind
    if ctx.debug_body is not None:
        record["request_body"] = ctx.debug_body
    ACCESS.emit(record)


class JSONFormatter(logging.Formatter):
    """Every other log line as one JSON object, in the access lines' shape."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {"msg": record.getMessage()}
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return jsonio.dumps_str(
            {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name, **body}
        )


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log would duplicate ours
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    ACCESS.enabled = logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.INFO)


def flush_at_exit() -> None:
    """Write what is buffered (shutdown, or before a worker process exits)."""
    try:
        ACCESS.flush()
    except (OSError, ValueError):
        pass
