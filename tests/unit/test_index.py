"""The ingest pipeline with a real Redis and a real edge shard; only the model is a fake
(implementing the Embedder protocol), so replace/no-op/delete logic is checked exactly."""

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_repository.backend.encoder import Matrix
from orchestrator.clients.edge import EdgeVectors
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.jobs import JobState, JobStore, scoped
from orchestrator.pipeline.chunk import Chunker
from orchestrator.pipeline.index import IndexContext, ingest
from orchestrator.pipeline.parse import extract_text
from orchestrator.settings import Settings
from tests import samples

DIM = 8
MODEL = Settings().model_repository / "embed" / "1"


class FakeEmbedder:
    """Deterministic unit vectors from a hash of the text; records every call."""

    def __init__(self, fail_times: int = 0, error: ErrorCode = ErrorCode.OVERLOADED) -> None:
        self.variant = "fake"
        self.calls: list[list[str]] = []
        self.fail_times = fail_times
        self.error = error

    def __call__(self, texts: list[str], model: str | None = None) -> Matrix:
        if self.fail_times:
            self.fail_times -= 1
            raise TritonRagError(self.error, "fake failure")
        self.calls.append(texts)
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:DIM], np.uint8) for t in texts]
        matrix = np.asarray(rows, dtype=np.float32) + 1
        normalised: Matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        return normalised

    @property
    def embedded(self) -> int:
        return sum(len(c) for c in self.calls)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeVectors]:
    vectors = EdgeVectors(tmp_path)
    yield vectors
    vectors.close()


def _ctx(jobs: JobStore, store: EdgeVectors, embed: FakeEmbedder) -> IndexContext:
    chunker = Chunker.from_model_dir(MODEL, size=30, overlap=5)
    return IndexContext(store, jobs, embed, chunker, batch=4, attempts=2, parse=extract_text)


def _upload(jobs: JobStore, data: bytes, doc: str = "doc", name: str = "doc.txt") -> str:
    record = {"document_id": doc, "filename": name, "content_type": "text/plain", "metadata": {}}
    return jobs.create_job("t", "c", record, data)


TEXT = "\n\n".join(f"Paragraph {i}: the quick brown fox number {i} jumps." * 3 for i in range(12))


def test_index_replace_and_noop(jobs: JobStore, store: EdgeVectors) -> None:
    embed = FakeEmbedder()
    ctx = _ctx(jobs, store, embed)
    first = _upload(jobs, TEXT.encode())
    assert ingest(ctx, first) is JobState.INDEXED
    job = jobs.job(first)
    assert job is not None
    total = job["chunks_total"]
    assert total > 5 and job["chunks_embedded"] == total == embed.embedded
    assert store.count(scoped("t", "c")) == total
    assert jobs.blob(first) is None  # the upload is dropped once indexed

    same = _upload(jobs, TEXT.encode())
    assert ingest(ctx, same) is JobState.INDEXED
    job = jobs.job(same)
    assert job is not None and job["chunks_embedded"] == 0 and job["chunks_reused"] == total

    shorter = TEXT.rsplit("\n\n", 4)[0] + "\n\nA brand new closing paragraph."
    third = _upload(jobs, shorter.encode())
    before = embed.embedded
    assert ingest(ctx, third) is JobState.INDEXED
    job = jobs.job(third)
    assert job is not None
    assert 0 < job["chunks_embedded"] < job["chunks_total"]
    assert job["chunks_embedded"] == embed.embedded - before
    assert job["chunks_removed"] > 0
    assert store.count(scoped("t", "c")) == job["chunks_total"]
    doc = jobs.document("t", "c", "doc")
    assert doc is not None and doc["state"] == "indexed" and doc["chunks"] == job["chunks_total"]


def test_transient_errors_are_retried(jobs: JobStore, store: EdgeVectors) -> None:
    embed = FakeEmbedder(fail_times=2)
    job_id = _upload(jobs, b"short text to embed")
    assert ingest(_ctx(jobs, store, embed), job_id) is JobState.INDEXED


def test_persistent_errors_fail_the_job_with_a_reason(jobs: JobStore, store: EdgeVectors) -> None:
    embed = FakeEmbedder(fail_times=100)
    job_id = _upload(jobs, b"short text to embed")
    assert ingest(_ctx(jobs, store, embed), job_id) is JobState.FAILED
    job = jobs.job(job_id)
    assert job is not None and "fake failure" in job["reason"]


@pytest.mark.parametrize(
    ("data", "name", "reason"),
    [
        (b"", "empty.txt", "empty"),
        (b"%PDF-1.7\n%corrupt", "bad.pdf", "cannot parse PDF"),
        (samples.pdf("x")[:150], "cut.pdf", "cannot parse PDF"),
        (b"  \n\n  ", "blank.txt", "no text"),
    ],
)
def test_bad_documents_fail_cleanly(
    jobs: JobStore, store: EdgeVectors, data: bytes, name: str, reason: str
) -> None:
    job_id = _upload(jobs, data, name=name)
    assert ingest(_ctx(jobs, store, FakeEmbedder()), job_id) is JobState.FAILED
    job = jobs.job(job_id)
    assert job is not None and reason in job["reason"]
    doc = jobs.document("t", "c", "doc")
    assert doc is not None and doc["state"] == "failed"


def test_a_replaced_job_stops_and_the_new_one_wins(jobs: JobStore, store: EdgeVectors) -> None:
    ctx = _ctx(jobs, store, FakeEmbedder())
    old = _upload(jobs, TEXT.encode())
    new = _upload(jobs, b"the replacement text")
    assert ingest(ctx, old) is JobState.FAILED
    old_job = jobs.job(old)
    assert old_job is not None and "replaced" in old_job["reason"]
    assert ingest(ctx, new) is JobState.INDEXED
    assert store.count(scoped("t", "c")) == 1


def test_a_deleted_document_leaves_no_points(jobs: JobStore, store: EdgeVectors) -> None:
    ctx = _ctx(jobs, store, FakeEmbedder())
    job_id = _upload(jobs, TEXT.encode())
    jobs.remove_document("t", "c", "doc")
    assert ingest(ctx, job_id) is JobState.FAILED
    assert store.count(scoped("t", "c")) == 0


def test_a_worker_killed_as_it_marks_a_job_indexed_leaves_a_job_that_runs_again(
    jobs: JobStore, store: EdgeVectors, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the points are written but before the job says indexed: the redelivered
    task must still find the uploaded bytes, and the blob goes once the job is indexed."""
    ctx = _ctx(jobs, store, FakeEmbedder())
    job_id = _upload(jobs, TEXT.encode())
    update_job = jobs.update_job

    def killed(job: str, **fields: Any) -> None:
        if fields.get("state") is JobState.INDEXED:
            raise SystemExit("SIGKILL")
        update_job(job, **fields)

    monkeypatch.setattr(jobs, "update_job", killed)
    with pytest.raises(SystemExit):
        ingest(ctx, job_id)
    monkeypatch.setattr(jobs, "update_job", update_job)
    assert ingest(ctx, job_id) is JobState.INDEXED
    assert jobs.blob(job_id) is None


def test_terminal_jobs_are_not_run_again(jobs: JobStore, store: EdgeVectors) -> None:
    embed = FakeEmbedder()
    ctx = _ctx(jobs, store, embed)
    job_id = _upload(jobs, TEXT.encode())
    ingest(ctx, job_id)
    calls = len(embed.calls)
    assert ingest(ctx, job_id) is JobState.INDEXED and len(embed.calls) == calls


def test_a_dependency_that_is_down_is_waited_for_past_the_attempts() -> None:
    from tenacity import wait_none

    from orchestrator.pipeline.embed import retrying

    calls = []

    def flaky(code: ErrorCode, fails: int) -> str:
        calls.append(code)
        if len(calls) <= fails:
            raise TritonRagError(code, "down")
        return "ok"

    # Not ready (Triton restarting): tried until it is back, within the outage window.
    assert retrying(2, outage_s=60).copy(wait=wait_none())(flaky, ErrorCode.NOT_READY, 10) == "ok"
    calls.clear()
    with pytest.raises(TritonRagError):  # without a window: the attempts only
        retrying(2).copy(wait=wait_none())(flaky, ErrorCode.NOT_READY, 10)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(TritonRagError):  # overload is not an outage
        retrying(2, outage_s=60).copy(wait=wait_none())(flaky, ErrorCode.OVERLOADED, 10)
    assert len(calls) == 3
