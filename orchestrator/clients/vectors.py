"""The vector-store protocol and its types. Two adapters implement it: embedded qdrant-edge
shards (clients/edge.py) and qdrant-client against a Qdrant server (clients/qdrant.py; its
local mode stands in for the server in tests). workers/runtime.py opens the configured one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

Matrix = NDArray[np.float32]  # rows of embeddings

DOCUMENT_KEY = "document_id"
SCROLL_PAGE = 1024


@dataclass(frozen=True)
class VectorPoint:
    id: str
    vector: list[float]
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # the mode's own: cosine (dense), BM25 (sparse), fused rank (hybrid)
    payload: dict[str, Any]
    similarity: float  # cosine with the query embedding whatever the mode: relevance cut-offs


class SearchMode(StrEnum):
    DENSE = "dense"
    SPARSE = "sparse"
    HYBRID = "hybrid"


class VectorStore(Protocol):
    """What the workers need from a vector store. Collection names are already tenant-scoped."""

    def upsert(self, collection: str, dim: int, points: Sequence[VectorPoint]) -> None: ...
    def delete(self, collection: str, ids: Sequence[str]) -> None: ...
    def delete_document(self, collection: str, document_id: str) -> None: ...
    def document_ids(self, collection: str, document_id: str) -> set[str]: ...
    def count(self, collection: str) -> int: ...
    def search(
        self,
        collection: str,
        vector: list[float],
        limit: int,
        match: dict[str, Any],
        text: str = "",
        mode: SearchMode = SearchMode.DENSE,
    ) -> list[Hit]:
        """`text` is the query's words for the sparse (BM25) half; on a collection without
        sparse vectors (`has_sparse` false) only dense runs."""
        ...

    def has_sparse(self, collection: str) -> bool: ...
    def reindex(self, collection: str) -> bool:
        """Start giving an existing collection sparse vectors, searches answering meanwhile;
        False if there is nothing to start now."""
        ...

    def indexing(self, collection: str) -> bool:
        """A background build (HNSW or a reindex) is running."""
        ...

    def drop(self, collection: str) -> bool: ...
    def close(self) -> None: ...


def dense_part(vector: Any) -> list[float]:
    """The dense vector of a stored point, read back with or without its sparse one."""
    return list(vector[""] if isinstance(vector, dict) else vector)


def similarities(query: list[float], rows: Sequence[Sequence[float]]) -> list[float]:
    """Cosine of `query` with each row (stored vectors are unit length, the query may not be)."""
    if not rows:
        return []
    matrix = np.asarray(rows, dtype=np.float32)
    q = np.asarray(query, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1) * max(float(np.linalg.norm(q)), 1e-12)
    return [float(x) for x in (matrix @ q) / np.maximum(norms, 1e-12)]
