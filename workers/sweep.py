"""An unfinished ingest job whose message is gone is published again.

kombu's Redis transport takes a message off its list (BRPOP) before the worker records it
as unacked, client-side, so a worker killed in between loses it: tests/reliability saw a job
`queued` for good, its message neither waiting nor unacked, after a kill. (An API that dies
between storing a job and publishing it leaves the same.) The job record is the truth: a job
that is unfinished, has not moved for a minute, and whose message is found neither in the
ingest lane nor among the unacked, in two sweeps in a row, is published again. One worker
sweeps at a time, every half minute. Running a job twice is safe: ingest converges on the
same points, and a finished job is not run again.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from celery import Celery

from orchestrator.jobs import PREFIX, JobStore
from orchestrator.lanes import INGEST, INGEST_DOCUMENT, lane_keys

log = logging.getLogger("tritonrag.worker")
STALE_S = 60.0  # a job untouched this long is looked for
EVERY_S = 30
PAGE = 1000
_LOCK = f"{PREFIX}sweep-lock"
_MISSING = f"{PREFIX}sweep-missing"  # jobs the last sweep did not find


def due(store: JobStore, who: str) -> bool:
    """True for one caller in all workers every EVERY_S."""
    return bool(store.redis.set(_LOCK, who, nx=True, ex=EVERY_S))


def sweep(app: Celery, store: JobStore, now: float | None = None) -> list[str]:
    """Publish again the jobs missing now and in the last sweep; returns their ids."""
    stale = store.stale_jobs((time.time() if now is None else now) - STALE_S)
    missing = set(stale) - _present(app, store) if stale else set()
    before: set[bytes] = store.redis.smembers(_MISSING)  # type: ignore[assignment]
    again = sorted(missing & {m.decode() for m in before})
    pipe = store.redis.pipeline()
    pipe.delete(_MISSING)
    if rest := missing - set(again):
        pipe.sadd(_MISSING, *rest)
    pipe.execute()
    for job_id in again:
        app.send_task(INGEST_DOCUMENT, args=(job_id,), queue=INGEST)
        log.warning("job %s had no message in Redis: published again", job_id)
    return again


def _present(app: Celery, store: JobStore) -> set[str]:
    """Job ids with an ingest message waiting or unacked. The lane is read first: a message
    moves from it to the unacked, so one in flight is seen in one of them (or, popped but not
    yet recorded, missed once, which is why a job must be missed twice)."""
    present = {job for raw in _waiting(store) if (job := _job_id(json.loads(raw)))}
    with app.connection_for_write() as connection:
        channel: Any = connection.default_channel
        for _, raw in store.redis.hscan_iter(channel.unacked_key, count=PAGE):
            if job := _job_id(json.loads(raw)[0]):
                present.add(job)
    return present


def _waiting(store: JobStore) -> Iterator[bytes]:
    """The ingest lane's messages, a page at a time (a backlog can be long). Paged from the
    left end: publishing pushes there and shifts what follows, so a message may be read
    twice but none is skipped; consumers pop the right end."""
    for key in lane_keys(INGEST):
        start = 0
        while page := store.redis.lrange(key, start, start + PAGE - 1):
            yield from page  # type: ignore[misc]  # redis-py types replies loosely
            start += PAGE


def _job_id(payload: dict[str, Any]) -> str | None:
    try:
        if payload["headers"]["task"] != INGEST_DOCUMENT:
            return None
        body = payload["body"]
        if payload["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return str(json.loads(body)[0][0])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
