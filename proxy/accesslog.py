"""The one structured access-log line per request: ids, route, model, backend, status, durations,
token counts.  Never prompt text, never keys or backend URLs."""

from __future__ import annotations

import logging

from adapters import jsonio

from .context import RequestContext

access_log = logging.getLogger("llm_proxy.access")


def access_line(ctx: RequestContext, total: float, added: float, ttft: float | None) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    record = {
        "request_id": ctx.request_id,
        "route": ctx.route,
        "model": ctx.client_model,
        "backend": ctx.backend or None,
        "deployment": ctx.deployment or None,
        "status": ctx.status,
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
    if ctx.dropped:
        record["dropped_params"] = ctx.dropped
    if ctx.error_kind:
        record["error"] = ctx.error_kind
    access_log.info("request", extra={"fields": record})


class JSONFormatter(logging.Formatter):
    """Every log line as one JSON object; access lines carry their fields in `record.fields`."""

    def format(self, record: logging.LogRecord) -> str:
        body = getattr(record, "fields", None) or {"msg": record.getMessage()}
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return jsonio.dumps_str({"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name, **body})


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log would duplicate ours
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
