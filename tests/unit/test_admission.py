"""Admission: a full lane answers 429 at once and gives its slot back however a request ends."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
from starlette.types import Receive, Scope, Send

from orchestrator.api.admission import LAG_PROBES, Admission, Lane
from orchestrator.api.metrics import Metrics


def _gate(limit: int, metrics: Metrics | None = None) -> tuple[Admission, asyncio.Event]:
    release = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        if scope["path"] == "/s/boom":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    lanes = [Lane("search", re.compile(r"^/s/[a-z]+$"), limit)]
    return Admission(app, lanes, metrics or Metrics()), release


async def test_a_full_lane_refuses_at_once_with_retry_after() -> None:
    metrics = Metrics()
    gate, release = _gate(limit=2, metrics=metrics)
    transport = httpx.ASGITransport(gate)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        held = [asyncio.create_task(client.post("/s/a")) for _ in range(2)]
        await asyncio.sleep(0.05)
        refused = await client.post("/s/a")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "overloaded"
        assert "search lane is full" in refused.json()["error"]["message"]
        got = client.get("/s/a")  # not POST: not this lane's work, not counted
        release.set()
        assert (await got).status_code == 200
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert (await client.post("/s/a")).status_code == 200
    sample = metrics.registry.get_sample_value
    assert sample("tritonrag_requests_shed_total", {"lane": "search"}) == 1
    assert sample("tritonrag_lane_in_flight", {"lane": "search"}) == 0


async def test_a_failed_request_gives_its_slot_back() -> None:
    gate, release = _gate(limit=1)
    release.set()
    transport = httpx.ASGITransport(gate, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/s/boom")).status_code == 500
        assert (await client.post("/s/a")).status_code == 200
    assert gate.lanes[0].in_flight == 0


async def test_a_lagging_event_loop_refuses_more_than_one_request_per_lane() -> None:
    gate, release = _gate(limit=10)
    transport = httpx.ASGITransport(gate)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        held = asyncio.create_task(client.post("/s/a"))  # starts the lag probe
        try:
            await asyncio.sleep(0.05)
            for _ in range(LAG_PROBES + 1):  # a backlog: every probe wakes up late
                time.sleep(0.04)
                await asyncio.sleep(0.001)  # the probe wakes up late, and sleeps again
            refused = await client.post("/s/a")
            assert refused.status_code == 429, refused.text
            assert "busy" in refused.json()["error"]["message"]
            await asyncio.sleep(0.1)  # the loop keeps up again
            admitted = asyncio.create_task(client.post("/s/a"))
            await asyncio.sleep(0.02)
        finally:
            release.set()
        assert (await held).status_code == 200 and (await admitted).status_code == 200


async def test_one_late_wake_up_is_not_a_backlog() -> None:
    # On 2 cores busy with inference the scheduler stalls the API for a slice now and then.
    gate, release = _gate(limit=10)
    transport = httpx.ASGITransport(gate)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        held = asyncio.create_task(client.post("/s/a"))
        try:
            await asyncio.sleep(0.05)
            time.sleep(0.08)
            await asyncio.sleep(0.012)
            admitted = asyncio.create_task(client.post("/s/a"))
            await asyncio.sleep(0.02)
        finally:
            release.set()
        assert (await held).status_code == 200 and (await admitted).status_code == 200
