"""Soak: mixed load (ingest, search, embeddings, answers) for a long time on the defaults.

Closed loops with a pause after each request run side by side: searches (4 clients, new and
repeated questions), embeddings (2), answers (1) and ingestion (1 client re-uploading a
rotating set of 30 documents, so the corpus stays the same size and every upload replaces an
older version). After a warm-up
(a fifth of the run), it compares the first third of the measured time with the last:
- errors other than planned rejections (429): must be none;
- p99 drift per kind (last third / first third - 1): target <= 10 %;
- resident memory per process of the stack (Triton with its backend stubs), growth from the
  end of warm-up to the end: target <= 50 MB each;
- every uploaded document indexed in the end.

`python -m perf.soak` (SOAK_SECONDS, default 1800) writes perf/results/soak.{json,md}; the
reliability suite runs a 2-minute form.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from export.corpus import paragraphs
from orchestrator.cli import launcher as embedded
from orchestrator.settings import Settings
from perf.common import own_stack, save_results

SECONDS = float(os.environ.get("SOAK_SECONDS", "1800"))
COLLECTION = "soak"
DOCUMENTS = 30
CLIENTS = {"search": 4, "embeddings": 2, "answers": 1, "ingest": 1}
# Pause after each request: a busy team's traffic, not a saturating benchmark (closed loops
# without pauses starved the answers: 4 of 4 timed out waiting for a first token).
PAUSE_S = {"search": 0.05, "embeddings": 0.1, "answers": 0.5, "ingest": 1.0}
PLANNED = {200, 202, 429}


@dataclass(frozen=True)
class Sample:
    kind: str
    at: float
    latency: float
    status: int


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and all its descendants (Triton's stubs are its children)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, frontier = {pid}, [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier and p not in family]
        family.update(kids)
        frontier = kids
    total = 0.0
    for member in family:
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        line = next((x for x in status.splitlines() if x.startswith("VmRSS:")), "VmRSS: 0 kB")
        total += int(line.split()[1]) / 1024
    return total


def memory(settings: Settings) -> dict[str, float]:
    out = {}
    for part in embedded.parts(settings):
        pid = embedded.running_pid(part, settings)
        if pid is not None:
            out[part.name] = round(rss_mb(pid), 1)
    return out


def documents(version: int) -> list[tuple[str, bytes]]:
    prose = paragraphs(DOCUMENTS * 8)
    return [
        (
            f"soak-{i:02d}.txt",
            (f"Version {version}.\n\n" + "\n\n".join(prose[i * 8 : (i + 1) * 8])).encode(),
        )
        for i in range(DOCUMENTS)
    ]


class Soak:
    def __init__(self, url: str, seconds: float) -> None:
        self.url = url
        self.seconds = seconds
        self.samples: list[Sample] = []
        self.jobs: list[str] = []
        self.t0 = 0.0
        prose = paragraphs(2000)
        self.questions = [p.split(". ")[0][:200] for p in prose[: DOCUMENTS * 8]]
        self.texts = prose

    async def _timed(
        self, session: aiohttp.ClientSession, kind: str, path: str, **kwargs: Any
    ) -> Any:
        start = time.perf_counter()
        async with session.post(self.url + path, **kwargs) as response:
            body = await response.json(content_type=None)
            status = response.status
        self.samples.append(Sample(kind, start - self.t0, time.perf_counter() - start, status))
        return body

    async def _loop(self, session: aiohttp.ClientSession, kind: str, client: int) -> None:
        i = client
        while time.perf_counter() - self.t0 < self.seconds:
            i += CLIENTS[kind]
            if kind == "search":
                # Every other query new: the model and the cache both in the path.
                q = self.questions[i % len(self.questions)]
                query = q if i % 2 else f"{q} ({i})"
                await self._timed(
                    session,
                    kind,
                    f"/v1/collections/{COLLECTION}/search",
                    json={"query": query, "top_k": 5},
                )
            elif kind == "embeddings":
                text = f"{self.texts[i % len(self.texts)]} ({i})"
                await self._timed(session, kind, "/v1/embeddings", json={"input": text})
            elif kind == "answers":
                q = self.questions[i % len(self.questions)]
                await self._timed(
                    session, kind, f"/v1/collections/{COLLECTION}/ask", json={"question": q}
                )
            else:
                name, body = documents(i)[i % DOCUMENTS]
                form = aiohttp.FormData()
                form.add_field("files", body, filename=name, content_type="text/plain")
                answer = await self._timed(
                    session, kind, f"/v1/collections/{COLLECTION}/documents", data=form
                )
                self.jobs += [d["job_id"] for d in answer.get("documents", [])]
            await asyncio.sleep(PAUSE_S[kind])

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self.t0 = time.perf_counter()
            await asyncio.gather(
                *(self._loop(session, kind, c) for kind, n in CLIENTS.items() for c in range(n))
            )


async def _seed(url: str) -> None:
    """The collection exists and holds every document before the clock starts."""
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        for name, body in documents(0):
            form.add_field("files", body, filename=name, content_type="text/plain")
        async with session.post(f"{url}/v1/collections/{COLLECTION}/documents", data=form) as r:
            jobs = [d["job_id"] for d in (await r.json())["documents"]]
        await _wait_jobs(session, url, jobs, 600)


async def _wait_jobs(
    session: aiohttp.ClientSession, url: str, jobs: list[str], timeout_s: float
) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        for job in jobs:
            if states.get(job) not in ("indexed", "failed"):
                async with session.get(f"{url}/v1/jobs/{job}") as r:
                    states[job] = (await r.json())["state"]
        if all(states.get(j) in ("indexed", "failed") for j in jobs):
            break
        await asyncio.sleep(1)
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    return counts


def _p99(samples: list[Sample]) -> float | None:
    return (
        round(1000 * float(np.percentile([s.latency for s in samples], 99)), 1) if samples else None
    )


def run_all(settings: Settings, seconds: float = SECONDS) -> dict[str, Any]:
    url = f"http://127.0.0.1:{settings.port}"
    asyncio.run(_seed(url))
    soak = Soak(url, seconds)
    warm_up = seconds / 5
    measured: dict[str, dict[str, float]] = {}

    async def sample_memory() -> None:
        await asyncio.sleep(warm_up)
        measured["after_warm_up"] = memory(settings)

    async def both() -> None:
        await asyncio.gather(soak.run(), sample_memory())

    asyncio.run(both())
    measured["end"] = memory(settings)

    async def finish() -> dict[str, int]:
        async with aiohttp.ClientSession() as session:
            return await _wait_jobs(session, url, soak.jobs, 600)

    final = asyncio.run(finish())
    third = (seconds - warm_up) / 3
    kinds: dict[str, Any] = {}
    for kind in CLIENTS:
        mine = [s for s in soak.samples if s.kind == kind]
        first = [s for s in mine if warm_up <= s.at < warm_up + third and s.status in (200, 202)]
        last = [s for s in mine if s.at >= seconds - third and s.status in (200, 202)]
        p_first, p_last = _p99(first), _p99(last)
        kinds[kind] = {
            "requests": len(mine),
            "rejected_429": sum(s.status == 429 for s in mine),
            "errors": sum(s.status not in PLANNED for s in mine),
            "p99_first_ms": p_first,
            "p99_last_ms": p_last,
            "p99_drift": round(p_last / p_first - 1, 3) if p_first and p_last else None,
        }
    growth = {
        name: round(measured["end"][name] - mb, 1)
        for name, mb in measured["after_warm_up"].items()
        if name in measured["end"]
    }
    return {
        "seconds": seconds,
        "warm_up_s": warm_up,
        "kinds": kinds,
        "memory_mb": measured,
        "memory_growth_mb": growth,
        "uploads": len(soak.jobs),
        "upload_states": final,
    }


def report(r: dict[str, Any]) -> str:
    lines = [
        f"# Soak: {r['seconds']:g} s of mixed load ({r['warm_up_s']:g} s warm-up), defaults",
        "",
        "| kind | requests | 429 | other errors | p99 first third ms | p99 last third ms "
        "| drift (<= 10 %) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, k in r["kinds"].items():
        drift = "-" if k["p99_drift"] is None else f"{k['p99_drift']:+.1%}"
        lines.append(
            f"| {kind} | {k['requests']} | {k['rejected_429']} | {k['errors']} "
            f"| {k['p99_first_ms']} | {k['p99_last_ms']} | {drift} |"
        )
    lines += ["", "| process | RSS after warm-up MB | RSS at end MB | growth MB (<= 50) |"]
    lines.append("|---|---|---|---|")
    for name, growth in r["memory_growth_mb"].items():
        lines.append(
            f"| {name} | {r['memory_mb']['after_warm_up'][name]} | {r['memory_mb']['end'][name]} "
            f"| {growth:+.1f} |"
        )
    lines += ["", f"Uploads during the run: {r['uploads']}, final states {r['upload_states']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    with own_stack() as settings:
        results = run_all(settings)
    save_results("soak", results, report(results))


if __name__ == "__main__":
    main()
