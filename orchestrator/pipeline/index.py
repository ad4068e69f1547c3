"""One document through parse -> chunk -> embed -> upsert, converging on the stored state.

Point ids are uuid5(embedding model, collection, document, chunk index, content hash), so a
re-run or a redelivery writes the same points; only chunks whose id is new are embedded, and
ids the document no longer produces are deleted at the end. Each write carries the model
(clients/vectors.py VectorModel): the store refuses vectors of another model than the one the
collection was built with.

The chunks go where the collection lives now (jobs.Live), by the model it lives with; if a
re-index swapped it meanwhile (pipeline/rebuild.py), they are written again where it moved.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from orchestrator.clients.vectors import Matrix, VectorModel, VectorPoint, VectorStore
from orchestrator.errors import TritonRagError
from orchestrator.jobs import JobState, JobStore, Live, scoped
from orchestrator.metrics import CHUNKS, INGEST_STAGE_SECONDS
from orchestrator.pipeline.chunk import Chunk, Chunker
from orchestrator.pipeline.embed import Embedder, embed_batches, retrying
from orchestrator.pipeline.parse import DocType, ParseError, sniff
from orchestrator.tracing import tracer

log = logging.getLogger("tritonrag.index")


class Superseded(Exception):
    """The document was replaced or deleted while this job ran."""


@dataclass(frozen=True)
class IndexContext:
    store: VectorStore
    jobs: JobStore
    embed: Embedder
    chunker: Chunker
    batch: int
    attempts: int
    parse: Callable[[bytes, DocType], str]  # pipeline.isolate.ParseLimits in workers
    outage_s: float = 0  # how long to wait for Triton or the store to come back
    model: str = ""  # the embedding model's name (settings.embed_model), recorded and checked


def ingest(ctx: IndexContext, job_id: str) -> JobState:
    """Run job `job_id` to a terminal state; returns it. Never raises for bad documents."""
    job = ctx.jobs.job(job_id)
    if job is None or JobState(job["state"]).terminal:
        ctx.jobs.drop_blob(job_id)  # left by a worker killed right after finishing
        return JobState(job["state"]) if job else JobState.FAILED
    tenant, collection, document_id = job["tenant"], job["collection"], job["document_id"]
    try:
        metadata = _check_current(ctx, job).get("metadata", {})
        ctx.jobs.update_job(job_id, state=JobState.PARSING)
        data = ctx.jobs.blob(job_id)
        if data is None:
            raise ParseError("the uploaded bytes expired before the job ran")
        with _stage("parse"):
            text = ctx.parse(data, sniff(data, job["filename"]))
        with _stage("chunk"):
            chunks = ctx.chunker.split(text)
        live = ctx.jobs.where(scoped(tenant, collection), ctx.model)
        _index_chunks(ctx, job, chunks, metadata, live)
    except TritonRagError as exc:  # bad document, or Triton still failing after retries
        return _fail(ctx, job, exc.message)
    except Superseded as exc:
        if ctx.jobs.document(tenant, collection, document_id) is None:
            # A DELETE ran while we wrote: make sure none of our points outlive it.
            for physical in ctx.jobs.physicals(scoped(tenant, collection), ctx.model):
                _with_retry(ctx, ctx.store.delete_document, physical, document_id)
        return _fail(ctx, job, str(exc))
    ctx.jobs.update_document(
        tenant,
        collection,
        document_id,
        job_id,
        state=JobState.INDEXED,
        chunks=len(chunks),
        physical=live.physical,
    )
    _follow(ctx, job, chunks, metadata, live)
    # Only now: a worker killed before this runs the job again, where the collection lives.
    ctx.jobs.update_job(job_id, state=JobState.INDEXED)
    # Last: a worker killed before this point leaves a job that runs again, and needs them.
    ctx.jobs.drop_blob(job_id)
    return JobState.INDEXED


def _follow(
    ctx: IndexContext, job: dict[str, Any], chunks: list[Chunk], metadata: Any, live: Live
) -> None:
    """Write the document again where its collection moved, if a re-index swapped it while
    this job wrote into the old one (read after the document is marked indexed: a re-index
    copies what was marked before its swap)."""
    name = scoped(job["tenant"], job["collection"])
    while (now := ctx.jobs.where(name, ctx.model)) != live:
        log.info("%s moved to %s while job %s ran: writing it there", name, now, job["id"])
        try:
            _index_chunks(ctx, job, chunks, metadata, now)
            tenant, collection, document_id = job["tenant"], job["collection"], job["document_id"]
            ctx.jobs.update_document(
                tenant, collection, document_id, job["id"], physical=now.physical
            )
            # Written past the re-index's copy: nothing else removes it from the old place
            # (which its drop may already have removed, and this write made again).
            _with_retry(ctx, ctx.store.delete_document, live.physical, document_id)
        except (TritonRagError, Superseded) as exc:  # the document stays indexed where it was
            log.warning("job %s not rewritten into %s: %s", job["id"], now.physical, exc)
            return
        live = now


def _index_chunks(
    ctx: IndexContext,
    job: dict[str, Any],
    chunks: list[Chunk],
    metadata: dict[str, Any],
    live: Live,
) -> None:
    job_id, document_id = job["id"], job["document_id"]
    name, physical = scoped(job["tenant"], job["collection"]), live.physical
    ids = [c.point_id(name, document_id, live.model) for c in chunks]
    existing = _with_retry(ctx, ctx.store.document_ids, physical, document_id)
    todo = [(c, i) for c, i in zip(chunks, ids, strict=True) if i not in existing]
    CHUNKS.labels("reused").inc(len(chunks) - len(todo))
    ctx.jobs.update_job(
        job_id,
        state=JobState.EMBEDDING,
        chunks_total=len(chunks),
        chunks_reused=len(chunks) - len(todo),
    )

    def on_batch(start: int, rows: Matrix) -> None:
        _check_current(ctx, job)
        part = todo[start : start + len(rows)]
        points = [
            VectorPoint(pid, row.tolist(), _payload(job, chunk, metadata))
            for (chunk, pid), row in zip(part, rows, strict=True)
        ]
        ctx.jobs.update_job(job_id, state=JobState.INDEXING)
        model = VectorModel(live.model, rows.shape[1], variants=(ctx.embed.variant,))
        with _stage("upsert"):
            _with_retry(ctx, ctx.store.upsert, physical, model, points)
        CHUNKS.labels("embedded").inc(len(points))
        ctx.jobs.add_count(job_id, "chunks_embedded", len(points))
        ctx.jobs.update_job(job_id, state=JobState.EMBEDDING)

    def embed(texts: list[str]) -> Matrix:
        with _stage("embed"):
            return ctx.embed(texts, live.model)

    embed_batches(embed, [c.text for c, _ in todo], ctx.batch, ctx.attempts, on_batch, ctx.outage_s)
    ctx.jobs.update_job(job_id, state=JobState.INDEXING)
    _check_current(ctx, job)
    stale = _with_retry(ctx, ctx.store.document_ids, physical, document_id) - set(ids)
    _with_retry(ctx, ctx.store.delete, physical, sorted(stale))
    ctx.jobs.update_job(job_id, chunks_removed=len(stale))


@contextmanager
def _stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        with tracer.start_as_current_span(f"ingest {name}"):
            yield
    finally:
        INGEST_STAGE_SECONDS.labels(name).observe(time.perf_counter() - start)


def _payload(job: dict[str, Any], chunk: Chunk, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "document_id": job["document_id"],
        "chunk_index": chunk.index,
        "text": chunk.text,
        "filename": job["filename"],
        "metadata": metadata,
    }


def _check_current(ctx: IndexContext, job: dict[str, Any]) -> dict[str, Any]:
    """The document record, if it still belongs to this job."""
    record = ctx.jobs.document(job["tenant"], job["collection"], job["document_id"])
    if record is None:
        raise Superseded("the document was deleted while it was being indexed")
    if record["job_id"] != job["id"]:
        raise Superseded(f"replaced by a newer upload (job {record['job_id']})")
    return record


def _with_retry(ctx: IndexContext, fn: Any, *args: Any) -> Any:
    return retrying(ctx.attempts, ctx.outage_s)(fn, *args)


def fail(ctx: IndexContext, job_id: str, reason: str) -> JobState:
    """End job `job_id` (and its document's record) `failed` with `reason`."""
    job = ctx.jobs.job(job_id)
    return _fail(ctx, job, reason) if job is not None else JobState.FAILED


def _fail(ctx: IndexContext, job: dict[str, Any], reason: str) -> JobState:
    log.warning("job %s failed: %s", job["id"], reason)
    ctx.jobs.update_job(job["id"], state=JobState.FAILED, reason=reason)
    ctx.jobs.update_document(
        job["tenant"],
        job["collection"],
        job["document_id"],
        job["id"],
        state=JobState.FAILED,
        reason=reason,
    )
    ctx.jobs.drop_blob(job["id"])
    return JobState.FAILED
