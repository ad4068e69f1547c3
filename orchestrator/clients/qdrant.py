"""The vector-store protocol (clients/vectors.py) on a Qdrant server or cluster, through
qdrant-client, laid out as Qdrant advises for many tenants: one physical collection per
embedding model, reached through an alias, holds every collection of every tenant. Each point
carries its (tenant-scoped) collection in the payload under a keyword index marked
`is_tenant`, so the server keeps a tenant's points together and filters by it first; every
read, count and delete is filtered by it. A point's id there is derived from its collection
and its own id (kept in the payload), so two collections never share a point. Shards,
replication, write consistency and write ordering are settings; every write waits until it is
applied as they say. Dense + BM25 sparse vectors (IDF by the server); hybrid is the Query
API's prefetch + fusion.

The alias lets a re-index build a new physical collection and swap it in atomically."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
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

FUSION_K = 60  # as the edge adapter
MODEL_KEY = "tritonrag_model"  # the physical collection's metadata entry: its VectorModel
COLLECTION_KEY = "collection"  # payload: the tenant-scoped collection a point belongs to
ID_KEY = "point_id"  # payload: the point's id in its collection
_NAMESPACE = uuid.UUID("9b5e3f0e-2a41-4c8e-8f0a-3d7c1e6b4a21")


@dataclass(frozen=True)
class Layout:
    """How the physical collection is spread and how writes are acknowledged (None: the
    server's default)."""

    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    write_ordering: str = "weak"  # weak | medium | strong (Qdrant's WriteOrdering)


def alias_of(model: str) -> str:
    """The alias every collection of `model` is reached by."""
    return "tritonrag-" + re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")


class ServerVectors:
    """A Qdrant server (or cluster) through qdrant-client, for the vectors of one model."""

    def __init__(
        self,
        client: Any,
        model: str,
        quantization: str = "none",
        hnsw_ef: int | None = None,
        fusion: str = "rrf",
        layout: Layout | None = None,
    ) -> None:
        from qdrant_client import models

        self._client = client
        self._alias = alias_of(model)
        self._layout = layout or Layout()
        self._fusion = (
            models.RrfQuery(rrf=models.Rrf(k=FUSION_K))
            if fusion == "rrf"
            else models.FusionQuery(fusion=models.Fusion.DBSF)
        )
        self._quantization = quantization
        self._hnsw_ef = hnsw_ef
        self._record: VectorModel | None = None  # the physical collection's, once read
        self._ready = False  # the physical collection and its alias exist
        self._live: set[str] = set()  # collections seen holding points
        self._lock = threading.Lock()

    # --- the physical collection ---
    def _exists(self) -> bool:
        if not self._ready:
            aliases = self._client.get_aliases().aliases
            self._ready = any(a.alias_name == self._alias for a in aliases)
        return self._ready

    def _ensure(self, model: VectorModel) -> None:
        from qdrant_client import models

        with self._lock:
            if self._exists():
                return
            physical = f"{self._alias}-1"
            int8 = self._quantization == "int8"
            self._client.create_collection(
                physical,
                vectors_config=models.VectorParams(
                    size=model.dim, distance=models.Distance.COSINE, on_disk=int8
                ),
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
                shard_number=self._layout.shard_number,
                replication_factor=self._layout.replication_factor,
                write_consistency_factor=self._layout.write_consistency_factor,
                metadata={MODEL_KEY: model.as_dict()},
            )
            tenant = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
            self._client.create_payload_index(physical, COLLECTION_KEY, tenant)
            self._client.create_payload_index(
                physical, DOCUMENT_KEY, models.PayloadSchemaType.KEYWORD
            )
            alias = models.CreateAlias(collection_name=physical, alias_name=self._alias)
            self._client.update_collection_aliases(
                change_aliases_operations=[models.CreateAliasOperation(create_alias=alias)]
            )
            self._ready, self._record = True, model

    def _physical_model(self) -> VectorModel | None:
        if self._record is None and self._exists():
            metadata = self._client.get_collection(self._alias).config.metadata or {}
            self._record = VectorModel.from_dict(metadata.get(MODEL_KEY))
        return self._record

    def _where(self, collection: str, match: dict[str, Any] | None = None) -> Any:
        from qdrant_client import models

        conditions = {COLLECTION_KEY: collection} | (match or {})
        return models.Filter(
            must=[
                models.FieldCondition(key=k, match=models.MatchValue(value=v))
                for k, v in sorted(conditions.items())
            ]
        )

    def _write_options(self) -> dict[str, Any]:
        from qdrant_client import models

        return {"wait": True, "ordering": models.WriteOrdering(self._layout.write_ordering)}

    # --- the VectorStore protocol ---
    def model(self, collection: str) -> VectorModel | None:
        """The physical collection's model, once this collection holds points (counted once;
        every search checks it)."""
        if collection not in self._live and self.count(collection):
            self._live.add(collection)
        return self._physical_model() if collection in self._live else None

    def has_sparse(self, collection: str) -> bool:
        return self.model(collection) is not None  # the physical one is made with them

    def upsert(self, collection: str, model: VectorModel, points: Sequence[VectorPoint]) -> None:
        from qdrant_client import models

        if not points:
            return
        check_model(self._physical_model(), model.name, model.dim)
        self._ensure(model)
        recorded = self._physical_model()
        if recorded is not None and not set(model.variants) <= set(recorded.variants):
            merged = recorded.merged(model)
            self._client.update_collection(self._alias, metadata={MODEL_KEY: merged.as_dict()})
            self._record = merged
        batch = [
            models.PointStruct(
                id=_physical_id(collection, p.id),
                vector=_vectors(p),
                payload=p.payload | {COLLECTION_KEY: collection, ID_KEY: p.id},
            )
            for p in points
        ]
        self._client.upsert(self._alias, batch, **self._write_options())
        self._live.add(collection)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        from qdrant_client import models

        if ids and self._exists():
            physical = [_physical_id(collection, i) for i in ids]
            where = models.Filter(
                must=[self._where(collection), models.HasIdCondition(has_id=physical)]
            )
            selector = models.FilterSelector(filter=where)
            self._client.delete(self._alias, selector, **self._write_options())

    def delete_document(self, collection: str, document_id: str) -> None:
        from qdrant_client import models

        if self._exists():
            where = self._where(collection, {DOCUMENT_KEY: document_id})
            self._client.delete(
                self._alias, models.FilterSelector(filter=where), **self._write_options()
            )

    def document_ids(self, collection: str, document_id: str) -> set[str]:
        ids: set[str] = set()
        if not self._exists():
            return ids
        offset = None
        while True:
            records, offset = self._client.scroll(
                self._alias,
                scroll_filter=self._where(collection, {DOCUMENT_KEY: document_id}),
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=[ID_KEY],
                with_vectors=False,
            )
            ids.update(str((r.payload or {})[ID_KEY]) for r in records)
            if offset is None:
                return ids

    def count(self, collection: str) -> int:
        if not self._exists():
            return 0
        where = self._where(collection)
        return int(self._client.count(self._alias, count_filter=where, exact=True).count)

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

        if not self._exists():
            return []
        rescore = models.QuantizationSearchParams(rescore=True, oversampling=2.0)
        # As the edge adapter: twice the candidates by int8, ranked by the full vectors.
        params = models.SearchParams(
            hnsw_ef=self._hnsw_ef, quantization=rescore if self._quantization == "int8" else None
        )
        where = self._where(collection, match)
        indices, values = sparse.query(text)
        words = models.SparseVector(indices=indices, values=values)
        if mode is SearchMode.DENSE:
            response = self._client.query_points(
                self._alias,
                query=vector,
                limit=limit,
                query_filter=where,
                with_payload=True,
                search_params=params,
            )
            return [_hit(p, float(p.score)) for p in response.points]
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
            self._alias,
            limit=limit,
            query_filter=where,
            with_payload=True,
            with_vectors=[""],
            **extra,
        )
        points = response.points
        cosines = similarities(vector, [dense_part(p.vector) for p in points])
        return [_hit(p, c) for p, c in zip(points, cosines, strict=True)]

    def reindex(self, collection: str) -> bool:
        return False  # the physical collection has sparse vectors from the start

    def indexing(self, collection: str) -> bool:
        return False  # the server indexes by itself, searches answering

    def drop(self, collection: str) -> bool:
        from qdrant_client import models

        existed = self.count(collection) > 0
        if existed:
            selector = models.FilterSelector(filter=self._where(collection))
            self._client.delete(self._alias, selector, **self._write_options())
        self._live.discard(collection)
        return existed

    def close(self) -> None:
        self._client.close()


def _physical_id(collection: str, point_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{collection}\x1f{point_id}"))


def _hit(point: Any, similarity: float) -> Hit:
    payload = dict(point.payload or {})
    payload.pop(COLLECTION_KEY, None)
    return Hit(str(payload.pop(ID_KEY)), float(point.score), payload, similarity)


def _vectors(point: VectorPoint) -> Any:
    from qdrant_client import models

    indices, values = sparse.document(str(point.payload.get("text", "")))
    return {"": point.vector, sparse.NAME: models.SparseVector(indices=indices, values=values)}
