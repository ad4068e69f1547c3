"""Re-index into another embedding model (pipeline/rebuild.py) with a real Redis and real
edge shards; the two models are fakes of different dimensions, so a vector of the wrong one is
refused by the store rather than silently ranked."""

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from orchestrator.clients.edge import EdgeVectors
from orchestrator.clients.qdrant import ServerVectors
from orchestrator.clients.vectors import Matrix, VectorStore
from orchestrator.jobs import JobState, JobStore, Live, scoped
from orchestrator.pipeline import rebuild
from orchestrator.pipeline.chunk import Chunk, Chunker
from orchestrator.pipeline.index import IndexContext, ingest
from orchestrator.pipeline.parse import extract_text
from orchestrator.pipeline.retrieve import search
from orchestrator.settings import Settings

DIMS = {"old": 8, "new": 12}
NAME = scoped("t", "c")
TOKENIZER = Settings().model_repository / "embed" / "1"


class TwoModels:
    """Deterministic unit vectors from a hash of the text, as wide as the model's; `hook`
    runs before the nth call for a model (to make things happen mid-way)."""

    def __init__(self) -> None:
        self.variant = "fake"
        self.calls: dict[str, int] = {"old": 0, "new": 0}
        self.hooks: dict[tuple[str, int], Callable[[], None]] = {}

    def __call__(self, texts: list[str], model: str | None = None) -> Matrix:
        name = model or "old"
        self.calls[name] += 1
        if hook := self.hooks.pop((name, self.calls[name]), None):
            hook()
        dim = DIMS[name]
        rows = [np.frombuffer(hashlib.sha512(t.encode()).digest()[:dim], np.uint8) for t in texts]
        matrix = np.asarray(rows, dtype=np.float32) + 1
        normalised: Matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        return normalised


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """Both adapters; the server one on qdrant-client's local mode (one physical collection
    per model, so the two models' collections live apart)."""
    vectors: VectorStore = (
        EdgeVectors(tmp_path)
        if request.param == "edge"
        else ServerVectors(QdrantClient(location=":memory:"), "old")
    )
    yield vectors
    vectors.close()


def _ctx(jobs: JobStore, store: VectorStore, embed: TwoModels) -> IndexContext:
    chunker = Chunker.from_model_dir(TOKENIZER, size=30, overlap=5)
    return IndexContext(
        store, jobs, embed, chunker, batch=4, attempts=1, parse=extract_text, model="old"
    )


def _rebuilder(ctx: IndexContext, grace_s: float = 0.0, **kw: Any) -> rebuild.RebuildContext:
    return rebuild.RebuildContext(ctx.store, ctx.jobs, ctx.embed, 4, 1, grace_s=grace_s, **kw)


def _run(ctx: rebuild.RebuildContext, tenant: str, collection: str, physical: str) -> str:
    """As the worker does: again after the swap, for the drop."""
    state = rebuild.run(ctx, tenant, collection, physical)
    return rebuild.run(ctx, tenant, collection, physical) if state == "swapped" else state


def _started(
    jobs: JobStore, store: VectorStore, docs: tuple[str, ...], model: str = "new"
) -> tuple[TwoModels, IndexContext, str]:
    """Documents uploaded by the old model, then a re-index into `model` claimed."""
    embed = TwoModels()
    ctx = _ctx(jobs, store, embed)
    for doc in docs:
        _upload(ctx, doc, _text(doc))
    physical = rebuild.start(jobs, "t", "c", model, served="old")
    assert physical is not None
    return embed, ctx, physical


def _upload(ctx: IndexContext, doc: str, text: str) -> str:
    record = {"document_id": doc, "filename": doc, "content_type": "text/plain", "metadata": {}}
    job = ctx.jobs.create_job("t", "c", record, text.encode())
    assert ingest(ctx, job) is JobState.INDEXED
    return job


def _text(topic: str) -> str:
    return " ".join(f"Note {i} about {topic}: the {topic} figure is {i * 7}." for i in range(12))


def _found(ctx: IndexContext, query: str, top_k: int = 50) -> set[str]:
    """A search as the API makes it: where the collection lives, by the model it lives with."""
    live = ctx.jobs.where(NAME, "old")
    vector = ctx.embed([query], live.model)[0].tolist()
    hits, _ = search(ctx.store, live.physical, vector, top_k, {}, model=live.model)
    return {h["document_id"] for h in hits}


def test_a_collection_moves_to_another_model_and_the_old_one_goes(
    jobs: JobStore, store: VectorStore
) -> None:
    ctx = _ctx(jobs, store, TwoModels())
    for doc in ("a", "b", "c"):
        _upload(ctx, doc, _text(doc))
    points = store.count(NAME)
    physical = rebuild.start(jobs, "t", "c", "new", served="old")
    assert physical == f"{NAME}@2"
    assert rebuild.start(jobs, "t", "c", "new", served="old") is None  # one at a time

    assert _run(_rebuilder(ctx), "t", "c", physical) == "done"

    assert jobs.where(NAME, "old").physical == physical
    assert jobs.where(NAME, "old").model == "new"
    model = store.model(physical)
    assert model is not None and (model.name, model.dim) == ("new", 12)
    assert store.count(physical) == points
    assert store.count(NAME) == 0 and store.model(NAME) is None  # dropped after the grace
    assert _found(ctx, "a figure") == {"a", "b", "c"}
    progress = jobs.rebuild(NAME)
    assert progress["state"] == "done"
    assert progress["documents_copied"] == progress["documents_total"] == 3
    # The copied chunks carry the ids an upload by the new model gives them: reused, not
    # embedded again, when the same document comes back.
    payloads = store.chunks(physical, "a")
    ids = {Chunk.stored(p["chunk_index"], p["text"]).point_id(NAME, "a", "new") for p in payloads}
    assert ids == store.document_ids(physical, "a")
    embed = ctx.embed
    assert isinstance(embed, TwoModels)
    before = embed.calls["new"]
    job = _upload(ctx, "a", _text("a"))
    record = jobs.job(job)
    assert record is not None and record["chunks_reused"] == record["chunks_total"]
    assert embed.calls["new"] == before
    # And a later upload lands in the new collection, by the new model.
    _upload(ctx, "d", _text("d"))
    assert _found(ctx, "d figure") >= {"d"} and store.count(NAME) == 0


def test_uploads_and_deletes_during_a_rebuild_are_not_lost(
    jobs: JobStore, store: VectorStore
) -> None:
    embed, ctx, physical = _started(jobs, store, ("a", "b", "c", "d"))

    def meanwhile() -> None:
        _upload(ctx, "e", _text("e"))  # a new document, into the old collection
        _upload(ctx, "b", _text("bees"))  # a changed one
        jobs.mark_deleting("t", "c", "c", True)  # a deleted one, as the API and worker do it
        for where in jobs.physicals(NAME, "old"):
            store.delete_document(where, "c")
        jobs.remove_document("t", "c", "c")

    embed.hooks[("new", 2)] = meanwhile
    assert _run(_rebuilder(ctx), "t", "c", physical) == "done"
    assert _found(ctx, "figure") == {"a", "b", "d", "e"}
    texts = " ".join(p["text"] for p in store.chunks(physical, "b"))
    assert "bees" in texts and "the b figure" not in texts


def test_an_upload_that_straddles_the_swap_follows_the_collection(
    jobs: JobStore, store: VectorStore
) -> None:
    embed, ctx, physical = _started(jobs, store, ("a",))
    outcome: list[str] = []
    # The re-index runs up to its swap while the upload below embeds into the old
    # collection; its drop stage (passes, then the drop) after the upload finished.
    calls = embed.calls["old"]
    embed.hooks[("old", calls + 1)] = lambda: outcome.append(
        rebuild.run(_rebuilder(ctx), "t", "c", physical)
    )
    _upload(ctx, "late", _text("late"))
    outcome.append(rebuild.run(_rebuilder(ctx), "t", "c", physical))
    assert outcome == ["swapped", "done"]
    assert "late" in _found(ctx, "late figure")
    assert store.count(NAME) == 0  # nothing left behind in the old collection
    model = store.model(physical)
    assert model is not None and model.name == "new"


def test_searches_answer_throughout_the_swap(jobs: JobStore, store: VectorStore) -> None:
    _embed, ctx, physical = _started(jobs, store, ("a", "b", "c"))
    done = threading.Event()
    errors: list[BaseException] = []
    pages: list[set[str]] = []

    def loop() -> None:
        while not done.is_set() or len(pages) < 20:
            try:
                pages.append(_found(ctx, "b figure", top_k=3))
            except BaseException as exc:
                errors.append(exc)
                return

    searcher = threading.Thread(target=loop)
    searcher.start()
    try:
        assert _run(_rebuilder(ctx, grace_s=0.3), "t", "c", physical) == "done"
    finally:
        done.set()
        searcher.join(timeout=30)
    assert not errors, errors
    assert len(pages) >= 20 and all(pages)  # no empty page
    assert jobs.where(NAME, "old").model == "new"


def test_dropping_the_collection_abandons_its_rebuild(jobs: JobStore, store: VectorStore) -> None:
    embed, ctx, physical = _started(jobs, store, ("a", "b"))

    def drop() -> None:
        for where in jobs.physicals(NAME, "old"):
            store.drop(where)
        jobs.remove_collection("t", "c")

    embed.hooks[("new", 1)] = drop
    assert _run(_rebuilder(ctx), "t", "c", physical) == "abandoned"
    assert store.count(physical) == 0 and store.model(physical) is None
    assert jobs.where(NAME, "old").physical == NAME
    assert jobs.rebuild(NAME) == {}  # no record made again by the abandoned run


def test_a_failed_rebuild_leaves_the_collection_where_it_was(
    jobs: JobStore, store: VectorStore
) -> None:
    _embed, ctx, physical = _started(jobs, store, ("a",), model="missing")
    assert _run(_rebuilder(ctx), "t", "c", physical) == "failed"
    assert jobs.where(NAME, "old") == Live(NAME, "old")
    assert "KeyError" in jobs.rebuild(NAME)["reason"]
    assert _found(ctx, "a figure") == {"a"}
    # A failed one does not block the next.
    assert rebuild.start(jobs, "t", "c", "new", served="old") is not None


def test_a_rebuild_whose_worker_died_can_be_claimed_again(
    jobs: JobStore, store: VectorStore
) -> None:
    ctx = _ctx(jobs, store, TwoModels())
    _upload(ctx, "a", _text("a"))
    first = rebuild.start(jobs, "t", "c", "new", served="old")
    assert first is not None and rebuild.start(jobs, "t", "c", "new", served="old") is None
    # Its worker died after it wrote some points: the record is not touched any more.
    store.upsert(first, *_some_points(ctx))
    jobs.redis.hset(f"tritonrag:rebuild:{NAME}", "updated_at", 0)
    second = rebuild.start(jobs, "t", "c", "new", served="old")
    assert second is not None and second != first
    assert _run(_rebuilder(ctx), "t", "c", first) == "running"  # a late delivery: no-op
    assert _run(_rebuilder(ctx), "t", "c", second) == "done"
    assert store.count(first) == 0  # the dead one's collection is gone
    assert _found(ctx, "a figure") == {"a"}


def _some_points(ctx: IndexContext) -> tuple[Any, list[Any]]:
    from orchestrator.clients.vectors import VectorModel, VectorPoint

    row = ctx.embed(["x"], "new")[0].tolist()
    return VectorModel("new", len(row)), [VectorPoint("00000000-0000-0000-0000-000000000001", row)]


def test_a_document_uploaded_again_after_the_swap_keeps_its_new_text(
    jobs: JobStore, store: VectorStore
) -> None:
    _embed, ctx, physical = _started(jobs, store, ("a", "b"))
    assert rebuild.run(_rebuilder(ctx), "t", "c", physical) == "swapped"
    _upload(ctx, "b", _text("bees"))  # into the new collection, by the new model
    assert rebuild.run(_rebuilder(ctx), "t", "c", physical) == "done"  # passes, then the drop
    texts = " ".join(p["text"] for p in store.chunks(physical, "b"))
    assert "bees" in texts and "the b figure" not in texts


def test_a_server_process_finds_a_collection_another_process_moved(jobs: JobStore) -> None:
    """Two workers on one Qdrant: the one that did not re-index still finds the new model's
    physical collection (made after it first listed them)."""
    client = QdrantClient(location=":memory:")
    rebuilder, searcher = ServerVectors(client, "old"), ServerVectors(client, "old")
    embed = TwoModels()
    ctx = _ctx(jobs, rebuilder, embed)
    _upload(ctx, "a", _text("a"))
    assert searcher.count(NAME) > 0  # it has listed the physical collections now
    physical = rebuild.start(jobs, "t", "c", "new", served="old")
    assert physical is not None
    assert _run(_rebuilder(ctx), "t", "c", physical) == "done"
    time.sleep(1.1)  # its list is read again at most once a second
    other = _ctx(jobs, searcher, embed)
    assert _found(other, "a figure") == {"a"}
    model = searcher.model(physical)
    assert model is not None and model.name == "new"
