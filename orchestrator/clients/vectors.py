"""The vector-store protocol and its types. Two adapters implement it: embedded qdrant-edge
shards (clients/edge.py) and qdrant-client against a Qdrant server (clients/qdrant.py; its
local mode stands in for the server in tests). workers/runtime.py opens the configured one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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
    score: float
    payload: dict[str, Any]


class VectorStore(Protocol):
    """What the workers need from a vector store. Collection names are already tenant-scoped."""

    def upsert(self, collection: str, dim: int, points: Sequence[VectorPoint]) -> None: ...
    def delete(self, collection: str, ids: Sequence[str]) -> None: ...
    def delete_document(self, collection: str, document_id: str) -> None: ...
    def document_ids(self, collection: str, document_id: str) -> set[str]: ...
    def count(self, collection: str) -> int: ...
    def search(
        self, collection: str, vector: list[float], limit: int, match: dict[str, Any]
    ) -> list[Hit]: ...
    def drop(self, collection: str) -> bool: ...
    def close(self) -> None: ...
