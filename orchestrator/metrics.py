"""Prometheus metrics (`tritonrag_*`), with explicit buckets and low-cardinality labels.

Two homes: each app's HTTP metrics live in its own registry (`Metrics`, so tests can build
many apps); what library code records (Triton calls, caches, ingest stages, tasks, the LLM)
lives in the process's default registry, which the API's /metrics and each worker's metrics
server (workers/metrics.py, prefork-safe) also expose.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator import timing

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

TRITON_SECONDS = Histogram(
    "tritonrag_triton_request_seconds",
    "Embedding calls to Triton as the client sees them, by model and priority.",
    ["model", "priority"],
    buckets=LATENCY_BUCKETS,
)
CACHE = Counter(
    "tritonrag_cache_requests",
    "Cache lookups: query embeddings and answers, hit or miss.",
    ["cache", "result"],
)
INGEST_STAGE_SECONDS = Histogram(
    "tritonrag_ingest_stage_seconds",
    "Ingest stages: parse and chunk per document, embed and upsert per batch of chunks.",
    ["stage"],
    buckets=SLOW_BUCKETS,
)
CHUNKS = Counter(
    "tritonrag_chunks", "Chunks of ingested documents: embedded anew or reused.", ["outcome"]
)
TASKS = Counter(
    "tritonrag_tasks",
    "Task outcomes: succeeded, failed, retried (a Triton or store call), redelivered, expired "
    "(a search past its deadline).",
    ["task", "outcome"],
)
STORE_SEARCH_SECONDS = Histogram(
    "tritonrag_store_search_seconds",
    "One search in the vector store, in the worker.",
    buckets=FAST_BUCKETS,
)
LLM_FIRST_TOKEN_SECONDS = Histogram(
    "tritonrag_llm_time_to_first_token_seconds",
    "From the LLM call to its first answer token (prompt reading included).",
    buckets=SLOW_BUCKETS,
)
LLM_TOKENS_PER_SECOND = Histogram(
    "tritonrag_llm_tokens_per_second",
    "Answer tokens per second after the first token, per answer.",
    buckets=(1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 400),
)
LLM_TOKENS = Counter("tritonrag_llm_tokens", "Tokens the LLM read or wrote.", ["kind"])
LLM_ANSWERS = Counter(
    "tritonrag_llm_answers", "Answers the llm lane generated, by outcome.", ["outcome"]
)
MODEL_RELOADS = Counter(
    "tritonrag_model_reloads",
    "Reloads of a Triton model whose python-backend stub died (orchestrator/clients/"
    "model_guard.py), by model and outcome: healed or failed.",
    ["model", "outcome"],
)
MODEL_UP = Gauge(
    "tritonrag_model_up",
    "1 while every stub process of a loaded python-backend model is alive, 0 when one died.",
    ["model"],
)
# Every label set exists from the start (at 0), so a rate over it is 0, not "no data".
for _outcome in ("completed", "cancelled", "error", "timeout"):
    LLM_ANSWERS.labels(_outcome)
for _outcome in ("succeeded", "failed", "retried", "redelivered"):
    TASKS.labels("ingest", _outcome)
for _cache in ("query_embedding", "answer"):
    for _result in ("hit", "miss"):
        CACHE.labels(_cache, _result)
for _kind in ("embedded", "reused"):
    CHUNKS.labels(_kind)
for _kind in ("prompt", "completion"):
    LLM_TOKENS.labels(_kind)


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
