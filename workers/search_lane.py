"""Searches over a plain Redis list, beside Celery.

A search is a read with a deadline: Celery's delivery guarantees (late acks, redelivery,
liveness) buy it nothing, and its per-task work (publish, kombu's consume and ack, signals)
cost several times the HNSW query itself (perf/search_hop.py). So the API pushes each
batch (orchestrator/api/batcher.py) on `SEARCH_REQUESTS` and a worker's search threads pop it,
run it and push the answer to the caller's reply key. A batch whose deadline has passed is
dropped: its caller has already answered 503.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from orchestrator import tracing
from orchestrator.lanes import SEARCH, SEARCH_REQUESTS
from orchestrator.metrics import TASKS
from orchestrator.settings import Settings

log = logging.getLogger("tritonrag.worker")
POP_TIMEOUT_S = 1  # how soon a thread sees the stop event
Answer = Callable[[str, Callable[[], Any]], None]
Search = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def start(settings: Settings, search: Search, answer: Answer) -> threading.Event:
    """`settings.search_batches_in_flight` daemon threads serving the list; set the returned
    event to stop them."""
    stop = threading.Event()
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=POP_TIMEOUT_S + 5)
    for n in range(settings.search_batches_in_flight):
        thread = threading.Thread(
            target=_serve, args=(client, stop, search, answer), name=f"tritonrag-search-{n}"
        )
        thread.daemon = True
        thread.start()
    return stop


def _serve(client: redis.Redis, stop: threading.Event, search: Search, answer: Answer) -> None:
    while not stop.is_set():
        try:
            popped = client.brpop([SEARCH_REQUESTS], timeout=POP_TIMEOUT_S)
            if popped is not None:
                handle(popped[1], search, answer)
        except redis.exceptions.RedisError as exc:
            # Popping or replying: either way the thread must live on, or searches stall.
            log.warning("search lane: Redis unreachable (%s); retrying", exc)
            stop.wait(1.0)


def handle(raw: bytes | str, search: Search, answer: Answer) -> None:
    try:
        message = json.loads(raw)
        request_id, queries = str(message["id"]), list(message["queries"])
        deadline, headers = float(message["deadline"]), dict(message.get("headers", {}))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("search lane: dropped a malformed request (%s)", exc)
        return
    if time.time() > deadline:
        TASKS.labels("search", "expired").inc()
        return
    tracing.task_started(request_id, SEARCH, headers)
    state = "FAILURE"
    try:
        answer(request_id, lambda: search(queries))
        state = "SUCCESS"
    finally:
        tracing.task_finished(request_id, state)
        TASKS.labels("search", "succeeded" if state == "SUCCESS" else "failed").inc()
