"""A minimal OTLP/HTTP trace receiver on 127.0.0.1 (tests and perf checks collect spans with
it). It reads OTLP JSON, what tritonrag's exporter and Triton's (opentelemetry-cpp) send."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Span:
    trace_id: str
    name: str
    service: str


@dataclass
class Collector:
    url: str
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, spans: list[Span]) -> None:
        with self.lock:
            self.spans.extend(spans)

    def trace(
        self, trace_id: str | None, wanted: set[tuple[str, str]] | None = None, timeout_s: float = 0
    ) -> set[tuple[str, str]]:
        """(service, span name) pairs seen in `trace_id` (None: in any trace), once all of
        `wanted` arrived (spans are exported in batches every few seconds) or `timeout_s`
        passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                seen = {(s.service, s.name) for s in self.spans if trace_id in (None, s.trace_id)}
            if (wanted or set()) <= seen or time.monotonic() >= deadline:
                return seen
            time.sleep(0.5)


@contextmanager
def receiver() -> Iterator[Collector]:
    """Collect spans POSTed to <url>/v1/traces until the block ends."""
    collector = Collector("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            collector.add(_spans(json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    collector.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        server.shutdown()
        server.server_close()


def _spans(request: dict[str, Any]) -> list[Span]:
    return [
        Span(span["traceId"].lower(), span["name"], _service(resource.get("resource", {})))
        for resource in request.get("resourceSpans", [])
        for scope in resource.get("scopeSpans", [])
        for span in scope.get("spans", [])
    ]


def _service(resource: dict[str, Any]) -> str:
    for attribute in resource.get("attributes", []):
        if attribute["key"] == "service.name":
            return str(attribute["value"]["stringValue"])
    return ""
