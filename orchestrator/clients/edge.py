"""Embedded vector store: one qdrant-edge shard per collection, owned by this process.

qdrant-edge has no background optimizer, and `EdgeShard.optimize()` holds the GIL for the
whole HNSW build (~1 s per 1,000 points of 384 dims on 2 cores, measured), which would
freeze every thread of the worker. So when a shard collects `index_threshold` unindexed
points, a copy of it is optimized in a child process while the live shard keeps serving;
writes made meanwhile are logged and replayed on the optimized copy, which then replaces
the live shard under the collection's lock. Run as `python -m orchestrator.clients.edge DIR`
it is that child: load, optimize, close.

A collection made before sparse vectors existed gets them the same way (`reindex`): the
child copies every point into a new shard with BM25 vectors computed from its text, while
the live shard keeps answering searches (dense) until the swap.
"""

from __future__ import annotations

import ctypes
import json
import logging
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import qdrant_edge as qe

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

log = logging.getLogger("tritonrag.edge")
Op = Callable[[Any, bool], None]  # a write, applied to a shard with or without sparse vectors
BUILDING = ".sparse"  # beside a re-index child's copy: the shard it writes
MODELS = ".models"  # under the root: each collection's VectorModel, outside the shard (a
# rebuild replaces the shard's folder)
FUSION_K = 60  # reciprocal rank fusion's k: the usual value; ranks 1 and 10 weigh 1.15 : 1


@dataclass
class _Rebuild:
    process: subprocess.Popen[bytes]
    path: Path
    sparse: bool  # the rebuilt shard has sparse vectors
    replay: list[Op] = field(default_factory=list)


@dataclass
class _Collection:
    shard: Any
    sparse: bool
    lock: threading.RLock = field(default_factory=threading.RLock)
    rebuild: _Rebuild | None = None
    next_check: int = 0  # point count at which a build is considered again


class EdgeVectors:
    """The VectorStore protocol over qdrant-edge shards under `root`."""

    def __init__(
        self,
        root: Path,
        index_threshold: int = 20_000,
        quantization: str = "none",
        hnsw_ef: int | None = None,
        fusion: str = "rrf",
    ) -> None:
        self._root = root
        self._fusion = qe.Fusion.Rrf(k=FUSION_K) if fusion == "rrf" else qe.Fusion.Dbsf()
        self._quantization = quantization
        self.hnsw_ef = hnsw_ef
        self._root.mkdir(parents=True, exist_ok=True)
        self._collections: dict[str, _Collection] = {}
        self._models: dict[str, VectorModel | None] = {}
        self._recording = threading.Lock()
        self._lock = threading.Lock()
        self._threshold = index_threshold

    # --- opening and background indexing ---
    def _get(self, collection: str, dim: int | None) -> _Collection | None:
        with self._lock:
            if collection in self._collections:
                return self._collections[collection]
            path = self._root / collection
            if (path / "edge_config.json").exists():
                shard = qe.EdgeShard.load(str(path))
            elif dim is None:
                return None
            else:
                shard = _create(path, dim, self._quantization, self._threshold)
            entry = _Collection(shard, _has_sparse(path))
            self._collections[collection] = entry
        self._maybe_index(collection, entry)
        return entry

    def unindexed(self, collection: str) -> int:
        entry = self._get(collection, None)
        if entry is None:
            return 0
        with entry.lock:
            info = entry.shard.info()
        return int(info.points_count) - int(info.indexed_vectors_count)

    def indexing(self, collection: str) -> bool:
        entry = self._collections.get(collection)
        return entry is not None and entry.rebuild is not None

    def _maybe_index(self, collection: str, entry: _Collection) -> None:
        with entry.lock:
            if entry.rebuild is not None:
                return
            info = entry.shard.info()
            points = int(info.points_count)
            if points < entry.next_check or points - int(info.indexed_vectors_count) < (
                self._threshold
            ):
                return
            entry.next_check = points + self._threshold  # one attempt per threshold of growth
            self._rebuild(collection, entry, add_sparse=False)

    def reindex(self, collection: str) -> bool:
        """Give an existing collection sparse vectors in the background (searches keep
        answering, dense, until the swap). False: nothing to do now (no such collection,
        already sparse, or a build is running: ask again when it ends)."""
        entry = self._get(collection, None)
        if entry is None:
            return False
        with entry.lock:
            if entry.sparse or entry.rebuild is not None:
                return False
            self._rebuild(collection, entry, add_sparse=True)
        return True

    def _rebuild(self, collection: str, entry: _Collection, add_sparse: bool) -> None:
        """Copy the shard and rebuild the copy in a child process; `_swap` puts it live.
        The caller holds `entry.lock`."""
        entry.shard.flush()
        target = self._root / ".next" / collection  # names never start with a dot
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self._root / collection, target)
        command = [sys.executable, "-m", "orchestrator.clients.edge", str(target)]
        if add_sparse:
            command += ["--add-sparse", self._quantization, str(self._threshold)]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        entry.rebuild = _Rebuild(process, target, entry.sparse or add_sparse)
        log.info(
            "%s %s in pid %d", "reindexing" if add_sparse else "indexing", collection, process.pid
        )
        threading.Thread(target=self._swap, args=(collection, entry), daemon=True).start()

    def _swap(self, collection: str, entry: _Collection) -> None:
        rebuild = entry.rebuild
        assert rebuild is not None
        code = rebuild.process.wait()  # releases the GIL while the child works
        with entry.lock:
            if entry.rebuild is not rebuild:  # dropped or closed meanwhile
                return
            try:
                if code != 0:
                    log.warning("indexing %s failed (exit %d); will retry later", collection, code)
                    _remove(rebuild.path)
                    return
                self._put_live(collection, entry, rebuild)
            finally:  # only now: `indexing` false means the new shard answers
                entry.rebuild = None
        _release_freed_memory()

    def _put_live(self, collection: str, entry: _Collection, rebuild: _Rebuild) -> None:
        live, old = self._root / collection, self._root / ".old" / collection
        old.parent.mkdir(exist_ok=True)
        entry.shard.close()
        live.rename(old)
        rebuild.path.rename(live)
        entry.shard, entry.sparse = qe.EdgeShard.load(str(live)), rebuild.sparse
        for op in rebuild.replay:
            op(entry.shard, entry.sparse)
        shutil.rmtree(old, ignore_errors=True)
        log.info("indexed %s; replayed %d writes", collection, len(rebuild.replay))

    def _write(self, entry: _Collection, op: Op) -> None:
        with entry.lock:
            op(entry.shard, entry.sparse)
            if entry.rebuild is not None:
                entry.rebuild.replay.append(op)

    # --- the VectorStore protocol ---
    def upsert(self, collection: str, model: VectorModel, points: Sequence[VectorPoint]) -> None:
        if not points:
            return
        check_model(self.model(collection), model.name, model.dim)
        entry = self._get(collection, model.dim)
        assert entry is not None  # created when dim is given
        self._record(collection, model)
        words = [sparse.document(str(p.payload.get("text", ""))) for p in points]

        def write(shard: Any, with_sparse: bool) -> None:
            batch = [
                qe.Point(p.id, _vectors(p.vector, w if with_sparse else None), p.payload)
                for p, w in zip(points, words, strict=True)
            ]
            shard.update(qe.UpdateOperation.upsert_points(batch))

        # The WAL holds every update (a killed process loses nothing); flushing segments on
        # every batch cost ~13 ms per 32 points.
        self._write(entry, write)
        self._maybe_index(collection, entry)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        entry = self._get(collection, None)
        if entry is not None and ids:
            operation = qe.UpdateOperation.delete_points(list(ids))
            self._write(entry, lambda shard, _: shard.update(operation))

    def delete_document(self, collection: str, document_id: str) -> None:
        entry = self._get(collection, None)
        if entry is not None:
            operation = qe.UpdateOperation.delete_points_by_filter(
                _match(DOCUMENT_KEY, document_id)
            )
            self._write(entry, lambda shard, _: shard.update(operation))

    def document_ids(self, collection: str, document_id: str) -> set[str]:
        return {str(r.id) for r in self._scroll(collection, document_id, payload=False)}

    def chunks(self, collection: str, document_id: str) -> list[dict[str, Any]]:
        payloads = [dict(r.payload or {}) for r in self._scroll(collection, document_id, True)]
        return sorted(payloads, key=lambda p: int(p.get("chunk_index", 0)))

    def _scroll(self, collection: str, document_id: str, payload: bool) -> list[Any]:
        entry = self._get(collection, None)
        found: list[Any] = []
        offset = None
        while entry is not None:
            request = qe.ScrollRequest(
                offset=offset,
                limit=SCROLL_PAGE,
                filter=_match(DOCUMENT_KEY, document_id),
                with_payload=payload,
                with_vector=False,
            )
            with entry.lock:
                records, offset = entry.shard.scroll(request)
            found += records
            if offset is None:
                break
        return found

    def count(self, collection: str) -> int:
        entry = self._get(collection, None)
        if entry is None:
            return 0
        with entry.lock:
            return int(entry.shard.count(qe.CountRequest(exact=True)))

    def model(self, collection: str) -> VectorModel | None:
        with self._lock:
            if collection not in self._models:
                path = self._root / MODELS / f"{collection}.json"
                record = json.loads(path.read_text()) if path.exists() else None
                self._models[collection] = VectorModel.from_dict(record)
            return self._models[collection]

    def _record(self, collection: str, model: VectorModel) -> None:
        """Record `model` (or add its variants) unless the record already says it. Ingest
        threads write a new collection's first batches at once: one at a time here."""
        with self._recording:
            recorded = self._models.get(collection)
            if recorded is not None and set(model.variants) <= set(recorded.variants):
                return
            merged = recorded.merged(model) if recorded else model
            folder = self._root / MODELS
            folder.mkdir(exist_ok=True)
            staging = folder / f".{collection}.json"
            staging.write_text(json.dumps(merged.as_dict()) + "\n")
            staging.replace(folder / f"{collection}.json")
            self._models[collection] = merged

    def has_sparse(self, collection: str) -> bool:
        entry = self._get(collection, None)
        return entry is not None and entry.sparse

    def search(
        self,
        collection: str,
        vector: list[float],
        limit: int,
        match: dict[str, Any],
        text: str = "",
        mode: SearchMode = SearchMode.DENSE,
    ) -> list[Hit]:
        entry = self._get(collection, None)
        if entry is None:
            return []
        conditions: list[Any] = [
            qe.FieldCondition(key=k, match=qe.MatchValue(v)) for k, v in sorted(match.items())
        ]
        where = qe.Filter(must=conditions) if conditions else None
        params = _search_params(self._quantization, self.hnsw_ef)
        dense = qe.Query.Nearest(vector)
        words = qe.SparseVector(*sparse.query(text))
        query: Any
        with entry.lock:
            if mode is SearchMode.DENSE or not entry.sparse:
                query, prefetches = dense, None
            elif mode is SearchMode.SPARSE:
                query, prefetches = qe.Query.Nearest(words, using=sparse.NAME), None
            else:  # each half brings its best candidates; their ranks are fused
                depth = max(4 * limit, 20)
                prefetches = [
                    qe.Prefetch(limit=depth, query=dense, filter=where, params=params),
                    qe.Prefetch(
                        limit=depth, query=qe.Query.Nearest(words, using=sparse.NAME), filter=where
                    ),
                ]
                query = self._fusion
            request = qe.QueryRequest(
                limit=limit,
                query=query,
                prefetches=prefetches,
                filter=where,
                with_payload=True,
                with_vector=query is not dense,  # to report the cosine beside the rank
                params=params if prefetches is None else None,
            )
            points = entry.shard.query(request)
        if query is dense:
            return [
                Hit(str(p.id), float(p.score), dict(p.payload or {}), float(p.score))
                for p in points
            ]
        cosines = similarities(vector, [dense_part(p.vector) for p in points])
        return [
            Hit(str(p.id), float(p.score), dict(p.payload or {}), c)
            for p, c in zip(points, cosines, strict=True)
        ]

    def drop(self, collection: str) -> bool:
        with self._lock:
            entry = self._collections.pop(collection, None)
            if entry is not None:
                with entry.lock:
                    _stop(entry)
                    entry.shard.close()
            path = self._root / collection
            existed = path.exists()
            self._models.pop(collection, None)
            (self._root / MODELS / f"{collection}.json").unlink(missing_ok=True)
            for folder in (
                path,
                self._root / ".next" / collection,
                self._root / ".old" / collection,
            ):
                shutil.rmtree(folder, ignore_errors=True)
            return existed or entry is not None

    def close(self) -> None:
        with self._lock:
            for entry in self._collections.values():
                with entry.lock:
                    _stop(entry)
                    entry.shard.flush()
                    entry.shard.close()
            self._collections.clear()


def _create(path: Path, dim: int, quantization: str, threshold: int) -> Any:
    """A new shard: the dense vector, BM25 sparse vectors and the document-id index."""
    # The engine indexes a segment once it passes this many KB of vectors: the same point
    # as our threshold, so a build always produces an index.
    kb = max(1, threshold * dim * 4 // 1024)
    config = qe.EdgeConfig(
        vectors=_vector_params(dim, quantization),
        sparse_vectors={sparse.NAME: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=kb),
        wal_enabled=True,
    )
    shard = qe.EdgeShard.create(str(path), config)
    shard.update(qe.UpdateOperation.create_field_index(DOCUMENT_KEY, qe.PayloadSchemaType.Keyword))
    return shard


def _has_sparse(path: Path) -> bool:
    config = json.loads((path / "edge_config.json").read_text())
    return sparse.NAME in (config.get("sparse_vectors") or {})


def _vectors(dense: list[float], words: tuple[list[int], list[float]] | None) -> Any:
    if words is None:
        return dense
    return {"": dense, sparse.NAME: qe.SparseVector(*words)}


def _search_params(quantization: str, hnsw_ef: int | None) -> Any:
    # int8 scores pick twice the candidates; their full vectors, read from disk, rank them.
    rescore = qe.QuantizationSearchParams(rescore=True, oversampling=2.0)
    return qe.SearchParams(
        hnsw_ef=hnsw_ef, quantization=rescore if quantization == "int8" else None
    )


def _vector_params(dim: int, quantization: str) -> Any:
    if quantization != "int8":
        return qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)
    # The int8 copy pinned in RAM is searched; the full vectors, on disk, rescore the best.
    return qe.EdgeVectorParams(
        size=dim,
        distance=qe.Distance.Cosine,
        memory=qe.Memory.Cold,
        quantization_config=qe.ScalarQuantizationConfig(
            type=qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned
        ),
    )


def _release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc only).

    The writes before a build and the shard replaced by its indexed copy leave hundreds of
    MB free inside glibc's heaps, which it does not return by itself: at 1M points with int8
    (perf.scale) the worker held 1,104 MB, 816 after `malloc_trim`."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)


def _stop(entry: _Collection) -> None:
    """Abandon a background build (its copy is deleted; the live shard is untouched)."""
    if entry.rebuild is not None:
        entry.rebuild.process.kill()
        entry.rebuild.process.wait()
        _remove(entry.rebuild.path)
        entry.rebuild = None


def _remove(copy: Path) -> None:
    """A build's copy, and the shard a re-index child was writing beside it."""
    shutil.rmtree(copy, ignore_errors=True)
    shutil.rmtree(f"{copy}{BUILDING}", ignore_errors=True)


def _match(key: str, value: str) -> Any:
    return qe.Filter(must=[qe.FieldCondition(key=key, match=qe.MatchValue(value))])


def _optimize(path: str) -> None:
    shard = qe.EdgeShard.load(path)
    shard.optimize()
    shard.flush()
    shard.close()


def _add_sparse(path: str, quantization: str, threshold: int) -> None:
    """Rewrite the shard at `path` with BM25 vectors from each point's text, then index it."""
    old = qe.EdgeShard.load(path)
    dim = int(json.loads(Path(path, "edge_config.json").read_text())["vectors"][""]["size"])
    building = Path(path + BUILDING)
    shutil.rmtree(building, ignore_errors=True)
    new = _create(building, dim, quantization, threshold)
    offset = None
    while True:
        request = qe.ScrollRequest(
            offset=offset, limit=SCROLL_PAGE, with_payload=True, with_vector=True
        )
        records, offset = old.scroll(request)
        batch = []
        for r in records:
            payload = dict(r.payload or {})
            words = sparse.document(str(payload.get("text", "")))
            batch.append(qe.Point(r.id, _vectors(dense_part(r.vector), words), payload))
        if batch:
            new.update(qe.UpdateOperation.upsert_points(batch))
        if offset is None:
            break
    old.close()
    new.optimize()
    new.flush()
    new.close()
    shutil.rmtree(path)
    building.rename(path)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "--add-sparse":
        _add_sparse(sys.argv[1], sys.argv[3], int(sys.argv[4]))
    else:
        _optimize(sys.argv[1])
