"""The Celery app: Redis broker, three lanes, late acks and bounded redelivery.

Lanes are consumed in priority order (kombu's `priority` queue strategy): a worker that is
free always takes a waiting `query` task before an `llm` task, and that before `ingest`.
The embedded stack runs the `llm` lane in a worker of its own (it needs no vector store), so
its thread count bounds how many answers generate at once.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from celery.signals import before_task_publish
from kombu.entity import Queue
from opentelemetry import propagate

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
ANSWER = "tritonrag.answer"

SENT_AT = "tritonrag_sent_at"  # message header: when it was published (lane age metrics)
# kombu's Redis transport keeps a lane's priority levels in these lists.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)

ROUTES = {
    INGEST_DOCUMENT: INGEST,
    SEARCH: QUERY,
    DELETE_DOCUMENT: QUERY,
    DROP_COLLECTION: QUERY,
    PING: QUERY,
    ANSWER: LLM,
}


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


def lane_keys(lane: str) -> list[str]:
    return [lane if p == 0 else f"{lane}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]


@before_task_publish.connect
def _stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers.setdefault(SENT_AT, time.time())
        propagate.inject(headers)  # the publisher's trace continues in the task (tracing.py)


# The worker's app (`celery -A workers.tasks worker`); settings come from TRITONRAG_* env.
settings = Settings()
app = create_celery(settings)
