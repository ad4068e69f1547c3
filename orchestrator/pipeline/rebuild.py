"""Re-index a collection into a new physical collection, by the same or another embedding
model, while searches and uploads go on; then swap which one is live.

A collection's reads and writes go to the physical collection its live record names
(jobs.Live: a Redis key; absent, the collection's own name and the served model). A re-index:

1. is claimed in the collection's rebuild record (one at a time), which names the new
   physical collection `<name>@<n>` and the model;
2. copies every document's stored chunks (their text) from the live physical collection,
   embedded by the new model, in passes: a pass copies each document whose version (the job
   that last touched it, and its state) differs from the one it copied, and deletes those that
   are gone, until a pass finds nothing to do;
3. swaps the live record: one Redis SET, every reader after it uses the new collection;
4. runs the same passes again, still reading the old collection: a document indexed into the
   old one around the swap is copied. (An ingest reads the live record again after it marks
   its document indexed, and writes it again if the collection moved: a document marked
   before the swap is seen by these passes, one marked after it rewrites itself.) A document
   being deleted is marked first, so a pass drops it before its chunks are gone;
5. after `grace_s` (searches in flight, and APIs that read the old record, finish), drops the
   old physical collection: a second run of the task, scheduled for then.

A worker killed mid-way leaves the record `running`: the task is delivered again and starts
over into the same physical collection (ids are derived, so a copy converges); a record not
touched for STALE_S can be claimed anew.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from orchestrator.clients.vectors import Matrix, VectorModel, VectorPoint, VectorStore
from orchestrator.jobs import JobStore, Live, scoped
from orchestrator.pipeline.chunk import Chunk
from orchestrator.pipeline.embed import Embedder, embed_batches, retrying

log = logging.getLogger("tritonrag.rebuild")
T = TypeVar("T")
# A running record untouched this long belongs to no live worker: well past the longest wait
# for Triton or the store (outage_wait_s, 600 s by default).
STALE_S = 3600.0
MAX_PASSES = 20  # passes before a swap, if uploads keep changing documents


@dataclass(frozen=True)
class RebuildContext:
    store: VectorStore
    jobs: JobStore
    embed: Embedder
    batch: int
    attempts: int
    outage_s: float = 0
    grace_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep  # what is left of the grace, if called early


class Abandoned(Exception):
    """The collection was dropped, or another re-index took over, while this one ran."""


def start(jobs: JobStore, tenant: str, collection: str, model: str, served: str) -> str | None:
    """Claim a re-index of the collection into `model`; the new physical collection's name,
    or None if one is running."""
    name = scoped(tenant, collection)
    # The first physical collection is the name itself; then <name>@2, @3, ...
    physical = f"{name}@{jobs.next_generation(name) + 1}"
    source = jobs.where(name, served)
    before = jobs.rebuild(name)
    fields = {
        "state": "running",
        "tenant": tenant,
        "collection": collection,
        "physical": physical,
        "model": model,
        "source": source.physical,
        "source_model": source.model,
        "started_at": time.time(),
        "documents_total": 0,
        "documents_copied": 0,
        # A claim taken over from a dead worker: what it left is dropped first.
        "orphan": before.get("physical", "") if before.get("state") == "running" else "",
        "swapped_at": 0.0,
    }
    stale = time.time() - STALE_S
    return physical if jobs.claim_rebuild(name, fields, stale) else None


def run(ctx: RebuildContext, tenant: str, collection: str, physical: str) -> str:
    """Carry out the claimed re-index into `physical` up to the swap ("swapped": call again
    after `grace_s` to drop the old collection, "done" then), or fail or give way."""
    name = scoped(tenant, collection)
    record = ctx.jobs.rebuild(name)
    state = record.get("state")
    if state not in ("running", "swapped") or record.get("physical") != physical:
        return str(state or "gone")  # a stale delivery
    source = Live(str(record["source"]), str(record["source_model"]))
    target = Live(physical, str(record["model"]))
    copier = _Copier(ctx, tenant, collection, source, target)
    if state == "running":
        try:
            orphan = str(record.get("orphan") or "")
            if orphan and orphan not in (source.physical, physical):
                copier.retry(ctx.store.drop, orphan)
            copier.until_settled()
            if not ctx.jobs.swap_live(name, target.physical, target.model):
                raise Abandoned(name)
        except Abandoned:
            copier.retry(ctx.store.drop, physical)  # never live: nothing reads it
            return "abandoned"
        except Exception as exc:
            log.exception("re-index of %s failed", name)
            copier.retry(ctx.store.drop, physical)
            ctx.jobs.update_rebuild(name, physical, state="failed", reason=_reason(exc))
            return "failed"
        log.info("%s now reads %s (%s)", name, target.physical, target.model)
        ctx.jobs.forget_answers(name)
        try:
            copier.until_settled()
        except Exception:  # live now: never failed; the drop stage copies what is left
            log.exception("re-index of %s: copying after the swap failed", name)
        return "swapped"
    ctx.sleep(max(0.0, float(record["swapped_at"]) + ctx.grace_s - time.time()))
    try:
        copier.until_settled()  # what the passes after the swap missed, if anything
        copier.check()
        copier.retry(ctx.store.drop, source.physical)
    except Abandoned:
        return "abandoned"
    # Again: an answer retrieved from the old collection may have been cached after the swap.
    ctx.jobs.forget_answers(name)
    ctx.jobs.update_rebuild(name, physical, state="done", finished_at=time.time())
    return "done"


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Copier:
    def __init__(
        self, ctx: RebuildContext, tenant: str, collection: str, source: Live, target: Live
    ) -> None:
        self.ctx, self.tenant, self.collection = ctx, tenant, collection
        self.name = scoped(tenant, collection)
        self.source, self.target = source, target
        self.copied: dict[str, str] = {}  # document -> the version copied (or seen in place)

    def retry(self, fn: Callable[..., T], *args: Any) -> T:
        """A store call, retried as ingestion's are (and waiting out an outage)."""
        return retrying(self.ctx.attempts, self.ctx.outage_s)(fn, *args)

    def check(self, **progress: Any) -> None:
        """Still the collection's re-index (and seen alive: `updated_at`), in the same
        transaction as the progress shown, if any."""
        if not self.ctx.jobs.update_rebuild(self.name, self.target.physical, **progress):
            raise Abandoned(self.name)

    def until_settled(self) -> None:
        for _ in range(MAX_PASSES):
            if not self.one_pass():
                return

    def one_pass(self) -> int:
        """Copy what changed since the last pass; how many documents that was."""
        versions = self.ctx.jobs.versions(self.tenant, self.collection)
        swapped = self.ctx.jobs.where(self.name, "").physical == self.target.physical
        gone = [d for d in self.copied if d not in versions]
        changed = sorted(d for d, v in versions.items() if self.copied.get(d) != v.version)
        for document_id in gone:
            self.check()
            self.retry(self.ctx.store.delete_document, self.target.physical, document_id)
            del self.copied[document_id]
        done = 0
        if changed:
            self.check()
        for document_id in changed:  # each document's progress update checks for the next
            version = versions[document_id]
            if swapped and not version.finished:
                continue  # its job writes it where the collection lives now, or follows it
            if version.physical != self.target.physical:  # else its job wrote it there
                self._copy(document_id)
            self.copied[document_id] = version.version
            done += 1
            self.check(documents_total=len(versions), documents_copied=len(self.copied))
        return len(gone) + done

    def _copy(self, document_id: str) -> None:
        ctx = self.ctx
        payloads = self.retry(ctx.store.chunks, self.source.physical, document_id)
        if not payloads:  # nothing there (yet, or moved on by its job): nothing to replace
            return
        chunks = [Chunk.stored(int(p["chunk_index"]), str(p["text"])) for p in payloads]
        ids = [c.point_id(self.name, document_id, self.target.model) for c in chunks]
        before = self.retry(ctx.store.document_ids, self.target.physical, document_id)
        todo = [i for i, pid in enumerate(ids) if pid not in before]

        def embed(texts: list[str]) -> Matrix:
            return ctx.embed(texts, self.target.model)

        def write(start: int, rows: Matrix) -> None:
            part = todo[start : start + len(rows)]
            points = [
                VectorPoint(ids[i], row.tolist(), payloads[i])
                for i, row in zip(part, rows, strict=True)
            ]
            model = VectorModel(self.target.model, rows.shape[1], variants=(ctx.embed.variant,))
            self.retry(ctx.store.upsert, self.target.physical, model, points)
            self.check()  # alive: a long document is not taken for a dead worker's

        texts = [chunks[i].text for i in todo]
        embed_batches(embed, texts, ctx.batch, ctx.attempts, write, ctx.outage_s)
        self.retry(ctx.store.delete, self.target.physical, sorted(before - set(ids)))
