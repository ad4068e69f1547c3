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

A collection's points live in one model's physical collection: a re-index into another
model (pipeline/rebuild.py) writes a new collection into that model's one, and the live
record in Redis swaps which collection is read."""

from __future__ import annotations

import re
import threading
import time
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
    """A Qdrant server (or cluster) through qdrant-client. `model` is the served embedding
    model: its physical collection is looked in first."""

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
        self._served = alias_of(model)
        self._layout = layout or Layout()
        self._fusion = (
            models.RrfQuery(rrf=models.Rrf(k=FUSION_K))
            if fusion == "rrf"
            else models.FusionQuery(fusion=models.Fusion.DBSF)
        )
        self._quantization = quantization
        self._hnsw_ef = hnsw_ef
        self._records: dict[str, VectorModel | None] = {}  # alias -> its model, once read
        self._aliases: set[str] = set()  # physical collections known to exist, by alias
        self._homes: dict[str, str] = {}  # collection -> the alias holding its points
        self._listed = 0.0  # when the aliases were last read
        self._lock = threading.Lock()

    # --- the physical collections, one per model ---
    def _known(self, refresh: bool = False) -> list[str]:
        """The aliases of every model's physical collection, the served model's first (another
        process may have made one since: read again when asked, at most once a second)."""
        if not self._aliases or (refresh and time.monotonic() - self._listed > 1.0):
            names = {a.alias_name for a in self._client.get_aliases().aliases}
            self._aliases |= {n for n in names if n.startswith("tritonrag-")}
            self._listed = time.monotonic()
        return sorted(self._aliases, key=lambda a: a != self._served)

    def _holds(self, alias: str, collection: str) -> bool:
        where = self._where(collection)
        return bool(self._client.count(alias, count_filter=where, exact=True).count)

    def _home(self, collection: str, confirm: bool = False) -> str | None:
        """The alias whose physical collection holds the collection's points (None: it has
        none). A collection's model changes only when it is dropped and made again, so the
        answer is kept; `confirm` checks a kept one again."""
        home = self._homes.get(collection)
        if home is not None and (not confirm or self._holds(home, collection)):
            return home
        self._homes.pop(collection, None)
        for alias in self._known(refresh=True):
            if self._holds(alias, collection):
                self._homes[collection] = alias
                return alias
        return None

    def _ensure(self, model: VectorModel) -> str:
        from qdrant_client import models

        alias = alias_of(model.name)
        with self._lock:
            if alias in self._known():
                return alias
            self._listed = 0.0  # made by another process meanwhile? ask the server now
            if alias in self._known(refresh=True):
                return alias
            physical = f"{alias}-1"
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
            create = models.CreateAlias(collection_name=physical, alias_name=alias)
            self._client.update_collection_aliases(
                change_aliases_operations=[models.CreateAliasOperation(create_alias=create)]
            )
            self._aliases.add(alias)
            self._records[alias] = model
            return alias

    def _record_of(self, alias: str) -> VectorModel | None:
        if alias not in self._records:
            metadata = self._client.get_collection(alias).config.metadata or {}
            self._records[alias] = VectorModel.from_dict(metadata.get(MODEL_KEY))
        return self._records[alias]

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
        """The model of the physical collection that holds this collection's points."""
        home = self._home(collection)
        return self._record_of(home) if home else None

    def has_sparse(self, collection: str) -> bool:
        return self._home(collection) is not None  # every physical one is made with them

    def upsert(self, collection: str, model: VectorModel, points: Sequence[VectorPoint]) -> None:
        from qdrant_client import models

        if not points:
            return
        home = self._home(collection)
        if home is not None and home != alias_of(model.name):
            home = self._home(collection, confirm=True)  # dropped and made again elsewhere?
        if home is not None:
            check_model(self._record_of(home), model.name, model.dim)
        alias = self._ensure(model)
        recorded = self._record_of(alias)
        check_model(recorded, model.name, model.dim)
        if recorded is not None and not set(model.variants) <= set(recorded.variants):
            merged = recorded.merged(model)
            self._client.update_collection(alias, metadata={MODEL_KEY: merged.as_dict()})
            self._records[alias] = merged
        batch = [
            models.PointStruct(
                id=_physical_id(collection, p.id),
                vector=_vectors(p),
                payload=p.payload | {COLLECTION_KEY: collection, ID_KEY: p.id},
            )
            for p in points
        ]
        self._client.upsert(alias, batch, **self._write_options())
        self._homes[collection] = alias

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        from qdrant_client import models

        home = self._home(collection) if ids else None
        if home is not None:
            physical = [_physical_id(collection, i) for i in ids]
            where = models.Filter(
                must=[self._where(collection), models.HasIdCondition(has_id=physical)]
            )
            selector = models.FilterSelector(filter=where)
            self._client.delete(home, selector, **self._write_options())

    def delete_document(self, collection: str, document_id: str) -> None:
        from qdrant_client import models

        if (home := self._home(collection)) is not None:
            where = self._where(collection, {DOCUMENT_KEY: document_id})
            self._client.delete(home, models.FilterSelector(filter=where), **self._write_options())

    def document_ids(self, collection: str, document_id: str) -> set[str]:
        records = self._scroll(collection, document_id, [ID_KEY])
        return {str((r.payload or {})[ID_KEY]) for r in records}

    def chunks(self, collection: str, document_id: str) -> list[dict[str, Any]]:
        payloads = []
        for record in self._scroll(collection, document_id, True):
            payload = dict(record.payload or {})
            payload.pop(COLLECTION_KEY, None)
            payload.pop(ID_KEY, None)
            payloads.append(payload)
        return sorted(payloads, key=lambda p: int(p.get("chunk_index", 0)))

    def _scroll(self, collection: str, document_id: str, payload: Any) -> list[Any]:
        found: list[Any] = []
        offset = None
        home = self._home(collection)
        while home is not None:
            records, offset = self._client.scroll(
                home,
                scroll_filter=self._where(collection, {DOCUMENT_KEY: document_id}),
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=payload,
                with_vectors=False,
            )
            found += records
            if offset is None:
                break
        return found

    def count(self, collection: str) -> int:
        if (home := self._home(collection)) is None:
            return 0
        where = self._where(collection)
        return int(self._client.count(home, count_filter=where, exact=True).count)

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

        if (home := self._home(collection)) is None:
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
                home,
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
            home,
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

        existed = False
        self._homes.pop(collection, None)
        for alias in self._known(refresh=True):
            if self._holds(alias, collection):
                selector = models.FilterSelector(filter=self._where(collection))
                self._client.delete(alias, selector, **self._write_options())
                existed = True
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
