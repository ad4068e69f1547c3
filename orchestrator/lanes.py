"""The contract between the API and the workers: what travels on the wire, in one place.

Task names, lanes and the Redis keys kombu keeps them in, the `SENT_AT` header, the Celery
app both sides build (the worker consumes with it, the API sends with it), the search lane's
request format, and the reply every query-lane task pushes to its caller. The API and the
workers import this module and never each other. The names and formats are the wire format:
changing one strands the messages already queued.

Lanes are consumed in priority order (kombu's `priority` queue strategy): a worker that is
free always takes a waiting `query` task before an `llm` task, and that before `ingest`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from celery import Celery
from celery.signals import before_task_publish
from kombu.entity import Queue
from opentelemetry import propagate

from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.jobs import PREFIX
from orchestrator.settings import Settings

QUERY = "query"
LLM = "llm"
INGEST = "ingest"
LANES = (QUERY, LLM, INGEST)

INGEST_DOCUMENT = "tritonrag.ingest_document"
SEARCH = "tritonrag.search"
DELETE_DOCUMENT = "tritonrag.delete_document"
DROP_COLLECTION = "tritonrag.drop_collection"
PING = "tritonrag.ping"
REINDEX = "tritonrag.reindex"
REBUILD = "tritonrag.rebuild"
COLLECTION_INFO = "tritonrag.collection_info"
ANSWER = "tritonrag.answer"

ROUTES = {
    INGEST_DOCUMENT: INGEST,
    SEARCH: QUERY,
    DELETE_DOCUMENT: QUERY,
    DROP_COLLECTION: QUERY,
    PING: QUERY,
    REINDEX: QUERY,  # the shard's owner serves the query lane; the work runs in a child
    COLLECTION_INFO: QUERY,
    REBUILD: INGEST,  # embeds every chunk again: bulk work
    ANSWER: LLM,
}

SENT_AT = "tritonrag_sent_at"  # message header: when it was published (lane age metrics)
# kombu's Redis transport keeps a lane's priority levels in these lists.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
# Search batches waiting for a worker's search thread (workers/search_lane.py).
SEARCH_REQUESTS = f"{PREFIX}search-requests"
REPLY_TTL_S = 120
log = logging.getLogger("tritonrag.lanes")


def lane_keys(lane: str) -> list[str]:
    return [lane if p == 0 else f"{lane}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]


def reply_key(request_id: str) -> str:
    return f"{PREFIX}reply:{request_id}"


def create_celery(settings: Settings) -> Celery:
    app = Celery("tritonrag", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        broker_transport="workers.broker:Transport",
        task_queues=[Queue(name) for name in LANES],
        task_routes={name: {"queue": lane} for name, lane in ROUTES.items()},
        task_default_queue=INGEST,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,  # results travel as Redis replies and job state
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        worker_pool=settings.worker_pool,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "queue_order_strategy": "priority",
            "visibility_timeout": settings.visibility_timeout_s,
            # Sweep for abandoned (unacked) messages every few seconds instead of kombu's
            # default ~100 s, so a dead worker's task is back soon after the timeout.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 10)),
            "unacked_restore_throttle": 1,
        },
    )
    return app


@before_task_publish.connect
def _stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers.setdefault(SENT_AT, time.time())
        propagate.inject(headers)  # the publisher's trace continues in the task (tracing.py)


def search_request(request_id: str, queries: list[dict[str, Any]], timeout_s: float) -> str:
    """The message the API pushes on `SEARCH_REQUESTS`: `headers` like a Celery message's, so
    the lane metrics read its age the same way, and the caller's trace goes along."""
    now = time.time()
    headers: dict[str, Any] = {SENT_AT: now}
    propagate.inject(headers)
    body = {"id": request_id, "queries": queries, "deadline": now + timeout_s}
    return json.dumps(body | {"headers": headers})


def outcome(work: Callable[[], Any]) -> dict[str, Any]:
    """{"result": work()} or an error body; never raises, so the caller always hears back."""
    try:
        return {"result": work()}
    except TritonRagError as exc:
        return exc.body()
    except Exception as exc:
        log.exception("query-lane work failed")
        return TritonRagError(ErrorCode.NOT_READY, f"vector store failed: {exc}").body()


def run_for_reply(work: Callable[[], Any]) -> dict[str, Any]:
    """`outcome(work)` with the time it took (the caller counts the rest as queue time)."""
    start = time.perf_counter()
    return outcome(work) | {"work_s": time.perf_counter() - start}


def push_reply(client: redis.Redis, request_id: str, message: dict[str, Any]) -> None:
    pipe = client.pipeline()
    pipe.rpush(reply_key(request_id), json.dumps(message))
    pipe.expire(reply_key(request_id), REPLY_TTL_S)
    pipe.execute()


def read_reply(task: str, raw: bytes | str | None, timeout_s: float) -> dict[str, Any]:
    """The reply's message, or 503 when none came in time."""
    if raw is None:
        raise TritonRagError(
            ErrorCode.NOT_READY, f"no worker answered {task} within {timeout_s:g}s", 5
        )
    message: dict[str, Any] = json.loads(raw)
    return message


def result(message: dict[str, Any]) -> Any:
    """The reply's result, or its error raised in the project's vocabulary."""
    if "error" in message:
        error = message["error"]
        raise TritonRagError(ErrorCode(error["type"]), error["message"])
    return message["result"]


async def wait_reply(
    client: aioredis.Redis, task: str, request_id: str, timeout_s: float
) -> dict[str, Any]:
    answer = await client.blpop([reply_key(request_id)], timeout=timeout_s)
    return read_reply(task, None if answer is None else answer[1], timeout_s)


def call(
    app: Celery, client: redis.Redis, task: str, *args: Any, timeout_s: float, queue: str
) -> Any:
    """Send `task` and wait for its reply (blocking: the launcher and scripts)."""
    request_id = uuid.uuid4().hex
    app.send_task(task, args=(request_id, *args), queue=queue, expires=timeout_s)
    answer = client.blpop([reply_key(request_id)], timeout=timeout_s)
    return result(read_reply(task, None if answer is None else answer[1], timeout_s))
