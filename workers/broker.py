"""kombu's Redis transport, made to survive Redis going away while tasks run.

Found by tests/reliability (Redis restarted mid-ingest), kombu 5.7: when the connection
drops, the consumer releases it and then (1) closing the channel tries to put back the
messages received but not acked, and (2) a task that ends afterwards acks on that channel.
Both reach for the released connection and raise AttributeError, which Celery treats as
unrecoverable: the worker stops consuming for good but does not exit. Here both are skipped
with a warning; the messages stay unacked, and workers/liveness.py restores them (a dead
worker's by heartbeat, the rest after a minute unheld). Re-running a task is safe: ingest
converges on the same points, the query lane's tasks are reads or idempotent deletes.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis

log = logging.getLogger("tritonrag.worker")


class QoS(redis.QoS):
    def ack(self, delivery_tag: Any) -> None:
        try:
            super().ack(delivery_tag)
        except AttributeError:  # the channel's connection was released
            log.warning("ack of %s skipped: its connection to Redis was lost", delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except AttributeError:
            log.warning("reject of %s skipped: its connection to Redis was lost", delivery_tag)


class Channel(redis.Channel):
    QoS = QoS
    do_restore = False  # (1): liveness restores instead


class Transport(redis.Transport):
    Channel = Channel
    # A lane resumed by the ingest gate joins the consumer's BRPOP only when the one in
    # flight returns: with kombu's 1 s, ingestion ran in waves 1.1 s apart with the cores
    # idle between them (0.5x raw embedding). An idle BRPOP every 0.1 s costs Redis nothing.
    # kombu types it int; Redis >= 6 takes a fractional BRPOP timeout.
    brpop_timeout = 0.1  # type: ignore[assignment]
