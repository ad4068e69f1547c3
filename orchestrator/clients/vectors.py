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

from orchestrator.errors import ErrorCode, TritonRagError

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


@dataclass(frozen=True)
class VectorModel:
    """What made a collection's vectors, recorded with the collection when it is created: the
    embedding model, dimension and distance (a write or search with another model is refused:
    its vectors mean nothing next to these), and the variants (engine and precision) that
    wrote into it, shown but not refused: every variant passed export's gate against fp32."""

    name: str
    dim: int
    distance: str = "cosine"
    variants: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "distance": self.distance,
                "variants": list(self.variants)}  # fmt: skip

    @classmethod
    def from_dict(cls, record: dict[str, Any] | None) -> VectorModel | None:
        if not record or "name" not in record:
            return None
        return cls(record["name"], int(record["dim"]), record.get("distance", "cosine"),
                   tuple(record.get("variants", ())))  # fmt: skip

    def merged(self, other: VectorModel) -> VectorModel:
        """This record with `other`'s variants added."""
        variants = tuple(dict.fromkeys(self.variants + other.variants))
        return VectorModel(self.name, self.dim, self.distance, variants)


def check_model(recorded: VectorModel | None, name: str, dim: int) -> None:
    """Refuse vectors of another model than the one a collection was built with (a collection
    made before models were recorded has none: anything goes until its next write records it)."""
    if recorded is not None and (recorded.name, recorded.dim) != (name, dim):
        raise TritonRagError(
            ErrorCode.MODEL_MISMATCH,
            f"this collection holds vectors of {recorded.name} ({recorded.dim} dims); these "
            f"come from {name} ({dim} dims): re-index it with that model or use another "
            "collection",
        )


class SearchMode(StrEnum):
    DENSE = "dense"
    SPARSE = "sparse"
    HYBRID = "hybrid"


class VectorStore(Protocol):
    """What the workers need from a vector store. Collection names are already tenant-scoped."""

    def upsert(self, collection: str, model: VectorModel, points: Sequence[VectorPoint]) -> None:
        """Creates the collection, recording `model`, if it does not exist; refuses points of
        another model (check_model)."""
        ...

    def model(self, collection: str) -> VectorModel | None:
        """The model recorded with the collection; None if it has none or does not exist."""
        ...

    def delete(self, collection: str, ids: Sequence[str]) -> None: ...
    def delete_document(self, collection: str, document_id: str) -> None: ...
    def document_ids(self, collection: str, document_id: str) -> set[str]: ...
    def chunks(self, collection: str, document_id: str) -> list[dict[str, Any]]:
        """The payloads of a document's points (text, chunk index, ...) by chunk index: what a
        re-index embeds again."""
        ...

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
