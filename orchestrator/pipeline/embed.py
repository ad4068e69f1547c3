"""Embedding for the workers: batched, retried with backoff on transient Triton errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from orchestrator.encoder import Matrix
from orchestrator.errors import RETRYABLE, ErrorCode, TritonRagError


class Embedder(Protocol):
    """Texts -> L2-normalised rows, in order (TritonEmbedder behind a sync facade)."""

    def __call__(self, texts: list[str]) -> Matrix: ...


def transient(exc: BaseException) -> bool:
    """Errors worth another try: overload, dependency not ready, timeouts, broken connections."""
    if isinstance(exc, TritonRagError):
        return exc.code in RETRYABLE or exc.code is ErrorCode.UPSTREAM_TIMEOUT
    return isinstance(exc, ConnectionError | TimeoutError)


def retrying(attempts: int) -> Retrying:
    return Retrying(
        retry=retry_if_exception(transient),
        stop=stop_after_attempt(attempts + 1),
        wait=wait_exponential_jitter(multiplier=0.5, max=8.0),
        reraise=True,
    )


def embed_batches(
    embed: Embedder,
    texts: list[str],
    batch: int,
    attempts: int,
    on_batch: Callable[[int, Matrix], None],
) -> None:
    """Embed `texts` `batch` at a time; `on_batch(start, rows)` runs after each batch."""
    for start in range(0, len(texts), batch):
        part = texts[start : start + batch]
        rows = retrying(attempts)(embed, part)
        on_batch(start, np.asarray(rows, dtype=np.float32))
