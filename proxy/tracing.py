"""Optional OpenTelemetry tracing (off by default): one SERVER span per request, one CLIENT span per
upstream attempt, W3C `traceparent` propagated to backends.

Off, nothing here runs per request except forwarding the caller's own `traceparent` / `tracestate`
to the backend unchanged (so a backend that traces stays in the caller's trace).  On, the
OpenTelemetry SDK (the `tracing` extra) exports spans over OTLP/HTTP from a background batch
processor; the request path only creates and ends spans.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.common import forwardable

from .config import TracingConfig

PROPAGATED = ("traceparent", "tracestate")


class Tracing:
    __slots__ = ("enabled", "provider", "tracer", "propagator", "_trace", "_kind", "_status")

    def __init__(self, cfg: TracingConfig, exporter: Any = None) -> None:
        self.enabled = cfg.enabled
        self.provider = self.tracer = self.propagator = None
        if not self.enabled:
            return
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=cfg.endpoint, headers=dict(cfg.headers))
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": cfg.service_name}),
            sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)),
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("llm-proxy")
        self.propagator = TraceContextTextMapPropagator()
        self._trace = trace
        self._kind = trace.SpanKind
        self._status = trace.Status

    def upstream_headers(self, client_headers: Mapping[str, str], request_id: str) -> dict[str, str]:
        """Headers every upstream attempt carries: the request id and the caller's trace context."""
        headers = {"x-request-id": request_id}
        for name in PROPAGATED:
            value = forwardable(client_headers.get(name))
            if value:
                headers[name] = value
        return headers

    def start_request(self, client_headers: Mapping[str, str], route: str, request_id: str) -> Any:
        if not self.enabled:
            return None
        parent = self.propagator.extract(client_headers)
        return self.tracer.start_span(
            f"POST {route}", context=parent, kind=self._kind.SERVER,
            attributes={"http.route": route, "http.request.method": "POST", "llm_proxy.request_id": request_id},
        )

    def end_request(self, span: Any, status: int, model: str, error_kind: str | None) -> None:
        if span is None:
            return
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("llm_proxy.model", model)
        if error_kind:
            span.set_attribute("error.type", error_kind)
        if status >= 500:
            span.set_status(self._status(self._trace.StatusCode.ERROR))
        span.end()

    def start_attempt(self, parent: Any, deployment: str, backend: str, headers: dict[str, str]) -> Any:
        """A child span for one upstream attempt; its context is injected into `headers`."""
        if parent is None:
            return None
        ctx = self._trace.set_span_in_context(parent)
        span = self.tracer.start_span(
            f"upstream {backend}", context=ctx, kind=self._kind.CLIENT,
            attributes={"llm_proxy.backend": backend, "llm_proxy.deployment": deployment},
        )
        self.propagator.inject(headers, context=self._trace.set_span_in_context(span))
        return span

    def end_attempt(self, span: Any, error_kind: str | None) -> None:
        if span is None:
            return
        if error_kind:
            span.set_attribute("error.type", error_kind)
            span.set_status(self._status(self._trace.StatusCode.ERROR))
        span.end()

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
