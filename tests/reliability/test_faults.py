"""Faults done to the real stack (shipped defaults) and what users see: nothing acknowledged
is lost, errors are the documented ones, and it comes back by itself."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from orchestrator import stack as embedded
from orchestrator.settings import Settings
from tests import samples
from tests.reliability.conftest import (
    Scale,
    corpus,
    count_indexed,
    part,
    states,
    store_check,
    upload_all,
    wait_terminal,
)

pytestmark = pytest.mark.integration
NO_LOSS = {"missing": 0, "extra": 0, "stray": 0}


def _kill(settings: Settings, name: str) -> None:
    pid = embedded.running_pid(part(settings, name), settings)
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    part(settings, name).pid_file(settings).unlink(missing_ok=True)


def _until(check: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.2)
    return time.monotonic() - started


def test_worker_killed_repeatedly_while_documents_ingest(
    api: httpx.Client, stack: Settings, scale: Scale, record: Callable[..., None]
) -> None:
    docs = corpus(scale.documents, "calm")
    upload_all(api, "calm", docs)
    undisturbed = wait_terminal(api, "calm", len(docs), 900)

    docs = corpus(scale.documents, "killed")
    started = time.monotonic()
    upload_all(api, "killed", docs)
    recoveries = []
    for k in range(scale.kills):
        # Kill at evenly spaced points of the work, always mid-document.
        target = (k + 1) * len(docs) // (scale.kills + 1)
        _until(lambda: count_indexed(api, "killed") >= target, 900)  # noqa: B023
        _kill(stack, "worker")
        embedded.up(stack, print)
        before = count_indexed(api, "killed")
        recoveries.append(_until(lambda: count_indexed(api, "killed") > before, 120))  # noqa: B023
    wait_terminal(api, "killed", len(docs), 900)
    elapsed = time.monotonic() - started

    final = states(api, "killed")
    failed = {d: r.get("reason") for d, r in final.items() if r["state"] != "indexed"}
    check = store_check(stack, "killed", docs)
    record(
        case="1. worker SIGKILLed while documents ingest",
        done=f"{scale.kills} kills during {len(docs)} documents",
        lost=len(failed) + sum(check.values()),
        errors=f"{len(failed)} failed",
        latency=f"{elapsed:.0f} s in all vs {undisturbed:.0f} s undisturbed",
        recovery=f"max {max(recoveries):.0f} s from up to progress",
    )
    assert failed == {}
    assert check == NO_LOSS
    assert max(recoveries) < 60
    assert elapsed < undisturbed + 60 * scale.kills


def test_a_document_that_kills_the_worker_fails_and_the_rest_are_indexed(
    api: httpx.Client, stack: Settings, record: Callable[..., None]
) -> None:
    # Parsing 1,500 pages takes seconds: long enough to be caught in the act and killed,
    # every time, as a document that crashes the worker would.
    poison = ("poison.pdf", samples.pdf(*(f"Page {i} of a long report." for i in range(1500))))
    others = corpus(8, "bystander")
    jobs = upload_all(api, "poison", [poison, *others])
    kills = 0
    started = time.monotonic()
    while (job := api.get(f"/v1/jobs/{jobs[0]}").json())["state"] != "failed":
        assert time.monotonic() - started < 300, job
        if job["state"] == "parsing" and job["deliveries"] > kills:  # parsing, this delivery
            _kill(stack, "worker")
            kills += 1
            embedded.up(stack, print)
        time.sleep(0.05)
    wait_terminal(api, "poison", 1 + len(others), 300)
    final = states(api, "poison")
    bystanders = {d: r["state"] for d, r in final.items() if d != "poison.pdf"}
    record(
        case="2. a document that kills the worker whenever it is parsed",
        done=f"{kills} kills, {len(others)} other documents",
        lost=sum(s != "indexed" for s in bystanders.values()),
        errors=f"poison failed after {job['deliveries'] - 1} deliveries: {job['reason']}",
        latency=f"{time.monotonic() - started:.0f} s",
        recovery="-",
    )
    assert kills == Settings().max_deliveries
    assert "gave up after 3 deliveries" in final["poison.pdf"]["reason"]
    assert set(bystanders.values()) == {"indexed"}
