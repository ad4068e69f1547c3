"""Does a lone query want another layout than ingestion? Raw, in-process, one run.

    python -m perf.query_layout

For each exported variant (`embed_fp32`, `embed_int8`, and `embed`, whichever engine won): a
short query, one text per call, on a session with 1 thread and on one with all cores, idle and
while an ingest-shaped load (real chunks, 8 per call, one single-threaded session: what one
served instance gives ingestion) runs beside it. Ingestion's own best layout is
`perf.side_by_side`'s raw column.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from export.corpus import chunks, known_items
from export.run import cpu_isa
from model_repository.backend.encoder import OnnxEncoder
from perf.common import RESULTS, bench_settings, engine_of, save_results

CALLS = int(os.environ.get("PERF_CALLS", "300"))


def latencies(encoder: Any, queries: list[str]) -> list[float]:
    out = []
    for i in range(CALLS):
        start = time.perf_counter()
        encoder.encode([queries[i % len(queries)]])
        out.append((time.perf_counter() - start) * 1000)
    return out


def measure(folder: Any, queries: list[str], load: list[str], cores: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for threads in sorted({1, cores}):
        encoder = OnnxEncoder(folder, threads=threads)
        encoder.encode(queries[:1])
        for busy in (False, True):
            stop = threading.Event()
            ingest = OnnxEncoder(folder, threads=1)
            worker = threading.Thread(target=_bulk, args=(ingest, load, stop)) if busy else None
            if worker:
                worker.start()
                time.sleep(0.5)
            ms = latencies(encoder, queries)
            stop.set()
            if worker:
                worker.join()
            plural = "s" if threads > 1 else ""
            key = f"{threads} thread{plural}, {'ingest beside' if busy else 'idle'}"
            rows[key] = {
                "p50_ms": round(float(np.percentile(ms, 50)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
            }
    return rows


def _bulk(encoder: Any, load: list[str], stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        encoder.encode(load[i : i + 8] or load[:8])
        i = (i + 8) % len(load)


def main() -> None:
    settings = bench_settings(RESULTS / ".query_layout")
    cores = len(os.sched_getaffinity(0))
    queries = known_items(200)[1]
    load = chunks(300)
    results: dict[str, Any] = {"cpu": cpu_isa(), "cores": cores, "calls": CALLS, "models": {}}
    for model in ("embed_fp32", "embed_int8", "embed"):
        folder = settings.model_repository / model / "1"
        if not (folder / "variant.json").exists():
            continue
        results["models"][model] = {
            "engine": engine_of(folder),
            "layouts": measure(folder, queries, load, cores),
        }
        print(model, results["models"][model], flush=True)
    lines = [
        f"One short query per call, {CALLS} calls, {cores} cores, {results['cpu']}.",
        "",
        "| model | engine | layout | p50 ms | p99 ms |",
        "|---|---|---|---:|---:|",
    ]
    for model, row in results["models"].items():
        for layout, ms in row["layouts"].items():
            lines.append(
                f"| {model} | {row['engine']} | {layout} | {ms['p50_ms']} | {ms['p99_ms']} |"
            )
    save_results("query_layout", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
