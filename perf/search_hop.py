"""How a search reaches the worker: a Celery task or a plain Redis list, in one run.

For each `search_transport` the embedded stack is started on its own, one collection is
ingested through the API, and `/v1/collections/{c}/search` is driven by 1 and 8 users, with
cached query embeddings (the hop and the store) and with new query texts (Triton embeds
them). Besides latency it reports the CPU the stack's processes spent per search (API,
worker, Triton with its stubs, Redis), which is what bounds throughput on 2 cores.

`python -m perf.search_hop` (PERF_SECONDS per measurement) writes
perf/results/search_hop.{json,md}.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import psutil

from orchestrator.cli import launcher as embedded
from orchestrator.settings import Settings
from perf.common import own_stack, save_results
from perf.ingest_search import documents, ingest, search_latency

SECONDS = float(os.environ.get("PERF_SECONDS", "10"))
TRANSPORTS = ("celery", "redis")
FRESH = 200  # variants of each query text


def stack_cpu_s(settings: Settings) -> dict[str, float]:
    """User + system CPU seconds so far of each stack process (with its children: Triton's
    stubs count as Triton)."""
    spent: dict[str, float] = {}
    for part in embedded.parts(settings):
        pid = embedded.running_pid(part, settings)
        if pid is None:
            continue
        proc = psutil.Process(pid)
        times = [p.cpu_times() for p in [proc, *proc.children(recursive=True)]]
        spent[part.name] = sum(t.user + t.system for t in times)
    return spent


def measure(settings: Settings) -> dict[str, Any]:
    url = f"http://127.0.0.1:{settings.port}"
    docs = documents(4)
    with httpx.Client(base_url=url, timeout=120) as api:
        ingest(api, "hop", docs)
    queries = [p.split(". ")[0][:200].strip() for _, text in docs for p in text.split("\n\n")]
    with httpx.Client(base_url=url, timeout=120) as api:
        for q in queries:  # cached embeddings: the cached runs measure the hop and the store
            api.post("/v1/collections/hop/search", json={"query": q, "top_k": 5})
    runs: dict[str, Any] = {}
    for name, users, fresh in (
        ("cached_c1", 1, False),
        ("cached_c8", 8, False),
        ("new_c1", 1, True),
        ("new_c8", 8, True),
    ):
        # New texts: more variants than a run can send, so none repeats (and hits the cache).
        texts = [f"{q} ({name} {i})" for i in range(FRESH) for q in queries] if fresh else queries
        before = stack_cpu_s(settings)
        run = search_latency(url, "hop", texts, SECONDS, users)
        after, n = stack_cpu_s(settings), max(run["requests"], 1)
        by_part = {k: round((after[k] - before.get(k, 0.0)) / n * 1000, 2) for k in after}
        run["cpu_ms_per_search"] = round(sum(by_part.values()), 2)
        run["cpu_ms_by_process"] = by_part
        runs[name] = run
        print(settings.search_transport, name, run, flush=True)
    return runs


def run_all() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for transport in TRANSPORTS:
        with own_stack(search_transport=transport) as settings:
            results[transport] = measure(settings)
    celery, direct = results["celery"], results["redis"]
    results["redis_over_celery"] = {
        name: {
            "qps": round(direct[name]["qps"] / celery[name]["qps"], 2),
            "p50": round(direct[name]["p50_ms"] / celery[name]["p50_ms"], 2),
            "cpu": round(direct[name]["cpu_ms_per_search"] / celery[name]["cpu_ms_per_search"], 2),
        }
        for name in celery
    }
    return results


def report(r: dict[str, Any]) -> str:
    lines = [
        "# Search: Celery task vs Redis list (same run)",
        "",
        "| transport | run | searches/s | p50 ms | p99 ms | stack CPU ms per search | of it, "
        "by process |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for transport in TRANSPORTS:
        for name, run in r[transport].items():
            parts = ", ".join(f"{k} {v}" for k, v in run["cpu_ms_by_process"].items() if v)
            lines.append(
                f"| {transport} | {name} | {run['qps']} | {run['p50_ms']} | {run['p99_ms']} "
                f"| {run['cpu_ms_per_search']} | {parts} |"
            )
    lines += [
        "",
        "redis / celery: " + ", ".join(f"{k} {v}" for k, v in r["redis_over_celery"].items()),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    results = run_all()
    save_results("search_hop", results, report(results))


if __name__ == "__main__":
    main()
