"""Embedding for the workers: batched, retried with backoff on transient Triton errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from orchestrator.clients.vectors import Matrix
from orchestrator.errors import RETRYABLE, ErrorCode, TritonRagError
from orchestrator.metrics import TASKS


class Embedder(Protocol):
    """Texts -> L2-normalised rows, in order, by the named Triton model (None: the served
    one); TritonEmbedder behind a sync facade."""

    variant: str  # the variant (engine and precision) that computed the last call's rows

    def __call__(self, texts: list[str], model: str | None = None) -> Matrix: ...


def transient(exc: BaseException) -> bool:
    """Errors worth another try: overload, dependency not ready, timeouts, broken connections."""
    if isinstance(exc, TritonRagError):
        return exc.code in RETRYABLE or exc.code is ErrorCode.UPSTREAM_TIMEOUT
    return isinstance(exc, ConnectionError | TimeoutError)


def retrying(attempts: int, outage_s: float = 0) -> Retrying:
    """`attempts` more tries; while a dependency is down (not ready), tries for `outage_s`:
    a Triton restart must not fail the documents that wait for it."""
    by_count, by_time = stop_after_attempt(attempts + 1), stop_after_delay(outage_s)

    def stop(state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        down = isinstance(exc, TritonRagError) and exc.code is ErrorCode.NOT_READY
        return bool(by_count(state) and (not down or by_time(state)))

    return Retrying(
        retry=retry_if_exception(transient),
        stop=stop,
        wait=wait_exponential_jitter(multiplier=0.5, max=8.0),
        before_sleep=lambda _: TASKS.labels("ingest", "retried").inc(),
        reraise=True,
    )


def embed_batches(
    embed: Callable[[list[str]], Matrix],
    texts: list[str],
    batch: int,
    attempts: int,
    on_batch: Callable[[int, Matrix], None],
    outage_s: float = 0,
) -> None:
    """Embed `texts` `batch` at a time; `on_batch(start, rows)` runs after each batch."""
    for start in range(0, len(texts), batch):
        part = texts[start : start + batch]
        rows = retrying(attempts, outage_s)(embed, part)
        on_batch(start, np.asarray(rows, dtype=np.float32))
