"""A cluster rehearsal on one machine: two API processes behind a real load balancer
(HAProxy, from Debian), two Triton servers behind it as well (gRPC balanced per request over
HTTP/2), the worker and a Redis; one API, one Triton and the worker are killed while
documents ingest and a search loop runs through the balancer.

What it shows: no document lost, and no request answered 5xx once the balancer's health
check has marked a killed replica down (requests sent between a kill and that mark may fail:
that window is the health check's, 2 failed checks 500 ms apart). The worker owns the
embedded store, so there is one (server mode's stateless workers need a Qdrant server, which
no registry here ships): while it is dead and restarted searches wait or fail; that window is
reported apart. The search latency under kills is recorded against idle, not asserted
(`make reliability` writes it to perf/results/reliability.md).
"""

from __future__ import annotations

import csv
import functools
import io
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from orchestrator.cli import launcher as embedded
from orchestrator.cli.tritonserver import free_port
from orchestrator.settings import PORT_FIELDS, Settings
from tests.reliability.conftest import Scale, corpus, not_indexed, store_diff, wait_terminal

pytestmark = pytest.mark.integration
CHECK_MS = 500  # the balancer's health check interval; 2 failures mark a server down

HAPROXY = """\
global
    maxconn 2000
defaults
    mode http
    timeout connect 1s
    timeout client 120s
    timeout server 120s
    timeout check 4s
    retries 2
    option redispatch
    retry-on conn-failure empty-response
    option http-buffer-request
    default-server inter {check_ms}ms fall 2 rise 2
frontend api
    bind 127.0.0.1:{api}
    default_backend apis
backend apis
    balance roundrobin
    option httpchk GET /ready
{apis}
frontend grpc
    bind 127.0.0.1:{grpc} proto h2
    default_backend tritons
backend tritons
    balance roundrobin
    option httpchk GET /v2/health/ready
{tritons}
listen stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats
"""


@dataclass
class Cluster:
    base: Settings  # Redis, the workers; Triton and the API reached through the balancer
    apis: dict[str, Settings]
    tritons: dict[str, Settings]
    stats_port: int
    haproxy: subprocess.Popen[bytes] | None = None
    parts: list[tuple[embedded.Part, Settings]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.base.port}"

    def status(self) -> dict[tuple[str, str], str]:
        """(backend, server) -> UP / DOWN ..., from the balancer's own statistics."""
        text = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2).text
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {(r["pxname"], r["svname"]): r["status"] for r in rows}

    def start(self, part: embedded.Part, settings: Settings, wait: bool = True) -> None:
        process = embedded._spawn(part, settings)
        if (part, settings) not in self.parts:
            self.parts.append((part, settings))
        if wait:
            embedded._wait(part, settings, process, 240)

    def kill(self, part: embedded.Part, settings: Settings) -> float:
        pid = embedded.running_pid(part, settings)
        assert pid is not None, f"{part.name} is not running"
        os.kill(pid, signal.SIGKILL)
        return time.monotonic()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    assert shutil.which("haproxy"), "haproxy is missing: scripts/system-deps.sh installs it"
    values: dict[str, Any] = {p: free_port() for p in PORT_FIELDS}
    grpc, stats = free_port(), free_port()
    base = Settings(
        runtime_dir=tmp_path,
        **values | {"triton_grpc_port": grpc},  # the API and workers reach Triton through it
        llm_backend="openai",  # answers are not rehearsed: no llm model in the Tritons
        llm_base_url="http://127.0.0.1:9/v1",
    )
    tritons = {
        name: base.model_copy(
            update={
                "runtime_dir": tmp_path / f"triton-{name}",
                "triton_http_port": free_port(),
                "triton_grpc_port": free_port(),
                "triton_metrics_port": free_port(),
            }
        )
        for name in ("a", "b")
    }
    apis = {
        name: base.model_copy(update={"runtime_dir": tmp_path / f"api-{name}", "port": free_port()})
        for name in ("a", "b")
    }
    config = HAPROXY.format(
        check_ms=CHECK_MS,
        api=base.port,
        grpc=grpc,
        stats=stats,
        apis="\n".join(f"    server {n} 127.0.0.1:{s.port} check" for n, s in apis.items()),
        tritons="\n".join(
            f"    server {n} 127.0.0.1:{s.triton_grpc_port} proto h2 check port "
            f"{s.triton_http_port} check-proto h1"
            for n, s in tritons.items()
        ),
    )
    (tmp_path / "haproxy.cfg").write_text(config)
    check = subprocess.run(["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], check=False)
    assert check.returncode == 0, config
    made = Cluster(base, apis, tritons, stats)
    env = embedded.settings_env(base)
    try:
        made.start(embedded.redis_part(base, env), base)
        for settings in tritons.values():  # both load at once
            made.start(
                embedded.triton_part(settings, embedded.settings_env(settings)), settings, False
            )
        for settings in tritons.values():
            embedded._wait(embedded.triton_part(settings, {}), settings, None, 240)
        log = (tmp_path / "haproxy.log").open("ab")
        made.haproxy = subprocess.Popen(
            ["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=log, stderr=log
        )
        made.start(embedded.worker_part(base, env), base)
        made.start(embedded.llm_worker_part(base, env), base)
        for settings in apis.values():
            made.start(embedded.api_part(settings, embedded.settings_env(settings)), settings)
        _until(lambda: _all_up(made), 30)
        yield made
    finally:
        for part, settings in reversed(made.parts):
            embedded.down_part(part, settings, grace_s=10)
        if made.haproxy is not None:
            made.haproxy.terminate()
            made.haproxy.wait(10)


def _down(cluster: Cluster, backend: str, server: str) -> bool:
    return cluster.status()[(backend, server)].startswith("DOWN")


def _up(cluster: Cluster, backend: str, server: str) -> bool:
    return cluster.status()[(backend, server)] == "UP"


def _all_up(cluster: Cluster) -> bool:
    status = cluster.status()
    return all(status.get((b, s)) == "UP" for b in ("apis", "tritons") for s in ("a", "b"))


def _until(check: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic()


@dataclass
class Searches:
    """A search loop through the balancer: (sent, seconds, status) of each request."""

    url: str
    query: str
    rows: list[tuple[float, float, int]] = field(default_factory=list)
    errors: dict[float, str] = field(default_factory=dict)  # sent -> what a failure said
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    body = {"query": self.query, "top_k": 3}
                    response = http.post("/v1/collections/seed/search", json=body)
                    status, said = response.status_code, response.text[:300]
                except httpx.TransportError as exc:
                    status, said = 599, repr(exc)  # the balancer closed on us: a failure
                if status >= 500:
                    self.errors[sent] = said
                self.rows.append((sent, time.monotonic() - sent, status))


def _upload(url: str, collection: str, docs: list[tuple[str, bytes]]) -> tuple[int, int]:
    """Upload in requests of 10 files, retrying a failed request as a client would; returns
    (requests retried, documents accepted)."""
    retried = accepted = 0
    with httpx.Client(base_url=url, timeout=60) as http:
        for start in range(0, len(docs), 10):
            files = [("files", doc) for doc in docs[start : start + 10]]
            for _ in range(20):
                try:
                    response = http.post(f"/v1/collections/{collection}/documents", files=files)
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 202:
                    accepted += len(response.json()["documents"])
                    time.sleep(0.5)  # uploads spread over the kills, as users' would be
                    break
                retried += 1
                time.sleep(0.5)
            else:
                raise AssertionError(f"upload of {start}.. refused 20 times")
    return retried, accepted


def test_a_cluster_loses_nothing_when_one_of_each_dies(
    cluster: Cluster, scale: Scale, record: Callable[..., None]
) -> None:
    with httpx.Client(base_url=cluster.url, timeout=60) as api:
        seed = corpus(10, "seed")
        assert _upload(cluster.url, "seed", seed)[1] == len(seed)
        wait_terminal(api, "seed", len(seed), 300)
        query = "how much rain did station 9 measure"
        idle = Searches(cluster.url, query)
        threading.Timer(8.0, idle.stop.set).start()
        idle.run()

        searches = Searches(cluster.url, query)
        loop = threading.Thread(target=searches.run)
        loop.start()
        docs = corpus(3 * scale.documents, "storm")
        began = time.monotonic()
        uploads: list[tuple[int, int]] = []
        uploader = threading.Thread(
            target=lambda: uploads.append(_upload(cluster.url, "storm", docs))
        )
        uploader.start()
        windows: dict[str, tuple[float, float]] = {}
        try:
            time.sleep(1)
            for backend, name, part, settings in (
                ("apis", "a", embedded.api_part, cluster.apis["a"]),
                ("tritons", "a", embedded.triton_part, cluster.tritons["a"]),
            ):
                killed = cluster.kill(part(settings, {}), settings)
                down = _until(functools.partial(_down, cluster, backend, name), 30)
                windows[f"{backend}/{name}"] = (killed, down)
                time.sleep(3)
            worker = embedded.worker_part(cluster.base, embedded.settings_env(cluster.base))
            killed = cluster.kill(worker, cluster.base)
            time.sleep(1)
            cluster.start(worker, cluster.base)  # as a supervisor would
            # Every API's readiness needs a worker: the balancer had marked them all down.
            windows["worker"] = (killed, _until(functools.partial(_up, cluster, "apis", "b"), 60))
            uploader.join(timeout=600)
            wait_terminal(api, "storm", len(docs), 900)
            took = time.monotonic() - began
        finally:
            searches.stop.set()
            loop.join(timeout=60)
            uploader.join(timeout=60)
        assert uploads and uploads[0][1] == len(docs)
        lost = not_indexed(api, "storm")
    embedded.down_part(worker, cluster.base)
    diff = store_diff(cluster.base, "storm", docs)

    def after_marks(sent: float, took: float) -> bool:
        """Neither sent nor in flight between a kill and the balancer's mark (or, for the
        worker, its return)."""
        return not any(sent <= end and sent + took >= start for start, end in windows.values())

    failed = [(s, t, st) for s, t, st in searches.rows if st >= 500]
    start = windows["apis/a"][0]
    after = [
        (round(s - start, 2), st, searches.errors[s]) for s, t, st in failed if after_marks(s, t)
    ]
    idle_p99 = float(np.percentile([t for _, t, st in idle.rows if st == 200], 99))
    kill_p99 = float(np.percentile([t for _, t, st in searches.rows if st == 200], 99))
    record(
        case="cluster: an API, a Triton and the worker killed during ingest (2 of each behind "
        "HAProxy)",
        done=f"{len(docs) - len(lost)}/{len(docs)} indexed in {took:.0f} s",
        lost=len(lost),
        errors=f"{len(failed)} of {len(searches.rows)} searches 5xx, {len(after)} after the "
        f"balancer marked the replica down; {uploads[0][0]} upload requests retried",
        latency=f"search p99 {kill_p99 * 1000:.0f} ms under kills and ingest, "
        f"{idle_p99 * 1000:.0f} ms idle ({kill_p99 / idle_p99:.1f}x)",
        recovery=", ".join(
            f"{k} marked down {e - s:.1f} s after its kill"
            for k, (s, e) in windows.items()
            if k != "worker"
        )
        + f"; APIs back {windows['worker'][1] - windows['worker'][0]:.1f} s after the worker's "
        "kill",
    )
    assert lost == {}, lost
    assert diff == {"missing": 0, "extra": 0, "stray": 0}, diff
    marks = {k: (round(a - start, 2), round(b - start, 2)) for k, (a, b) in windows.items()}
    assert after == [], (after, marks)
    assert len(searches.rows) > 50 and len(idle.rows) > 20
