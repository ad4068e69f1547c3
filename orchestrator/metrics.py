"""Prometheus metrics (`tritonrag_*`), with explicit buckets and low-cardinality labels.

What library code records (Triton calls, caches, ingest stages, tasks, the LLM) lives in the
process's default registry, which the API's /metrics and each worker's metrics server
(workers/metrics.py, prefork-safe) expose. The API's HTTP metrics: orchestrator/api/metrics.py.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    "tritonrag_llm_answers",
    "Answers the llm lane generated, by outcome (loop: stopped where it began repeating).",
    ["outcome"],
)
ANSWERS_REFUSED = Counter(
    "tritonrag_answers_refused",
    "Questions refused with 429 because max_answers generations were running in this API "
    "process (a question joining one already in flight is never refused).",
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
for _outcome in ("completed", "loop", "cancelled", "error", "timeout"):
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
