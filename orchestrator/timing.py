"""Where one API request's time went, returned as response headers.

`x-total-time`: the server's time until the response started. `x-queue-time`: time spent
waiting in tritonrag's own queues (the search batcher, a Celery lane and its transport).
`x-inference-time`: time in model calls (Triton embedding, the LLM) as the client saw them,
Triton's own queue included. Milliseconds. A streamed response sends its headers before it
streams, so they cover the work done before the first byte; its `done` event has the rest.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class Timings:
    start: float = field(default_factory=time.perf_counter)
    queue_s: float = 0.0
    inference_s: float = 0.0

    def headers(self) -> list[tuple[bytes, bytes]]:
        total = time.perf_counter() - self.start
        return [
            (b"x-total-time", _ms(total)),
            (b"x-queue-time", _ms(self.queue_s)),
            (b"x-inference-time", _ms(self.inference_s)),
        ]


_current: ContextVar[Timings | None] = ContextVar("tritonrag_timings", default=None)


def begin() -> Timings:
    """A fresh record for the current context (a request, or one batch of searches)."""
    timings = Timings()
    _current.set(timings)
    return timings


def current() -> Timings | None:
    return _current.get()


def add_queue(seconds: float) -> None:
    if (timings := _current.get()) is not None:
        timings.queue_s += max(0.0, seconds)


def add_inference(seconds: float) -> None:
    if (timings := _current.get()) is not None:
        timings.inference_s += max(0.0, seconds)


def _ms(seconds: float) -> bytes:
    return f"{seconds * 1000:.1f}".encode()
