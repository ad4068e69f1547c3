"""Ingest holds at most `slots` of a worker's threads; waiting ingest work stays in Redis.

The embedded worker serves the query and ingest lanes from one thread pool (it owns the
edge shard), so ingest must leave threads free for searches. When every ingest slot is
busy the worker stops consuming the ingest lane, and starts again when a slot frees: the
waiting messages cost nothing while they wait. The consumer's own loop makes the change
(`call_soon`, whose callbacks run in no set order: each one applies the state of the
moment), so it can lag a message behind; a task that raced past the pause goes back to the
queue once, quietly.

A redelivered task (its worker died while it ran) runs alone: if it is what kills the
worker, it is the only ingest task in flight when it does, so only its delivery count grows
and documents that merely shared the dying worker are not failed with it.

Prefork children run one task each and never reach the limit; a consumer is only bound in
the process that runs the tasks (the threads pool).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from celery import bootsteps

from orchestrator.lanes import INGEST

RESYNC_S = 5.0


class IngestGate:
    def __init__(self, slots: int, lane: str = INGEST) -> None:
        self.slots = slots
        self.lane = lane
        self.running = 0
        self.alone = False  # a redelivered task runs
        self.waiting_alone = 0
        self.paused = False
        self._consumer: Any = None
        self._cond = threading.Condition()

    def bind(self, consumer: Any) -> None:
        with self._cond:
            self._consumer = consumer
            self._sync()
        threading.Thread(target=self._resync, daemon=True, name="ingest-gate").start()

    def _resync(self) -> None:
        """Re-apply the gate's state every few seconds. A backstop: twice in ~10 fault runs
        (the poison case, right after the last kill) restored ingest tasks sat unconsumed
        for minutes, as if a resume never took effect; applying the state again is harmless."""
        while True:
            time.sleep(RESYNC_S)
            with self._cond:
                consumer = self._consumer
            if consumer is not None:
                consumer.call_soon(self._apply)

    def enter(self, alone: bool = False) -> bool:
        """Take a slot; False when none is free (the caller sends its message back).
        `alone` waits until no other ingest task runs and keeps others out meanwhile."""
        with self._cond:
            if alone:
                self.waiting_alone += 1
                self._sync()
                self._cond.wait_for(lambda: self.running == 0)
                self.waiting_alone -= 1
                self.alone = True
            elif self.running >= self.slots or self.alone or self.waiting_alone:
                return False
            self.running += 1
            self._sync()
            return True

    def leave(self) -> None:
        with self._cond:
            self.running -= 1
            self.alone = False
            self._sync()
            self._cond.notify_all()

    def _sync(self) -> None:
        """Consume the lane exactly when a new ingest task could start."""
        full = self.running >= self.slots or self.alone or self.waiting_alone > 0
        if self._consumer is None or full == self.paused:
            return
        self.paused = full
        self._consumer.call_soon(self._apply)

    def _apply(self) -> None:
        """In the consumer's loop: pause or resume as the gate stands now (both idempotent)."""
        with self._cond:
            paused = self.paused
        if paused:
            self._consumer.cancel_task_queue(self.lane)
        else:
            self._consumer.add_task_queue(self.lane)


def bind_step(gate: IngestGate) -> type[bootsteps.StartStopStep]:
    """A consumer bootstep that hands the worker's consumer to `gate`."""

    class BindIngestGate(bootsteps.StartStopStep):  # type: ignore[misc]  # celery is untyped
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def start(self, consumer: Any) -> None:
            # Only where the lane is consumed: the gate resumes it, and must never make the
            # llm-lane worker (no vector store of its own) start taking ingest tasks.
            if gate.lane in consumer.app.amqp.queues.consume_from:
                gate.bind(consumer)

    return BindIngestGate
