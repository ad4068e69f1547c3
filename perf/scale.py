"""How the store's cost grows with the corpus, Qdrant's int8 scalar quantization off and on.

    python -m perf.scale      (PERF_SCALE=10000,100000 by default; add 1000000 for the 1M run)

Per size and setting, in a fresh process that has loaded the worker's modules, so its memory
is a worker's: the points are written through `EdgeVectors` (the worker's store) as the
worker writes them, `embed_batch` (32) per upsert -> upserts/s; the background
HNSW build the worker runs, started by the last batch but one -> seconds from the last
write until the index is live (the last batch stays unindexed, searched exactly); 1,000
searches one at a time (top 5, with payload) -> p50/p99 ms; the process's resident memory;
the shard's size on disk; recall@5 against exact (brute-force) neighbours, so the cost of
quantization in quality shows. Vectors are real corpus embeddings plus noise, as in
perf.ingest_search: embedding a million chunks here would take hours, and perf.ingest_search
measures that rate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from numpy.typing import NDArray

from model_repository.backend.encoder import Matrix
from orchestrator.cli.launcher import WORKER_MALLOC
from orchestrator.clients.edge import EdgeVectors
from orchestrator.clients.vectors import VectorModel, VectorPoint
from orchestrator.settings import Settings
from perf.common import noisy_batches, save_results

SIZES = [int(n) for n in os.environ.get("PERF_SCALE", "10000,100000").split(",")]
SEARCHES = 1000
BATCH = 5000
# The same searches again at each HNSW ef (None: the index's ef_construct, 100).
EF_SWEEP = [
    None if v == "default" else int(v)
    for v in os.environ.get("PERF_EF", "default,64,128,256,512").split(",")
]


def seeds(path: Path) -> None:
    """400 real chunks and their embeddings (the served model's export) into `path`.npy and
    `path`.json, in the parent: the measured processes then hold no model."""
    from export.corpus import chunks
    from model_repository.backend.encoder import OnnxEncoder

    folder = Settings().model_repository / "embed" / "1"
    texts = chunks(400)
    vectors, _ = OnnxEncoder(folder, threads=2).encode(texts)
    np.save(path.with_suffix(".npy"), vectors)
    path.with_suffix(".json").write_text(json.dumps(texts))


def one(points: int, quantization: str, folder: Path, seed_file: Path) -> dict[str, Any]:
    """Write, index and search one collection; runs in its own process."""
    import workers.tasks  # noqa: F401  (what a worker process holds besides its store)

    base = np.load(seed_file.with_suffix(".npy"))
    texts = json.loads(seed_file.with_suffix(".json").read_text())
    settings = Settings()  # the worker's: its batch size and its search ef
    per_upsert = settings.embed_batch
    rng = np.random.default_rng(0)
    # One HNSW build, started by the last batch but one, as perf.ingest_search fills its shard.
    store = EdgeVectors(
        folder,
        index_threshold=max(1, points - BATCH),
        quantization=quantization,
        hnsw_ef=settings.search_hnsw_ef,
    )
    start = time.perf_counter()
    for offset, idx, rows in noisy_batches(base, points, rng, BATCH):
        for first in range(0, len(idx), per_upsert):
            part = range(first, min(first + per_upsert, len(idx)))
            store.upsert(
                "scale",
                VectorModel("perf.scale", base.shape[1]),
                [
                    VectorPoint(
                        f"{offset + k:032x}",
                        rows[k].astype(np.float32).tolist(),
                        {"document_id": f"d{(offset + k) // 50}", "text": texts[idx[k]]},
                    )
                    for k in part
                ],
            )
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    while store.indexing("scale"):
        time.sleep(0.5)
    index_s = time.perf_counter() - start
    queries = base[rng.integers(0, len(base), SEARCHES)] + rng.normal(
        scale=0.03, size=(SEARCHES, base.shape[1])
    )
    ms, hits = _searches(store, queries)
    # Before the sweep and the exact neighbours below hold more. File-backed pages (the
    # mmapped segments) are the kernel's to drop under pressure; anonymous memory is not.
    memory = psutil.Process().memory_info()
    rss, anon = memory.rss / 2**20, (memory.rss - memory.shared) / 2**20
    unindexed = store.unindexed("scale")
    sweep = {}
    for ef in EF_SWEEP:
        store.hnsw_ef = ef
        sweep[ef] = _searches(store, queries)
    store.close()
    exact = _exact(base, points, queries)
    return {
        "points": points,
        "quantization": quantization,
        "upserts_per_s": round(points / write_s),
        "index_wait_s": round(index_s, 1),
        "unindexed": unindexed,
        "search_p50_ms": round(float(np.percentile(ms, 50)), 2),
        "search_p99_ms": round(float(np.percentile(ms, 99)), 2),
        "rss_mb": round(rss),
        "rss_anon_mb": round(anon),
        "disk_mb": round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20),
        "hnsw_ef": settings.search_hnsw_ef,
        "recall@5": _recall(exact, hits),
        "ef_sweep": [
            {
                "hnsw_ef": ef,
                "search_p50_ms": round(float(np.percentile(ef_ms, 50)), 2),
                "search_p99_ms": round(float(np.percentile(ef_ms, 99)), 2),
                "recall@5": _recall(exact, ef_hits),
            }
            for ef, (ef_ms, ef_hits) in sweep.items()
        ],
    }


def _searches(store: EdgeVectors, queries: Matrix) -> tuple[NDArray[np.float64], list[set[int]]]:
    """Each query alone, top 5 with payload: (latencies in ms, the ids found)."""
    latencies, hits = [], []
    for q in queries:
        t0 = time.perf_counter()
        found = store.search("scale", q.astype(np.float32).tolist(), 5, {})
        latencies.append(time.perf_counter() - t0)
        hits.append({int(h.id.replace("-", ""), 16) for h in found})
    return np.array(latencies, dtype=np.float64) * 1000, hits


def _recall(exact: list[set[int]], hits: list[set[int]]) -> float:
    """Share of the exact top 5 found."""
    found = sum(len(got & want) for got, want in zip(hits, exact, strict=True))
    return round(found / (5 * len(hits)), 4)


def _exact(base: Matrix, points: int, queries: Matrix) -> list[set[int]]:
    """Each query's exact top 5 ids; the corpus regenerated batch by batch from its seed."""
    rng = np.random.default_rng(0)
    unit = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    best = np.full((len(unit), 5), -2.0, dtype=np.float32)
    best_ids = np.zeros((len(unit), 5), dtype=np.int64)
    for offset, idx, rows in noisy_batches(base, points, rng, BATCH):
        scores = np.concatenate([best, unit @ rows.astype(np.float32).T], axis=1)
        ids = np.concatenate(
            [best_ids, np.broadcast_to(offset + np.arange(len(idx)), (len(unit), len(idx)))], axis=1
        )
        top = np.argpartition(-scores, 5, axis=1)[:, :5]
        best, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    return [set(row.tolist()) for row in best_ids]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        seed_file = Path(tmp) / "seeds"
        seeds(seed_file)
        for points in SIZES:
            for quantization in ("none", "int8"):
                store = Path(tmp) / f"{points}-{quantization}"
                command = [sys.executable, "-m", "perf.scale", str(points), quantization]
                command += [str(store), str(seed_file)]
                env = WORKER_MALLOC | dict(os.environ)  # as the stack starts its worker
                out = subprocess.run(
                    command, check=True, capture_output=True, text=True, env=env
                ).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
                shutil.rmtree(store)
    save_results("scale", rows, report(rows))


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# How the store's cost grows (qdrant-edge, one process, 384-dim cosine)",
        "",
        "| points | quantization | upserts/s | index live after s | search p50 / p99 ms | "
        "recall@5 vs exact | RSS MB (anonymous) | disk MB |",
        "|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['points']:,} | {r['quantization']} | {r['upserts_per_s']:,} | "
            f"{r['index_wait_s']} | {r['search_p50_ms']} / {r['search_p99_ms']} | "
            f"{r['recall@5']} | {r['rss_mb']:,} ({r['rss_anon_mb']:,}) | {r['disk_mb']:,} |"
        )
    lines += [
        "",
        "The same 1,000 searches again at each HNSW `ef` (candidates kept; default: the "
        "index's ef_construct, 100), p50 / p99 ms and recall@5:",
        "",
        "| points | quantization | "
        + " | ".join(f"ef {s['hnsw_ef'] or 'default'}" for s in rows[0]["ef_sweep"])
        + " |",
        "|---:|---|" + "---|" * len(rows[0]["ef_sweep"]),
    ]
    for r in rows:
        cells = [
            f"{s['search_p50_ms']} / {s['search_p99_ms']}, {s['recall@5']}" for s in r["ef_sweep"]
        ]
        lines.append(f"| {r['points']:,} | {r['quantization']} | " + " | ".join(cells) + " |")
    shipped = rows[0]["hnsw_ef"] or "default"
    lines += ["", f"Shipped `TRITONRAG_SEARCH_HNSW_EF`: {shipped} (the first table)."]
    lines += ["", f"Command: `PERF_SCALE={','.join(map(str, SIZES))} python -m perf.scale`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 5:
        print(json.dumps(one(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))))
    else:
        main()
