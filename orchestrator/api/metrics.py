"""The API's own HTTP metrics (a registry per app, so tests can build many apps) and the
pure-ASGI middleware that counts, times and adds the timing headers."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator import timing
from orchestrator.metrics import LATENCY_BUCKETS


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tritonrag_http_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tritonrag_http_request_seconds",
            "HTTP request latency by route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.uploaded = Counter(
            "tritonrag_documents_uploaded",
            "Documents accepted for ingestion.",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "tritonrag_http_requests_in_flight",
            "HTTP requests being served.",
            registry=self.registry,
        )
        self.lane_depth = Gauge(
            "tritonrag_lane_depth",
            "Tasks waiting on each worker lane (Redis broker).",
            ["lane"],
            registry=self.registry,
        )
        self.lane_age = Gauge(
            "tritonrag_lane_oldest_age_seconds",
            "Age of the oldest task waiting on each lane; 0 when none waits.",
            ["lane"],
            registry=self.registry,
        )
        self.dependency_ready = Gauge(
            "tritonrag_dependency_ready",
            "1 when a dependency answers its readiness check at scrape time, else 0.",
            ["dependency"],
            registry=self.registry,
        )
        self.unacked = Gauge(
            "tritonrag_tasks_unacked",
            "Tasks delivered to workers and not yet acknowledged.",
            registry=self.registry,
        )


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware: that cost ~1 ms per request): counts and times
    every request by its route template, and adds the timing headers (orchestrator/timing.py)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timings = timing.begin()
        start = timings.start
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *timings.headers()]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
            self.metrics.requests.labels(method, route, str(status)).inc()
