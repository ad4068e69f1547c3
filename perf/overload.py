"""Overload: search and /v1/embeddings offered 3x what they serve, with the shipped defaults.

For each lane, in one run:
1. capacity: a closed loop of as many clients as the lane admits (its `max_*` setting) ->
   requests/s served and the latency they see, the bound accepted requests should keep;
2. overload: an open loop at 3x that rate -> share refused, how fast the 429s come (target
   p99 <= 50 ms), accepted p99 against capacity p99, any other error (must be none);
3. recovery: at once an open loop at half capacity, one-second windows -> seconds until a
   window has no refusal and its p99 is back within capacity p99 (target <= 60 s).

Search repeats 200 real questions whose embeddings are cached (the retrieval path);
embeddings sends a new paragraph every time (the model). The load generator's own CPU is
reported: it shares the two cores with the stack.

`python -m perf.overload` (PERF_SECONDS per phase, default 15) writes
perf/results/overload.{json,md}.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from export.corpus import paragraphs
from orchestrator.settings import Settings
from perf.common import own_stack, save_results

SECONDS = float(os.environ.get("PERF_SECONDS", "15"))
OVERLOAD = 3.0
COLLECTION = "overload"

Request = tuple[str, dict[str, Any]]  # path, JSON body


@dataclass(frozen=True)
class Shot:
    sent: float  # seconds since the phase began
    latency: float
    status: int
    retry_after: str | None


class Http:
    """A minimal HTTP/1.1 keep-alive client for the generator: aiohttp costs several times
    the CPU per request, and here the generator shares the two cores with the stack."""

    def __init__(self, url: str) -> None:
        address = url.split("://", 1)[1]
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, str | None]:
        """(status, Retry-After) of one POST; status 0 when the connection failed."""
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        conn = self.idle.pop() if self.idle else None
        try:
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = conn
            writer.write(head.encode() + data)
            lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = dict(
                (k.strip().lower(), v.strip()) for k, _, v in (x.partition(":") for x in lines[1:])
            )
            await reader.readexactly(int(headers.get("content-length", "0")))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            if conn is not None:
                conn[1].close()
            return 0, None
        if headers.get("connection") == "close":
            writer.close()
        else:
            self.idle.append(conn)
        return int(lines[0].split()[1]), headers.get("retry-after")

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _fire(http: Http, request: Request, t0: float) -> Shot:
    start = time.perf_counter()
    status, retry = await http.post(*request)
    return Shot(start - t0, time.perf_counter() - start, status, retry)


async def closed_loop(
    url: str, requests: Callable[[int], Request], clients: int, seconds: float
) -> list[Shot]:
    shots: list[Shot] = []
    counter = iter(range(1 << 62))
    http = Http(url)
    t0 = time.perf_counter()

    async def client() -> None:
        while time.perf_counter() - t0 < seconds:
            shots.append(await _fire(http, requests(next(counter)), t0))

    await asyncio.gather(*(client() for _ in range(clients)))
    http.close()
    return shots


async def open_loop(
    url: str, requests: Callable[[int], Request], rate: float, seconds: float
) -> list[Shot]:
    """Requests sent on schedule, `rate` per second, whether or not earlier ones returned."""
    http = Http(url)
    t0 = time.perf_counter()
    tasks: list[asyncio.Task[Shot]] = []
    for i in range(int(rate * seconds)):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_fire(http, requests(i), t0)))
    shots = list(await asyncio.gather(*tasks))
    http.close()
    return shots


def _ms(values: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(values, q)), 1) if values else 0.0


def summary(shots: list[Shot], seconds: float) -> dict[str, Any]:
    ok = [s.latency for s in shots if s.status == 200]
    refused = [s for s in shots if s.status == 429]
    others: dict[str, int] = {}
    for s in shots:
        if s.status not in (200, 429):
            others[str(s.status)] = others.get(str(s.status), 0) + 1
    return {
        "sent": len(shots),
        "served_per_s": round(len(ok) / seconds, 1),
        "ok_p50_ms": _ms(ok, 50),
        "ok_p99_ms": _ms(ok, 99),
        "refused": len(refused),
        "refused_share": round(len(refused) / max(1, len(shots)), 3),
        "refused_p50_ms": _ms([s.latency for s in refused], 50),
        "refused_p99_ms": _ms([s.latency for s in refused], 99),
        # Without the first second, when every request also opens its connection.
        "refused_p99_ms_after_1s": _ms([s.latency for s in refused if s.sent >= 1], 99),
        "refused_without_retry_after": sum(not s.retry_after for s in refused),
        "other_errors": others,
    }


def recovery_s(
    url: str, requests: Callable[[int], Request], rate: float, bound_s: float, limit_s: float = 60
) -> tuple[float | None, list[Shot]]:
    """Seconds until a one-second window at `rate` has no refusal or error and its p99
    within `bound_s` (None: not within `limit_s`), and every shot sent meanwhile."""
    shots: list[Shot] = []
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < limit_s:
        window = asyncio.run(open_loop(url, requests, rate, 1.0))
        shots += window
        clean = window and all(s.status == 200 for s in window)
        if clean and np.percentile([s.latency for s in window], 99) <= bound_s:
            return round(elapsed, 1), shots
    return None, shots


def measure_lane(
    url: str, requests: Callable[[int], Request], clients: int, seconds: float
) -> dict[str, Any]:
    cpu0, cpu_wall0 = time.process_time(), time.perf_counter()
    capacity = summary(asyncio.run(closed_loop(url, requests, clients, seconds)), seconds)
    rate = OVERLOAD * max(1.0, capacity["served_per_s"])
    started, cpu = time.perf_counter(), time.process_time()
    overload = summary(asyncio.run(open_loop(url, requests, rate, seconds)), seconds)
    overload_wall = time.perf_counter() - started
    overload_cpu = (time.process_time() - cpu) / overload_wall
    half = max(1.0, rate / OVERLOAD / 2)
    recovered, after = recovery_s(url, requests, half, capacity["ok_p99_ms"] / 1000)
    return {
        "clients": clients,
        "capacity": capacity,
        "offered_per_s": round(rate, 1),
        "overload": overload,
        # Open loop: the phase lasts its seconds plus the slowest request's tail.
        "overload_wall_s": round(overload_wall, 1),
        "accepted_p99_over_capacity_p99": round(
            overload["ok_p99_ms"] / max(capacity["ok_p99_ms"], 0.1), 2
        ),
        "after": summary(after, max(1.0, len(after) / half)),
        "recovery_s": recovered,
        # The generator's share of one core, in the overload phase and over all three.
        "generator_cpu_overload": round(overload_cpu, 2),
        "generator_cpu_share": round(
            (time.process_time() - cpu0) / (time.perf_counter() - cpu_wall0), 2
        ),
    }


def seed(url: str, docs: int = 20) -> list[str]:
    """A collection of real prose; returns questions (first sentences) to search for."""
    prose = paragraphs(docs * 20)
    with httpx.Client(base_url=url, timeout=60) as api:
        files = [
            ("files", (f"doc-{i:03d}.txt", "\n\n".join(prose[i * 20 : (i + 1) * 20]).encode()))
            for i in range(docs)
        ]
        jobs = api.post(f"/v1/collections/{COLLECTION}/documents", files=files).json()
        for job in jobs["documents"]:
            for _ in range(1200):
                state = api.get(f"/v1/jobs/{job['job_id']}").json()["state"]
                if state in ("indexed", "failed"):
                    break
                time.sleep(0.1)
        questions = [p.split(". ")[0][:200] for p in prose[:200]]
        for q in questions:  # cache each question's embedding
            api.post(f"/v1/collections/{COLLECTION}/search", json={"query": q, "top_k": 5})
    return questions


def run_all(settings: Settings, seconds: float = SECONDS) -> dict[str, Any]:
    url = f"http://127.0.0.1:{settings.port}"
    questions = seed(url)
    texts = paragraphs(4000)

    def search(i: int) -> Request:
        return f"/v1/collections/{COLLECTION}/search", {
            "query": questions[i % len(questions)],
            "top_k": 5,
        }

    def embed(i: int) -> Request:
        return "/v1/embeddings", {"input": f"{texts[i % len(texts)]} ({i})"}

    return {
        "seconds": seconds,
        "search": measure_lane(url, search, settings.max_searches, seconds),
        "embeddings": measure_lane(url, embed, settings.max_embeddings, seconds),
    }


def report(r: dict[str, Any]) -> str:
    lines = [
        f"# Overload at {OVERLOAD:g}x capacity ({r['seconds']:g} s per phase, shipped defaults)",
        "",
        "| lane | capacity req/s (p99 ms) | offered req/s | served req/s | refused | 429 p50 / p99 "
        "ms (p99 after 1 s) | accepted p99 ms (/ capacity p99) | other errors | recovery s "
        "| generator CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lane in ("search", "embeddings"):
        m = r[lane]
        cap, over = m["capacity"], m["overload"]
        lines.append(
            f"| {lane} | {cap['served_per_s']} ({cap['ok_p99_ms']}) | {m['offered_per_s']} "
            f"| {over['served_per_s']} | {over['refused_share']:.0%} "
            f"| {over['refused_p50_ms']} / {over['refused_p99_ms']} "
            f"({over['refused_p99_ms_after_1s']}) "
            f"| {over['ok_p99_ms']} ({m['accepted_p99_over_capacity_p99']}) "
            f"| {over['other_errors'] or 0} | {m['recovery_s']} "
            f"| {m['generator_cpu_overload']:.0%} |"
        )
    lines += [
        "",
        "Targets: 429 p99 <= 50 ms, accepted p99 near capacity p99, no other errors, "
        "recovery <= 60 s. Capacity is a closed loop of `max_searches` / `max_embeddings` "
        "clients; generator CPU is the load generator's share of one core while it offers 3x.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    with own_stack() as settings:
        results = run_all(settings)
    save_results("overload", results, report(results))


if __name__ == "__main__":
    main()
