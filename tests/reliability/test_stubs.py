"""A Triton python-backend stub killed (SIGSEGV, as a fault in native code would) under
traffic, with the shipped defaults: /ready says so within seconds, requests get answers or
503 with Retry-After and never hang, the model is reloaded by itself within 30 s, and nothing
ingested meanwhile is lost."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from orchestrator.cli import launcher as embedded
from orchestrator.clients.model_guard import live_stubs
from orchestrator.settings import Settings
from tests.reliability.conftest import (
    corpus,
    not_indexed,
    part,
    store_check,
    upload_all,
    wait_terminal,
)

pytestmark = pytest.mark.integration
HEAL_S = 30.0
NOTICE_S = 5.0
CLIENT_TIMEOUT_S = 90.0  # a request slower than this counts as a hang


@dataclass
class Traffic:
    """Searches and questions with new texts, one thread each, until stopped."""

    base_url: str
    collection: str
    seen: list[tuple[str, int, float, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Traffic:
        self.threads = [
            threading.Thread(target=self._loop, args=(kind,), daemon=True)
            for kind in ("search", "ask")
        ]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(CLIENT_TIMEOUT_S + 5)

    def _loop(self, kind: str) -> None:
        path = f"/v1/collections/{self.collection}/{kind}"
        with httpx.Client(base_url=self.base_url, timeout=CLIENT_TIMEOUT_S) as http:
            for i in range(100_000):  # bounded; stopped long before
                if self.stop.is_set():
                    return
                text = f"How much rain did station {i} measure on day {i % 7}? ({kind} {i})"
                body = {"query": text} if kind == "search" else {"question": text}
                started = time.monotonic()
                try:
                    response = http.post(path, json=body)
                    status, retry = response.status_code, response.headers.get("retry-after")
                except httpx.TimeoutException:
                    status, retry = 0, None
                self.seen.append((kind, status, time.monotonic() - started, retry))
                time.sleep(0.1)


def stub_pid(settings: Settings, name: str) -> int:
    triton = embedded.running_pid(part(settings, "triton"), settings)
    assert triton is not None
    stubs = live_stubs(triton)
    assert name in stubs, f"no stub {name} under tritonserver {triton}: {stubs}"
    return stubs[name]


def model_ready(api: httpx.Client, settings: Settings, model: str) -> bool:
    check = "llm" if model == settings.llm_model else "triton"
    return bool(api.get("/ready").json()["dependencies"][check]["ready"])


def answers_again(api: httpx.Client, collection: str, i: int) -> bool:
    """A new search and a new question both answered."""
    query = f"Which station measured rain on day {i}? (check {i})"
    search = api.post(f"/v1/collections/{collection}/search", json={"query": query})
    if search.status_code != 200:
        return False
    ask = api.post(f"/v1/collections/{collection}/ask", json={"question": query})
    return ask.status_code == 200


def _until(check: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(every_s)
    return None


def reloads(api: httpx.Client, model: str) -> float:
    line = f'tritonrag_model_reloads_total{{model="{model}",outcome="healed"}}'
    for row in api.get("/metrics").text.splitlines():
        if row.startswith(line):
            return float(row.split()[-1])
    return 0.0


def test_a_model_whose_stub_dies_is_reported_refused_and_reloaded_under_traffic(
    api: httpx.Client, stack: Settings, record: Callable[..., None]
) -> None:
    docs = corpus(30, "stubs")
    upload_all(api, "stubs", docs[:5])
    wait_terminal(api, "stubs", 5, 300)
    triton = embedded.running_pid(part(stack, "triton"), stack)
    assert triton is not None
    served = (stack.llm_model, stack.embed_model)
    targets = sorted(s for s in live_stubs(triton) if s.rsplit("_", 2)[0] in served)
    assert len(targets) == 3, targets  # llm's one, embed's two: the shipped layout
    base = f"http://127.0.0.1:{stack.port}"
    rows: list[dict[str, float | str | None]] = []
    with Traffic(base, "stubs") as traffic:
        upload_all(api, "stubs", docs[5:])  # ingest while the stubs die
        for i, name in enumerate(targets):
            model = name.rsplit("_", 2)[0]
            before = reloads(api, model)
            time.sleep(2)  # traffic on the healthy model first
            os.kill(stub_pid(stack, name), signal.SIGSEGV)
            killed = time.monotonic()
            noticed = _until(lambda: not model_ready(api, stack, model), NOTICE_S)  # noqa: B023
            back = None  # when the first search + question that both answered was sent
            while back is None and time.monotonic() - killed < HEAL_S:
                sent = time.monotonic() - killed
                back = sent if answers_again(api, "stubs", i) else None
                time.sleep(0.5)
            rows.append(
                {
                    "stub": name,
                    "noticed_s": noticed,
                    "answering_s": back,
                    "reloads": reloads(api, model) - before,
                }
            )
    wait_terminal(api, "stubs", len(docs), 600)
    failed = not_indexed(api, "stubs")
    check = store_check(stack, "stubs", docs)
    statuses = sorted({status for _, status, _, _ in traffic.seen})
    slowest = max(took for _, _, took, _ in traffic.seen)
    refused = [s for s in traffic.seen if s[1] == 503]
    record(
        case="4c. a model's stub process killed (SIGSEGV) under traffic",
        done=f"{', '.join(targets)} killed in turn; {len(traffic.seen)} searches and "
        f"questions, {len(docs) - 5} uploads meanwhile",
        lost=len(failed) + sum(check.values()),
        errors=f"{statuses}; {len(refused)} refused 503 with Retry-After",
        latency=f"slowest request {slowest:.1f} s",
        recovery="; ".join(
            f"{r['stub']}: /ready {r['noticed_s'] or 0:.1f} s, "
            f"answered a request sent {r['answering_s'] or 0:.1f} s after the kill"
            for r in rows
        ),
    )
    for row in rows:
        assert row["noticed_s"] is not None, row  # /ready said so within NOTICE_S
        assert row["answering_s"] is not None, row  # answered within HEAL_S
        assert row["reloads"] == 1, row  # reloaded once, by the guard
    assert set(statuses) <= {200, 503}, traffic.seen  # no 500, no timeout (0)
    assert all(int(retry or 0) > 0 for _, _, _, retry in refused), refused
    assert slowest < CLIENT_TIMEOUT_S
    assert failed == {} and check == {"missing": 0, "extra": 0, "stray": 0}
    assert all(model_ready(api, stack, m) for m in served)
