"""One trace per request (OpenTelemetry); off unless `otlp_endpoint` is set.

The API's request span, the Celery task it publishes, the Triton calls and the store call
share one trace id: W3C trace context travels in Celery message headers (workers/celery_app.py)
and in Triton's gRPC metadata, where Triton, started with `--trace-config
mode=opentelemetry`, adds its own spans. With tracing off the OpenTelemetry API is a no-op:
spans cost nothing and no header is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import Token
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind

from orchestrator.settings import Settings

tracer = trace.get_tracer("tritonrag")
_configured_pid: int | None = None


def traces_url(settings: Settings) -> str:
    return f"{settings.otlp_endpoint.rstrip('/')}/v1/traces"


def setup(settings: Settings, service: str) -> bool:
    """Export this process's spans to the OTLP/HTTP endpoint, once per process (a prefork
    child sets up its own: the exporter's thread does not survive a fork)."""
    global _configured_pid
    if not settings.otlp_endpoint or _configured_pid == os.getpid():
        return bool(settings.otlp_endpoint)
    from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(traces_url(settings))))
    trace.set_tracer_provider(provider)
    _configured_pid = os.getpid()
    return True


def instrument_app(app: Any, settings: Settings) -> None:
    """A server span per API request (not for probes and scrapes)."""
    if setup(settings, "tritonrag-api"):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, excluded_urls="health,ready,metrics", exclude_spans=["receive", "send"]
        )


def grpc_headers() -> dict[str, str] | None:
    """The current trace context as gRPC metadata (None when no span is recording)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


_tasks: dict[str, tuple[Span, Token[context.Context]]] = {}


def task_started(task_id: str, name: str, headers: Mapping[str, Any]) -> None:
    """A consumer span for a Celery task, child of the span that published it."""
    parent = propagate.extract(headers)
    span = tracer.start_span(
        f"task {name}", context=parent, kind=SpanKind.CONSUMER, attributes={"celery.task": name}
    )
    _tasks[task_id] = (span, context.attach(trace.set_span_in_context(span, parent)))


def task_finished(task_id: str, state: str | None) -> None:
    if (entry := _tasks.pop(task_id, None)) is None:
        return
    span, token = entry
    span.set_attribute("celery.state", state or "")
    context.detach(token)
    span.end()
