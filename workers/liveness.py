"""A dead worker's tasks come back within a minute; a slow, healthy one is never run twice.

The Redis broker redelivers an unacked message only after its visibility timeout, which must
outlast the longest healthy task. So instead: every worker keeps a heartbeat key alive and
records the delivery tag of each task it receives under its identity (host:pid of its main
process). A watchdog thread in every worker restores (kombu's `restore_by_tag`: back to its
queue, off the unacked set):
- the tags held by identities whose heartbeat expired;
- its own tags whose task no longer runs (Redis was away when it ended, so neither the ack
  nor the release got through; threads pool, where tasks run in the receiving process);
- unacked messages older than a minute that no live worker holds (received by a worker that
  died before it could record them).
The visibility timeout stays as a backstop, far above any task's duration. A message lost
outright (taken off its list by a worker killed before it recorded it) is sweep.py's.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from celery import Celery

from orchestrator.jobs import PREFIX, JobStore
from orchestrator.settings import Settings
from workers import sweep

log = logging.getLogger("tritonrag.worker")
HEARTBEAT_S = 5.0
ALIVE_TTL_S = 20  # four missed beats: dead
_stores: dict[int, JobStore] = {}  # per pid: its heartbeat runs (prefork children differ)
_lock = threading.Lock()
_running: set[str] = set()  # tags this process runs now; changed with the Redis record
_running_lock = threading.Lock()


# The worker's main process (prefork children inherit it): tasks are held where they arrive.
_IDENTITY = f"{socket.gethostname()}:{os.getpid()}"
UNHELD_AFTER_S = 60  # an unacked message nobody alive holds for this long is restored


def identity() -> str:
    return _IDENTITY


def alive_key(who: str) -> str:
    return f"{PREFIX}alive:{who}"


def held_key(who: str) -> str:
    return f"{PREFIX}held:{who}"


def hold(app: Celery, delivery_tag: str, task_id: str) -> None:
    store = start(app)
    with _running_lock:
        _running.add(delivery_tag)
        store.redis.hset(held_key(identity()), delivery_tag, task_id)


def release(app: Celery, delivery_tag: str) -> None:
    store = start(app)
    with _running_lock:
        _running.discard(delivery_tag)
        store.redis.hdel(held_key(identity()), delivery_tag)


def start(app: Celery) -> JobStore:
    """This process's store, its heartbeat + watchdog thread started on the first call."""
    with _lock:
        store = _stores.get(os.getpid())
        if store is not None:
            return store
        store = _stores[os.getpid()] = JobStore.from_url(Settings().broker_url)
    beat(store)
    thread = threading.Thread(target=_run, args=(app, store), name="tritonrag-liveness")
    thread.daemon = True
    thread.start()
    return store


def beat(store: JobStore) -> None:
    store.redis.set(alive_key(identity()), "1", ex=ALIVE_TTL_S)


def restore_dead(app: Celery, store: JobStore) -> int:
    """Put the tasks held by dead processes back on their queues; returns how many."""
    restored, held = 0, set()
    for raw in store.redis.scan_iter(match=f"{PREFIX}held:*", count=100):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        who = key.removeprefix(f"{PREFIX}held:")
        tags = [t.decode() for t in store.redis.hkeys(key)]  # type: ignore[union-attr]
        if who == identity() and app.conf.worker_pool == "threads":
            restored += _restore_orphans(app, store)
        if store.redis.exists(alive_key(who)):
            held.update(tags)
            continue
        _restore(app, tags)
        store.redis.delete(key)
        restored += len(tags)
        if tags:
            log.warning("restored %d task(s) held by dead worker %s", len(tags), who)
    return restored + _restore_unheld(app, store, held)


def _restore_unheld(app: Celery, store: JobStore, held: set[str]) -> int:
    """Unacked messages no live worker holds: received by a worker that died before it
    could record them (or while Redis was away)."""
    with app.connection_for_write() as connection:
        channel: Any = connection.default_channel
        old = store.redis.zrange(
            channel.unacked_index_key, 0, time.time() - UNHELD_AFTER_S, byscore=True
        )
        tags = sorted({t.decode() for t in old} - held)  # type: ignore[union-attr]
        for tag in tags:
            channel.qos.restore_by_tag(tag, leftmost=False)
    if tags:
        log.warning("restored %d unacked task(s) that no live worker holds", len(tags))
    return len(tags)


def _restore_orphans(app: Celery, store: JobStore) -> int:
    """This process's held tags whose task ended while Redis was away."""
    with _running_lock:
        held = {t.decode() for t in store.redis.hkeys(held_key(identity()))}  # type: ignore[union-attr]
        orphans = sorted(held - _running)
        _restore(app, orphans)  # a no-op for a message that was acked after all
        if orphans:
            store.redis.hdel(held_key(identity()), *orphans)
            log.warning("restored %d task(s) that ended while Redis was away", len(orphans))
    return len(orphans)


def _restore(app: Celery, tags: list[str]) -> None:
    if tags:
        with app.connection_for_write() as connection:
            qos: Any = connection.default_channel.qos
            for tag in tags:
                # To the front (consumers BRPOP the right end): it waited long enough.
                qos.restore_by_tag(tag, leftmost=False)


def _run(app: Celery, store: JobStore) -> None:
    stop = threading.Event()
    while not stop.wait(HEARTBEAT_S):
        try:
            beat(store)
            restore_dead(app, store)
            if sweep.due(store, identity()):
                sweep.sweep(app, store)
        except Exception:  # Redis away for a moment: the next beat tries again
            log.exception("liveness pass failed")
