"""The stack's own Prometheus scrapes the API, the workers and Triton: every dashboard panel
and every alert rule evaluates against live data, and `tritonrag top` shows the traffic in a
real terminal."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from orchestrator.cli import prometheus
from orchestrator.cli.dashboards import DASHBOARDS, RATE
from orchestrator.settings import Settings
from tests.integration.conftest import search, upload, wait_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prom(stack: Settings) -> Iterator[httpx.Client]:
    assert prometheus.binary(), "prometheus is missing: scripts/system-deps.sh installs it"
    with httpx.Client(base_url=prometheus.url(stack), timeout=30) as client:
        yield client


def _traffic(api: httpx.Client, stop: threading.Event) -> None:
    """Searches (new and repeated), embeddings and a 404 until `stop`."""
    i = 0
    while not stop.is_set():
        i += 1
        search(api, "observed", "what does the lighthouse keeper log?")
        search(api, "observed", f"storm number {i}")
        api.post("/v1/embeddings", json={"input": f"a text to embed {i}"}).raise_for_status()
        api.get("/v1/jobs/no-such-job")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def traffic(api: httpx.Client) -> Iterator[None]:
    """Documents ingested (one failing), an answer, and steady traffic meanwhile."""
    docs = [
        (f"log-{i}.txt", f"Lighthouse log {i}: the keeper noted storm {i} at dawn.".encode())
        for i in range(6)
    ]
    jobs = [d["job_id"] for d in upload(api, "observed", docs).json()["documents"]]
    jobs += [
        d["job_id"] for d in upload(api, "observed", [("empty.txt", b"  ")]).json()["documents"]
    ]
    assert [wait_job(api, j)["state"] for j in jobs].count("failed") == 1
    stop = threading.Event()
    worker = threading.Thread(target=_traffic, args=(api, stop), daemon=True)
    worker.start()
    try:
        asked = api.post(
            "/v1/collections/observed/ask", json={"question": "What did the keeper note?"}
        )
        assert asked.status_code == 200, asked.text
        time.sleep(12)  # two scrapes after the work above
        yield
    finally:
        stop.set()
        worker.join()


def _query(prom: httpx.Client, expr: str) -> list[dict[str, Any]]:
    response = prom.get("/api/v1/query", params={"query": expr})
    assert response.status_code == 200, f"{expr}: {response.text}"
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_every_part(prom: httpx.Client, traffic: None) -> None:
    up = {(s["metric"]["job"], s["value"][1]) for s in _query(prom, "up")}
    assert up == {("tritonrag-api", "1"), ("tritonrag-worker", "1"), ("triton", "1")}, up
    assert len(_query(prom, 'up{job="tritonrag-worker"}')) == 2  # worker and llm-worker


def test_every_dashboard_panel_has_data(prom: httpx.Client, traffic: None) -> None:
    empty = []
    for dashboard in DASHBOARDS:
        for panel in dashboard.panels:
            series = [
                s for query in panel.queries for s in _query(prom, query.expr.replace(RATE, "1m"))
            ]
            if not series:
                empty.append(f"{dashboard.title}: {panel.title}")
    assert empty == []


def test_every_alert_rule_evaluates(prom: httpx.Client, traffic: None) -> None:
    rules = yaml.safe_load((prometheus.RULES / "tritonrag.yml").read_text())["groups"][0]["rules"]
    for rule in rules:
        _query(prom, rule["expr"])  # a bad expression or missing function fails here
    loaded: list[dict[str, Any]] = []
    deadline = time.monotonic() + 40  # evaluation_interval is 15 s
    while time.monotonic() < deadline:
        groups = prom.get("/api/v1/rules").json()["data"]["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        # Before its first evaluation a rule's lastEvaluation is the zero time.
        if loaded and not any(r["lastEvaluation"].startswith("0001") for r in loaded):
            break
        time.sleep(2)
    assert {r["name"] for r in loaded} == {r["alert"] for r in rules}
    assert all(r["health"] == "ok" for r in loaded), [
        (r["name"], r.get("lastError")) for r in loaded
    ]
    # A healthy stack under light load: nothing that pages.
    firing = [
        r["name"] for r in loaded if r["state"] == "firing" and r["labels"]["severity"] == "page"
    ]
    assert firing == []


def test_top_shows_live_throughput_in_a_terminal(
    stack: Settings, prom: httpx.Client, traffic: None
) -> None:
    tmux = shutil.which("tmux")
    assert tmux, "tmux is missing: scripts/system-deps.sh installs it"
    session = f"top-{os.getpid()}"
    tritonrag = str(Path(sys.executable).parent / "tritonrag")
    port = f"TRITONRAG_PROMETHEUS_PORT={stack.prometheus_port}"
    command = [tritonrag, "top", "--interval", "1"]
    size = ["-x", "200", "-y", "50"]
    env = ["-e", port, "-e", "COLUMNS=200", "-e", "LINES=50"]  # rich sizes by these
    subprocess.run([tmux, "new-session", "-d", "-s", session, *size, *env, *command], check=True)
    try:
        screen = ""
        for _ in range(30):
            time.sleep(1)
            screen = subprocess.run(
                [tmux, "capture-pane", "-p", "-t", session],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rps = [line for line in screen.splitlines() if "/v1/embeddings" in line]
            if rps and re.search(r"[1-9][\d,]*\.\d/s|0\.[1-9]/s", rps[0]):
                break
        assert "tritonrag / Triton" in screen and "Inferences per second" in screen, screen
        assert rps and re.search(r"[1-9][\d,]*\.\d/s|0\.[1-9]/s", rps[0]), screen
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], check=False)


def _timings(response: httpx.Response) -> tuple[float, float, float]:
    assert response.status_code == 200, response.text
    h = response.headers
    return float(h["x-total-time"]), float(h["x-queue-time"]), float(h["x-inference-time"])


def test_responses_say_where_their_time_went(api: httpx.Client) -> None:
    job = upload(api, "timed", [("t.txt", b"Timing headers split a request's time.")])
    assert wait_job(api, job.json()["documents"][0]["job_id"])["state"] == "indexed"
    # A new query text: Triton embeds it (inference), the search waits on the query lane.
    body = {"query": f"where did the time go {time.time()}?", "top_k": 1}
    total, queue, inference = _timings(api.post("/v1/collections/timed/search", json=body))
    assert inference > 0 and queue > 0
    assert queue + inference <= total + 0.2  # the parts happen one after another (0.1 ms rounding)
    # The same text again: its embedding comes from the cache, no model call.
    _, queue, inference = _timings(api.post("/v1/collections/timed/search", json=body))
    assert inference == 0 and queue > 0
    # Embeddings go straight to Triton: no tritonrag queue on the way.
    total, queue, inference = _timings(api.post("/v1/embeddings", json={"input": "one text"}))
    assert queue == 0 and 0 < inference <= total
