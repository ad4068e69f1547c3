"""W3C trace context from a request, through a Celery message's headers, into the task and on
to the gRPC metadata of its Triton call; nothing written when no trace is running."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from orchestrator import tracing
from orchestrator.lanes import SENT_AT, _stamp
from orchestrator.settings import Settings


def test_a_trace_crosses_the_celery_hop_into_grpc_metadata() -> None:
    tracer = TracerProvider().get_tracer("test")
    headers: dict[str, Any] = {}
    with tracer.start_as_current_span("POST /search") as request:
        _stamp(headers=headers)
    trace_id = f"{request.get_span_context().trace_id:032x}"
    assert headers["traceparent"].split("-")[1] == trace_id and SENT_AT in headers

    assert tracing.grpc_headers() is None  # the worker thread, before the task starts
    tracing.task_started("task-1", "tritonrag.search", headers)
    metadata = tracing.grpc_headers()
    assert metadata is not None and metadata["traceparent"].split("-")[1] == trace_id
    tracing.task_finished("task-1", "SUCCESS")
    assert tracing.grpc_headers() is None


def test_nothing_is_written_without_a_trace() -> None:
    headers: dict[str, Any] = {}
    _stamp(headers=headers)
    assert "traceparent" not in headers
    tracing.task_started("task-2", "tritonrag.search", headers)
    assert tracing.grpc_headers() is None
    tracing.task_finished("task-2", "SUCCESS")


def test_tracing_is_off_by_default() -> None:
    settings = Settings()
    assert settings.otlp_endpoint == "" and not tracing.setup(settings, "test")
