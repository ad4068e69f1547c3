"""One vector-store protocol, two adapters: an embedded qdrant-edge shard per collection, and
qdrant-client against a Qdrant server (or its local mode, which stands in for it in tests)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.settings import Settings

DOCUMENT_KEY = "document_id"
_SCROLL_PAGE = 1024


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


def open_store(settings: Settings) -> VectorStore:
    """The server adapter when TRITONRAG_QDRANT_URL is set, else the embedded edge shards."""
    if settings.qdrant_url:
        from qdrant_client import QdrantClient

        if settings.qdrant_url.startswith(":memory:"):
            return ServerVectors(QdrantClient(location=":memory:"))
        return ServerVectors(QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key))
    return EdgeVectors(settings.vectors_dir)


class EdgeVectors:
    """One qdrant-edge shard per collection under `root`, owned by this process.

    A shard directory may be opened by one EdgeShard at a time, so this object is the only
    door to it; a lock serialises opening, dropping and closing.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _shard(self, collection: str, dim: int | None) -> Any | None:
        import qdrant_edge as qe

        with self._lock:
            if collection in self._shards:
                return self._shards[collection]
            path = self._root / collection
            if (path / "edge_config.json").exists():
                shard = qe.EdgeShard.load(str(path))
            elif dim is None:
                return None
            else:
                config = qe.EdgeConfig(
                    vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine),
                    wal_enabled=True,
                )
                shard = qe.EdgeShard.create(str(path), config)
                shard.update(
                    qe.UpdateOperation.create_field_index(
                        DOCUMENT_KEY, qe.PayloadSchemaType.Keyword
                    )
                )
            self._shards[collection] = shard
            return shard

    def upsert(self, collection: str, dim: int, points: Sequence[VectorPoint]) -> None:
        import qdrant_edge as qe

        if not points:
            return
        shard = self._shard(collection, dim)
        assert shard is not None  # created when dim is given
        batch = [qe.Point(p.id, p.vector, p.payload) for p in points]
        # The WAL already holds the update (a killed process loses nothing); flushing
        # segments on every batch cost ~13 ms per 32 points.
        shard.update(qe.UpdateOperation.upsert_points(batch))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        import qdrant_edge as qe

        shard = self._shard(collection, None)
        if shard is not None and ids:
            shard.update(qe.UpdateOperation.delete_points(list(ids)))
            shard.flush()

    def delete_document(self, collection: str, document_id: str) -> None:
        import qdrant_edge as qe

        shard = self._shard(collection, None)
        if shard is not None:
            shard.update(qe.UpdateOperation.delete_points_by_filter(_edge_filter(document_id)))
            shard.flush()

    def document_ids(self, collection: str, document_id: str) -> set[str]:
        import qdrant_edge as qe

        shard = self._shard(collection, None)
        ids: set[str] = set()
        offset = None
        while shard is not None:
            request = qe.ScrollRequest(
                offset=offset,
                limit=_SCROLL_PAGE,
                filter=_edge_filter(document_id),
                with_payload=False,
                with_vector=False,
            )
            records, offset = shard.scroll(request)
            ids.update(str(r.id) for r in records)
            if offset is None:
                break
        return ids

    def count(self, collection: str) -> int:
        import qdrant_edge as qe

        shard = self._shard(collection, None)
        return 0 if shard is None else int(shard.count(qe.CountRequest(exact=True)))

    def search(
        self, collection: str, vector: list[float], limit: int, match: dict[str, Any]
    ) -> list[Hit]:
        import qdrant_edge as qe

        shard = self._shard(collection, None)
        if shard is None:
            return []
        conditions: list[Any] = [
            qe.FieldCondition(key=k, match=qe.MatchValue(v)) for k, v in sorted(match.items())
        ]
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(vector),
            filter=qe.Filter(must=conditions) if conditions else None,
            with_payload=True,
            with_vector=False,
        )
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in shard.query(request)]

    def drop(self, collection: str) -> bool:
        with self._lock:
            shard = self._shards.pop(collection, None)
            if shard is not None:
                shard.close()
            path = self._root / collection
            existed = path.exists()
            shutil.rmtree(path, ignore_errors=True)
            return existed or shard is not None

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()


def _edge_filter(document_id: str) -> Any:
    import qdrant_edge as qe

    return qe.Filter(must=[qe.FieldCondition(key=DOCUMENT_KEY, match=qe.MatchValue(document_id))])


class ServerVectors:
    """A Qdrant server (or cluster) through qdrant-client; one Qdrant collection per ours."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def _ensure(self, collection: str, dim: int) -> None:
        from qdrant_client import models

        with self._lock:
            if collection in self._known:
                return
            if not self._client.collection_exists(collection):
                self._client.create_collection(
                    collection,
                    vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                )
                self._client.create_payload_index(
                    collection, DOCUMENT_KEY, models.PayloadSchemaType.KEYWORD
                )
            self._known.add(collection)

    def _exists(self, collection: str) -> bool:
        return collection in self._known or bool(self._client.collection_exists(collection))

    def upsert(self, collection: str, dim: int, points: Sequence[VectorPoint]) -> None:
        from qdrant_client import models

        if not points:
            return
        self._ensure(collection, dim)
        batch = [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in points]
        self._client.upsert(collection, batch, wait=True)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        from qdrant_client import models

        if ids and self._exists(collection):
            selector = models.PointIdsList(points=list(ids))
            self._client.delete(collection, selector, wait=True)

    def delete_document(self, collection: str, document_id: str) -> None:
        from qdrant_client import models

        if self._exists(collection):
            selector = models.FilterSelector(filter=_server_filter({DOCUMENT_KEY: document_id}))
            self._client.delete(collection, selector, wait=True)

    def document_ids(self, collection: str, document_id: str) -> set[str]:
        ids: set[str] = set()
        if not self._exists(collection):
            return ids
        offset = None
        while True:
            records, offset = self._client.scroll(
                collection,
                scroll_filter=_server_filter({DOCUMENT_KEY: document_id}),
                limit=_SCROLL_PAGE,
                offset=offset,
                with_payload=False,
                with_vectors=False,
            )
            ids.update(str(r.id) for r in records)
            if offset is None:
                return ids

    def count(self, collection: str) -> int:
        if not self._exists(collection):
            return 0
        return int(self._client.count(collection, exact=True).count)

    def search(
        self, collection: str, vector: list[float], limit: int, match: dict[str, Any]
    ) -> list[Hit]:
        if not self._exists(collection):
            return []
        response = self._client.query_points(
            collection,
            query=vector,
            limit=limit,
            query_filter=_server_filter(match) if match else None,
            with_payload=True,
        )
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points]

    def drop(self, collection: str) -> bool:
        with self._lock:
            self._known.discard(collection)
        return bool(self._client.delete_collection(collection))

    def close(self) -> None:
        self._client.close()


def _server_filter(match: dict[str, Any]) -> Any:
    from qdrant_client import models

    return models.Filter(
        must=[
            models.FieldCondition(key=k, match=models.MatchValue(value=v))
            for k, v in sorted(match.items())
        ]
    )
