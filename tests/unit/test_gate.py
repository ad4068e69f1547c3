"""The ingest gate against a consumer that records what it is told."""

from __future__ import annotations

import threading
import time
from typing import Any

from workers.gate import IngestGate


class RecordingConsumer:
    """Runs what it is handed at once, or (`defer`) when told to, newest first: kombu's hub
    keeps its callbacks in a set, in no order."""

    def __init__(self, defer: bool = False) -> None:
        self.calls: list[str] = []
        self.pending: list[Any] = []
        self.defer = defer

    def call_soon(self, callback: Any) -> None:
        self.pending.append(callback)
        if not self.defer:
            self.run_pending()

    def run_pending(self) -> None:
        while self.pending:
            self.pending.pop()()

    def cancel_task_queue(self, lane: str) -> None:
        self.calls.append(f"cancel {lane}")

    def add_task_queue(self, lane: str) -> None:
        self.calls.append(f"add {lane}")


def test_changes_applied_in_any_order_leave_the_lane_as_the_gate_stands() -> None:
    gate, consumer = _gate(1, defer=True)
    assert gate.enter()  # pause requested
    gate.leave()  # resume requested before the loop ran the pause
    consumer.run_pending()  # newest first: resume, then pause, each reading the gate now
    assert consumer.calls == ["add ingest", "add ingest"]
    assert not gate.paused


def _gate(slots: int, defer: bool = False) -> tuple[IngestGate, RecordingConsumer]:
    gate, consumer = IngestGate(slots, "ingest"), RecordingConsumer(defer)
    gate.bind(consumer)
    return gate, consumer


def test_the_lane_pauses_when_the_slots_fill_and_resumes_when_one_frees() -> None:
    gate, consumer = _gate(2)
    assert gate.enter() and consumer.calls == []
    assert gate.enter() and consumer.calls == ["cancel ingest"]
    assert not gate.enter()  # raced past the pause: sent back, nothing changes
    gate.leave()
    assert consumer.calls == ["cancel ingest", "add ingest"]
    assert gate.enter()


def test_a_redelivered_task_waits_for_the_others_and_keeps_them_out() -> None:
    gate, consumer = _gate(3)
    assert gate.enter()
    entered = threading.Event()

    def redelivered() -> None:
        gate.enter(alone=True)
        entered.set()

    thread = threading.Thread(target=redelivered)
    thread.start()
    time.sleep(0.1)
    assert not entered.is_set() and consumer.calls == ["cancel ingest"]
    assert not gate.enter()  # nothing new starts while it waits
    gate.leave()
    thread.join(5)
    assert entered.is_set() and gate.running == 1
    assert not gate.enter()  # nor while it runs
    gate.leave()
    assert consumer.calls == ["cancel ingest", "add ingest"]
    assert gate.enter() and gate.enter()
