"""Thin tasks: ids in, pipeline call, state in Redis."""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject
from celery.signals import (
    task_postrun,
    task_prerun,
    task_received,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from orchestrator import lanes, tracing
from orchestrator.jobs import JobState, scoped
from orchestrator.metrics import STORE_SEARCH_SECONDS, TASKS
from orchestrator.pipeline import index, rebuild, retrieve
from workers import liveness, metrics, search_lane
from workers.celery_app import app, settings
from workers.gate import IngestGate, bind_step
from workers.runtime import WorkerRuntime, close, runtime

log = logging.getLogger("tritonrag.worker")


# A worker's threads serve both lanes; ingest may hold only some, so a search always finds one.
_threads = settings.worker_concurrency
gate = IngestGate(max(1, min(settings.ingest_concurrency, _threads - 1)))
app.steps["consumer"].add(bind_step(gate))


@app.task(name=lanes.INGEST_DOCUMENT, bind=True)
def ingest_document(self: Task, job_id: str) -> str:
    try:
        return _gated(self, job_id)
    except redis.exceptions.ConnectionError as exc:
        # Redis went away mid-job: the job is not at fault. Back to the queue; if Redis is
        # still away the message stays unacked and liveness restores it when it is back.
        raise Reject(f"Redis unreachable: {exc}", requeue=True) from exc


def _gated(task: Task, job_id: str) -> str:
    rt = runtime()
    job = rt.jobs.job(job_id)
    if job is None or JobState(job["state"]).terminal:
        # A second message for a finished job (workers/sweep.py): not a delivery to count.
        return str(job["state"]) if job else JobState.FAILED.value
    if not gate.enter(alone=job["deliveries"] > 0):
        # It raced past the lane's pause: back to the queue, once.
        log.info("ingest slots full: job %s goes back to the queue", job_id)
        task.apply_async((job_id,))
        return "requeued"
    try:
        return _ingest(rt, job_id)
    finally:
        gate.leave()


def _ingest(rt: WorkerRuntime, job_id: str) -> str:
    deliveries = rt.jobs.count_delivery(job_id)
    if deliveries > 1:
        TASKS.labels("ingest", "redelivered").inc()
    if deliveries > rt.settings.max_deliveries:
        # Redelivered after a worker died on it this many times: stop the loop here.
        reason = f"gave up after {deliveries - 1} deliveries: a worker died processing it"
        TASKS.labels("ingest", "failed").inc()
        return index.fail(rt.index, job_id, reason).value
    try:
        state = index.ingest(rt.index, job_id)
    except redis.exceptions.ConnectionError:
        raise  # not the job's fault: see ingest_document
    except Exception as exc:
        # Unexpected (a bug, the store down past retries): the job must not hang mid-way.
        index.fail(rt.index, job_id, f"{type(exc).__name__}: {exc}")
        TASKS.labels("ingest", "failed").inc()
        raise
    TASKS.labels("ingest", "succeeded" if state is JobState.INDEXED else "failed").inc()
    job = rt.jobs.job(job_id)
    if state is JobState.INDEXED and job is not None:  # a new version: answers on the old go
        rt.jobs.forget_answers(scoped(job["tenant"], job["collection"]), job["document_id"])
    return state.value


def run_searches(queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch of searches (orchestrator/api/batcher.py): one answer or error per query."""
    store = runtime().store

    def one(q: dict[str, Any]) -> Any:
        with STORE_SEARCH_SECONDS.time(), tracing.tracer.start_as_current_span("store search"):
            return retrieve.search(
                store,
                q["collection"],
                q["vector"],
                q["top_k"],
                q["filters"],
                q.get("text", ""),  # a request from an API of the version before: dense
                q.get("mode", "dense"),
                q.get("strict", False),
                q.get("model", ""),
            )

    answers = [lanes.outcome(functools.partial(one, q)) for q in queries]
    return [
        {"result": a["result"][0], "mode": a["result"][1]} if "result" in a else a for a in answers
    ]


@app.task(name=lanes.SEARCH)
def search(request_id: str, queries: list[dict[str, Any]]) -> None:
    """The same batch as a Celery task (`search_transport` "celery")."""
    _answer(request_id, lambda: run_searches(queries))


@app.task(name=lanes.DELETE_DOCUMENT)
def delete_document(request_id: str, collection: str, document_id: str) -> None:
    """From every physical collection that may hold it (a re-index may be copying it)."""

    def work() -> Any:
        rt = runtime()
        rt.jobs.forget_answers(collection, document_id)
        for physical in rt.jobs.physicals(collection, settings.embed_model):
            rt.store.delete_document(physical, document_id)

    _answer(request_id, work)


@app.task(name=lanes.DROP_COLLECTION)
def drop_collection(request_id: str, collection: str) -> None:
    def work() -> Any:
        rt = runtime()
        rt.jobs.forget_answers(collection)
        physicals = rt.jobs.physicals(collection, settings.embed_model)
        return any([rt.store.drop(physical) for physical in physicals])

    _answer(request_id, work)


@app.task(name=lanes.REINDEX)
def reindex(request_id: str, collection: str) -> None:
    """Start a collection's re-index (sparse vectors) if it needs one; reply with its state."""

    def work() -> dict[str, Any]:
        physical = runtime().jobs.where(collection, settings.embed_model).physical
        started = runtime().store.reindex(physical)
        state = _state(collection)
        return state | {"started": started, "reindexing": started or state["reindexing"]}

    _answer(request_id, work)


@app.task(name=lanes.REBUILD)
def rebuild_collection(tenant: str, collection: str, physical: str) -> str:
    """Re-index a collection into `physical` (claimed by the API: pipeline/rebuild.py); run
    again after the grace period, to drop the old collection."""
    rt, s = runtime(), settings
    ctx = rebuild.RebuildContext(
        rt.store, rt.jobs, rt.index.embed, s.embed_batch, s.task_retries, s.outage_wait_s,
        s.reindex_grace_s,
    )  # fmt: skip
    if not gate.enter(alone=False):  # an ingest slot, as documents take: searches keep one
        rebuild_collection.apply_async((tenant, collection, physical), countdown=1)
        return "requeued"
    try:
        state = rebuild.run(ctx, tenant, collection, physical)
    except redis.exceptions.ConnectionError as exc:  # not the re-index's fault: again later
        raise Reject(f"Redis unreachable: {exc}", requeue=True) from exc
    finally:
        gate.leave()
    if state == "swapped":
        rebuild_collection.apply_async((tenant, collection, physical), countdown=s.reindex_grace_s)
    return state


@app.task(name=lanes.COLLECTION_INFO)
def collection_info(request_id: str, collection: str) -> None:
    """What the store holds for a collection: points, sparse vectors, a build running, the
    embedding model that made its vectors, a re-index into a new collection."""
    _answer(request_id, lambda: _state(collection))


def _state(collection: str) -> dict[str, Any]:
    rt = runtime()
    physical = rt.jobs.where(collection, settings.embed_model).physical
    model = rt.store.model(physical)
    progress = rt.jobs.rebuild(collection)
    return {
        "reindexing": rt.store.indexing(physical) or progress.get("state") == "running",
        "sparse": rt.store.has_sparse(physical),
        "points": rt.store.count(physical),
        "model": model.as_dict() if model else None,
        "rebuild": progress or None,
    }


@app.task(name=lanes.PING)
def ping(request_id: str) -> None:
    _answer(request_id, lambda: "pong")


def _answer(request_id: str, work: Any) -> None:
    """Run `work` and push its result (or error) to the caller's reply key, with the time
    it took (the caller counts the rest of its wait as queue time)."""
    lanes.push_reply(runtime().jobs.redis, request_id, lanes.run_for_reply(work))


_search_lane: list[threading.Event] = []


def _start_search_lane() -> None:
    if settings.search_transport == "redis" and lanes.QUERY in app.amqp.queues.consume_from:
        tracing.setup(settings, "tritonrag-worker")
        _search_lane.append(search_lane.start(settings, run_searches, _answer))


@worker_shutdown.connect
def _close_stores(**_: Any) -> None:
    for stop in _search_lane:
        stop.set()
    close()


@worker_ready.connect
def _start_liveness(**_: Any) -> None:
    liveness.start(app)  # a fresh worker restores what dead ones held
    metrics.serve(settings)
    if app.conf.worker_pool != "prefork":  # prefork: each child starts its own
        _start_search_lane()


@worker_process_init.connect
def _start_child_search_lane(**_: Any) -> None:
    _start_search_lane()


def _delivery_tag(task: Any) -> str | None:
    tag = (task.request.properties or {}).get("delivery_tag") if task is not None else None
    return str(tag) if tag else None


@task_received.connect
def _hold(request: Any = None, **_: Any) -> None:
    # On arrival, not at start: a task waiting for a thread is held too.
    if request is not None and (tag := request.message.delivery_tag):
        liveness.hold(app, str(tag), request.id)


@task_prerun.connect
def _trace(task_id: str = "", task: Any = None, **_: Any) -> None:
    if tracing.setup(settings, "tritonrag-worker") and task is not None:
        headers = {k: v for k in ("traceparent", "tracestate") if (v := task.request.get(k))}
        tracing.task_started(task_id, task.name, headers)


@task_postrun.connect
def _release(task_id: str = "", task: Any = None, state: str | None = None, **_: Any) -> None:
    tracing.task_finished(task_id, state)
    if tag := _delivery_tag(task):
        liveness.release(app, tag)
    if task is not None and task.name != lanes.INGEST_DOCUMENT:  # ingest counts its own
        name = task.name.removeprefix("tritonrag.")
        TASKS.labels(name, "succeeded" if state == "SUCCESS" else "failed").inc()


# The llm lane's task lives in its own module; importing it registers it with the app.
from workers import answer as _answer_task  # noqa: E402,F401
