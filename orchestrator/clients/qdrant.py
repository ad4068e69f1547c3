"""The vector-store protocol (clients/vectors.py) on a Qdrant server or cluster, through
qdrant-client; one Qdrant collection per collection of ours, with the dense vector and BM25
sparse vectors (IDF by the server); hybrid search is the Query API's prefetch + RRF fusion.
A collection created before sparse vectors existed searches dense only."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from orchestrator.clients import sparse
from orchestrator.clients.vectors import (
    DOCUMENT_KEY,
    SCROLL_PAGE,
    Hit,
    SearchMode,
    VectorModel,
    VectorPoint,
    check_model,
    dense_part,
    similarities,
)
from orchestrator.errors import ErrorCode, TritonRagError

FUSION_K = 60  # as the edge adapter
MODEL_KEY = "tritonrag_model"  # the collection's metadata entry holding its VectorModel


class ServerVectors:
    """A Qdrant server (or cluster) through qdrant-client; one Qdrant collection per ours."""

    def __init__(
        self,
        client: Any,
        quantization: str = "none",
        hnsw_ef: int | None = None,
        fusion: str = "rrf",
    ) -> None:
        from qdrant_client import models

        self._client = client
        self._fusion = (
            models.RrfQuery(rrf=models.Rrf(k=FUSION_K))
            if fusion == "rrf"
            else models.FusionQuery(fusion=models.Fusion.DBSF)
        )
        self._quantization = quantization
        self._hnsw_ef = hnsw_ef
        self._known: dict[str, bool] = {}  # collection -> has sparse vectors
        self._models: dict[str, VectorModel | None] = {}
        self._lock = threading.Lock()

    def _ensure(self, collection: str, model: VectorModel) -> None:
        from qdrant_client import models

        with self._lock:
            if collection in self._known:
                return
            if self._client.collection_exists(collection):
                self._known[collection] = self._sparse_config(collection)
                return
            int8 = self._quantization == "int8"
            self._client.create_collection(
                collection,
                vectors_config=models.VectorParams(
                    size=model.dim, distance=models.Distance.COSINE, on_disk=int8
                ),
                metadata={MODEL_KEY: model.as_dict()},
                sparse_vectors_config={
                    sparse.NAME: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
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
            self._known[collection] = True
            self._models[collection] = model

    def model(self, collection: str) -> VectorModel | None:
        if collection not in self._models:
            if not self._client.collection_exists(collection):
                return None
            metadata = self._client.get_collection(collection).config.metadata or {}
            self._models[collection] = VectorModel.from_dict(metadata.get(MODEL_KEY))
        return self._models[collection]

    def _sparse_config(self, collection: str) -> bool:
        params = self._client.get_collection(collection).config.params
        return sparse.NAME in (params.sparse_vectors or {})

    def _exists(self, collection: str) -> bool:
        return collection in self._known or bool(self._client.collection_exists(collection))

    def has_sparse(self, collection: str) -> bool:
        if collection not in self._known:
            if not self._client.collection_exists(collection):
                return False
            self._known[collection] = self._sparse_config(collection)
        return self._known[collection]

    def upsert(self, collection: str, model: VectorModel, points: Sequence[VectorPoint]) -> None:
        from qdrant_client import models

        if not points:
            return
        check_model(self.model(collection), model.name, model.dim)
        self._ensure(collection, model)  # a new collection records `model`
        recorded = self.model(collection)
        if recorded is None or not set(model.variants) <= set(recorded.variants):
            merged = recorded.merged(model) if recorded else model
            self._client.update_collection(collection, metadata={MODEL_KEY: merged.as_dict()})
            self._models[collection] = merged
        with_sparse = self._known[collection]
        batch = [
            models.PointStruct(id=p.id, vector=_vectors(p, with_sparse), payload=p.payload)
            for p in points
        ]
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
        self,
        collection: str,
        vector: list[float],
        limit: int,
        match: dict[str, Any],
        text: str = "",
        mode: SearchMode = SearchMode.DENSE,
    ) -> list[Hit]:
        from qdrant_client import models

        if not self._exists(collection):
            return []
        rescore = models.QuantizationSearchParams(rescore=True, oversampling=2.0)
        # As the edge adapter: twice the candidates by int8, ranked by the full vectors.
        params = models.SearchParams(
            hnsw_ef=self._hnsw_ef, quantization=rescore if self._quantization == "int8" else None
        )
        where = _server_filter(match) if match else None
        indices, values = sparse.query(text)
        words = models.SparseVector(indices=indices, values=values)
        if mode is SearchMode.DENSE or not self.has_sparse(collection):
            response = self._client.query_points(
                collection,
                query=vector,
                limit=limit,
                query_filter=where,
                with_payload=True,
                search_params=params,
            )
            return [
                Hit(str(p.id), float(p.score), dict(p.payload or {}), float(p.score))
                for p in response.points
            ]
        if mode is SearchMode.SPARSE:
            extra: dict[str, Any] = {"query": words, "using": sparse.NAME}
        else:
            depth = max(4 * limit, 20)
            extra = {
                "prefetch": [
                    models.Prefetch(query=vector, limit=depth, filter=where, params=params),
                    models.Prefetch(query=words, using=sparse.NAME, limit=depth, filter=where),
                ],
                "query": self._fusion,
            }
        response = self._client.query_points(
            collection,
            limit=limit,
            query_filter=where,
            with_payload=True,
            with_vectors=[""],
            **extra,
        )
        points = response.points
        cosines = similarities(vector, [dense_part(p.vector) for p in points])
        return [
            Hit(str(p.id), float(p.score), dict(p.payload or {}), c)
            for p, c in zip(points, cosines, strict=True)
        ]

    def reindex(self, collection: str) -> bool:
        if self._exists(collection) and not self.has_sparse(collection):
            raise TritonRagError(
                ErrorCode.INVALID_INPUT,
                "on a Qdrant server, a collection made before sparse vectors existed gets "
                "them by being ingested again into a new collection",
            )
        return False

    def indexing(self, collection: str) -> bool:
        return False  # the server indexes by itself, searches answering

    def drop(self, collection: str) -> bool:
        with self._lock:
            self._known.pop(collection, None)
            self._models.pop(collection, None)
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


def _vectors(point: VectorPoint, with_sparse: bool) -> Any:
    from qdrant_client import models

    if not with_sparse:
        return point.vector
    indices, values = sparse.document(str(point.payload.get("text", "")))
    return {"": point.vector, sparse.NAME: models.SparseVector(indices=indices, values=values)}
