"""Ingest holds at most `slots` of a worker's threads; waiting ingest work stays in Redis.

The embedded worker serves the query and ingest lanes from one thread pool (it owns the
edge shard), so ingest must leave threads free for searches. When every ingest slot is
busy the worker stops consuming the ingest lane, and starts again when a slot frees: the
waiting messages cost nothing while they wait. The consumer's own loop makes the change
(`call_soon`), so it can lag a message behind; a task that raced past the pause goes back
to the queue once, quietly.

Prefork children run one task each and never reach the limit; a consumer is only bound in
the process that runs the tasks (the threads pool).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from workers.celery_app import INGEST

log = logging.getLogger("tritonrag.worker")


class IngestGate:
    def __init__(self, slots: int, lane: str = INGEST) -> None:
        self.slots = slots
        self.lane = lane
        self.running = 0
        self.paused = False
        self._consumer: Any = None
        self._lock = threading.Lock()

    def bind(self, consumer: Any) -> None:
        with self._lock:
            self._consumer = consumer

    def enter(self) -> bool:
        """Take a slot; False when all are busy (the caller sends its message back)."""
        with self._lock:
            if self.running >= self.slots:
                return False
            self.running += 1
            if self.running == self.slots and self._consumer is not None:
                self.paused = True
                self._consumer.call_soon(self._consumer.cancel_task_queue, self.lane)
            return True

    def leave(self) -> None:
        with self._lock:
            self.running -= 1
            if self.paused and self._consumer is not None:
                self.paused = False
                self._consumer.call_soon(self._consumer.add_task_queue, self.lane)


def bind_step(gate: IngestGate) -> type[bootsteps.StartStopStep]:
    """A consumer bootstep that hands the worker's consumer to `gate`."""

    class BindIngestGate(bootsteps.StartStopStep):  # type: ignore[misc]  # celery is untyped
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def start(self, consumer: Any) -> None:
            gate.bind(consumer)

    return BindIngestGate
