"""A worker's Prometheus endpoint on metrics_host:worker_metrics_port.

Threads pool (embedded): one process, its default registry. Prefork: set
PROMETHEUS_MULTIPROC_DIR (an empty folder per worker) and each child writes its samples
there; the main process serves them summed (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import logging
import os

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

from orchestrator.settings import Settings

log = logging.getLogger("tritonrag.worker")


def serve(settings: Settings) -> None:
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    try:
        start_http_server(settings.worker_metrics_port, settings.metrics_host, registry)
    except OSError as exc:  # a second worker on this host: its metrics are not served
        log.warning("worker metrics not served on port %s: %s", settings.worker_metrics_port, exc)
