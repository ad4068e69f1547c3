"""The vector-store protocol (clients/vectors.py) on a Qdrant server or cluster, through
qdrant-client; one Qdrant collection per collection of ours."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from orchestrator.clients.vectors import DOCUMENT_KEY, SCROLL_PAGE, Hit, VectorPoint


class ServerVectors:
    """A Qdrant server (or cluster) through qdrant-client; one Qdrant collection per ours."""

    def __init__(self, client: Any, quantization: str = "none", hnsw_ef: int | None = None) -> None:
        self._client = client
        self._quantization = quantization
        self._hnsw_ef = hnsw_ef
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def _ensure(self, collection: str, dim: int) -> None:
        from qdrant_client import models

        with self._lock:
            if collection in self._known:
                return
            if not self._client.collection_exists(collection):
                int8 = self._quantization == "int8"
                self._client.create_collection(
                    collection,
                    vectors_config=models.VectorParams(
                        size=dim, distance=models.Distance.COSINE, on_disk=int8
                    ),
                    quantization_config=models.ScalarQuantization(
                        scalar=models.ScalarQuantizationConfig(
                            type=models.ScalarType.INT8, quantile=0.99, always_ram=True
                        )
                    )
                    if int8
                    else None,
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
                limit=SCROLL_PAGE,
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
        from qdrant_client import models

        if not self._exists(collection):
            return []
        rescore = models.QuantizationSearchParams(rescore=True, oversampling=2.0)
        response = self._client.query_points(
            collection,
            query=vector,
            limit=limit,
            query_filter=_server_filter(match) if match else None,
            with_payload=True,
            # As the edge adapter: twice the candidates by int8, ranked by the full vectors.
            search_params=models.SearchParams(
                hnsw_ef=self._hnsw_ef,
                quantization=rescore if self._quantization == "int8" else None,
            ),
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
