"""End-to-end ingestion and search on the embedded stack, against baselines from the same run.

1. raw: the chunks of the corpus embedded straight through Triton (batches of `embed_batch`,
   as many in flight as the worker has threads) -> chunks/s;
2. ingest: the same documents uploaded through the API until every job is indexed
   (upload to searchable) -> chunks/s, and its ratio to raw (target >= 0.85);
3. search: p50/p99 at concurrency 8 over a 100k-chunk collection, idle and while a bulk
   ingest runs (busy p99 <= 2x idle p99), and with new query texts that Triton embeds
   (p99 <= 40 ms at concurrency 8, p50 <= 10 ms for one user). The 100k
   points are written into the shard with the worker stopped (real corpus embeddings plus
   noise: embedding 100k chunks here would take most of an hour), then HNSW-indexed by the
   same background build the worker runs.

`python -m perf.ingest_search` (PERF_DOCS documents, PERF_SECONDS per search run) writes
perf/results/ingest_search.{json,md}.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import aiohttp
import httpx
import numpy as np
import redis

from export.corpus import paragraphs
from model_repository.backend.encoder import Matrix
from orchestrator.cli import launcher as embedded
from orchestrator.clients.edge import EdgeVectors
from orchestrator.clients.triton import TritonEmbedder
from orchestrator.clients.vectors import VectorModel, VectorPoint
from orchestrator.jobs import collections_key, scoped
from orchestrator.pipeline.chunk import Chunker
from orchestrator.settings import Settings
from perf.common import noisy_batches, own_stack, save_results

DOCS = int(os.environ.get("PERF_DOCS", "60"))
SECONDS = float(os.environ.get("PERF_SECONDS", "15"))
POINTS = int(os.environ.get("PERF_POINTS", "100000"))
CONCURRENCY = 8
FRESH = 50  # variants of each query text for the new-text runs


def documents(count: int, per_doc: int = 40) -> list[tuple[str, str]]:
    prose = paragraphs(count * per_doc)
    return [
        (f"doc-{i:04d}.txt", "\n\n".join(prose[i * per_doc : (i + 1) * per_doc]))
        for i in range(count)
    ]


def raw_throughput(settings: Settings, texts: list[str]) -> float:
    batches = [
        texts[i : i + settings.embed_batch] for i in range(0, len(texts), settings.embed_batch)
    ]

    async def run() -> float:
        async with TritonEmbedder.connect(settings) as client:
            await client.embed(texts[:8])  # warm
            gate = asyncio.Semaphore(settings.worker_concurrency)

            async def one(batch: list[str]) -> None:
                async with gate:
                    await client.embed(batch)

            start = time.perf_counter()
            await asyncio.gather(*(one(b) for b in batches))
            return len(texts) / (time.perf_counter() - start)

    return asyncio.run(run())


def ingest(api: httpx.Client, collection: str, docs: list[tuple[str, str]]) -> tuple[float, int]:
    """Upload everything, wait until all are indexed; (chunks/s, chunks). The end is the
    last job's own finished_at, so slow polling (cheap on 2 cores) costs no precision."""
    start = time.time()
    jobs: list[str] = []
    for i in range(0, len(docs), 16):
        files = [("files", (name, text.encode())) for name, text in docs[i : i + 16]]
        response = api.post(f"/v1/collections/{collection}/documents", files=files)
        response.raise_for_status()
        jobs += [d["job_id"] for d in response.json()["documents"]]
    chunks, finished, pending = 0, start, list(jobs)
    while pending:
        job = api.get(f"/v1/jobs/{pending[0]}").json()
        if job["state"] == "failed":
            raise RuntimeError(f"job failed: {job}")
        if job["state"] != "indexed":
            time.sleep(0.5)
            continue
        pending.pop(0)
        chunks += job["chunks_embedded"]
        finished = max(finished, job["finished_at"])
    return chunks / (finished - start), chunks


def fill(settings: Settings, collection: str, seeds: Matrix, texts: list[str]) -> None:
    """POINTS points into the shard, with the worker (its owner) stopped."""
    worker = next(p for p in embedded.parts(settings) if p.name == "worker")
    embedded.down_part(worker, settings)
    # One background HNSW build near the end of the fill, as the worker would run it.
    store = EdgeVectors(settings.vectors_dir, index_threshold=POINTS - 5000)
    name = scoped("default", collection)
    for start, idx, rows in noisy_batches(seeds, POINTS, np.random.default_rng(0)):
        points = [
            VectorPoint(
                f"{start + k:032x}",
                row.astype(np.float32).tolist(),
                {
                    "document_id": f"synthetic-{(start + k) // 50}",
                    "chunk_index": (start + k) % 50,
                    "text": texts[j],
                    "filename": "synthetic.txt",
                    "metadata": {},
                },
            )
            for k, (j, row) in enumerate(zip(idx, rows, strict=True))
        ]
        store.upsert(name, VectorModel(settings.embed_model, seeds.shape[1]), points)
    while store.indexing(name):
        time.sleep(1)
    store.close()
    # Written past the API, so the collection is registered as an upload would have.
    with redis.Redis.from_url(settings.broker_url) as client:
        client.sadd(collections_key("default"), collection)
    embedded.up(settings, print)


SERVER_TIMES = {"x-total-time": "total", "x-inference-time": "triton", "x-queue-time": "queues"}


def search_latency(
    url: str, collection: str, queries: list[str], seconds: float, users: int = CONCURRENCY
) -> dict[str, Any]:
    """Closed loop: `users` users, each sending its next search when the last returns.
    aiohttp, not httpx: on 2 cores httpx's own CPU use was the largest in the measurement."""

    shed = [0]

    # The API's own account of each search (orchestrator/timing.py): its total, the Triton
    # call, the queues and the hop to the worker; what is left is the API's and the store's.
    parts: dict[str, list[float]] = {h: [] for h in SERVER_TIMES}

    async def run() -> list[float]:
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        path = f"{url}/v1/collections/{collection}/search"
        async with aiohttp.ClientSession() as client:

            async def user(offset: int) -> None:
                i = offset
                while time.perf_counter() < deadline:
                    body = {"query": queries[i % len(queries)], "top_k": 5}
                    t0 = time.perf_counter()
                    async with client.post(path, json=body) as r:
                        await r.read()
                        if r.status == 429:  # shed by the API: counted, and the user waits
                            shed[0] += 1
                            await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                            continue
                        if r.status != 200:
                            raise RuntimeError(f"{r.status} {await r.text()} for {body}")
                        for header, values in parts.items():
                            values.append(float(r.headers[header]))
                    latencies.append(time.perf_counter() - t0)
                    i += users

            await asyncio.gather(*(user(k) for k in range(users)))
        return latencies

    ms = np.array(asyncio.run(run())) * 1000
    return {
        "requests": len(ms),
        "shed_429": shed[0],
        "qps": round(len(ms) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "server_p50_ms": {
            name: round(float(np.median(parts[h])), 2) for h, name in SERVER_TIMES.items()
        },
    }


def main() -> None:
    with own_stack() as settings:
        results = run_all(settings)
    save_results("ingest_search", results, report(results))


def run_all(settings: Settings) -> dict[str, Any]:
    docs = documents(DOCS)
    chunker = Chunker.from_model_dir(
        settings.chunking_model_dir, settings.chunk_tokens, settings.chunk_overlap
    )
    texts = [c.text for _, text in docs for c in chunker.split(text)]
    url = f"http://127.0.0.1:{settings.port}"
    results: dict[str, Any] = {"documents": len(docs), "chunks": len(texts)}
    raw = raw_throughput(settings, texts)
    with httpx.Client(base_url=url, timeout=120) as api:
        e2e, indexed = ingest(api, "bench-ingest", docs)
        assert indexed == len(texts), (indexed, len(texts))
        results["ingest"] = {
            "raw_chunks_per_s": round(raw, 2),
            "e2e_chunks_per_s": round(e2e, 2),
            "ratio": round(e2e / raw, 3),
        }
        print(results)
        queries = [q for q in (t.split(". ")[0][:200].strip() for t in texts) if q]
        seeds = asyncio.run(_embed(settings, texts[:400]))
        fill(settings, "bench-100k", seeds, texts[:400])
        for q in queries:  # every query embedding cached: this measures retrieval, not the model
            api.post("/v1/collections/bench-100k/search", json={"query": q, "top_k": 1})
        results["search_cached_idle"] = search_latency(url, "bench-100k", queries, SECONDS)
        # Three copies under new names: the bulk ingest outlasts the measurement window.
        bulk = [(f"{k}-{name}", text) for k in range(3) for name, text in docs]
        busy = threading.Thread(target=ingest, args=(api, "bench-busy", bulk))
        busy.start()
        time.sleep(2)
        results["search_cached_busy"] = search_latency(url, "bench-100k", queries, SECONDS)
        busy.join()
        # More variants than a run can send: a repeated text would be a cached embedding.
        fresh = [f"{q} (variant {k})" for k in range(FRESH) for q in queries]
        results["search_uncached_idle"] = search_latency(url, "bench-100k", fresh, SECONDS)
        fresh = [f"{q} (one user {k})" for k in range(FRESH) for q in queries]
        results["search_uncached_one_user"] = search_latency(url, "bench-100k", fresh, SECONDS, 1)
    idle, loaded = results["search_cached_idle"], results["search_cached_busy"]
    results["busy_over_idle_p99"] = round(loaded["p99_ms"] / idle["p99_ms"], 2)
    return results


async def _embed(settings: Settings, texts: list[str]) -> Matrix:
    async with TritonEmbedder.connect(settings) as client:
        return (await client.embed(texts)).embeddings


SEARCH_RUNS = {
    "search_cached_idle": "search, cached query embedding, idle",
    "search_cached_busy": "search, cached query embedding, during bulk ingest",
    "search_uncached_idle": "search, new query text (Triton embeds it), idle",
    "search_uncached_one_user": "search, new query text, one user",
}


def report(r: dict[str, Any]) -> str:
    ing = r["ingest"]
    lines = [
        f"# Ingestion and search ({r['documents']} documents, {r['chunks']} chunks; "
        f"search over {POINTS} points, concurrency {CONCURRENCY}, {SECONDS:g} s each)",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| raw Triton embedding, chunks/s | {ing['raw_chunks_per_s']} | baseline |",
        f"| upload -> searchable, chunks/s | {ing['e2e_chunks_per_s']} | |",
        f"| ingest / raw | {ing['ratio']} | >= 0.85 |",
    ]
    for key, label in SEARCH_RUNS.items():
        s = r[key]
        target = "p50 <= 10" if key.endswith("one_user") else "p99 <= 40"
        lines.append(
            f"| {label}: p50 / p99 ms ({s['qps']} q/s, {s['shed_429']} shed) | "
            f"{s['p50_ms']} / {s['p99_ms']} | {target} |"
        )
    lines.append(f"| busy p99 / idle p99 | {r['busy_over_idle_p99']} | <= 2 |")
    lines += [
        "",
        "Where a search's time goes, medians of the API's own headers (ms): total in the API, of "
        "it the Triton call (query embedding) and the queues (search batcher + hop to the "
        "worker); the rest is the API's and the store's work. Client = what the client saw.",
        "",
        "| run | client p50 | API total | Triton | queues | rest |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in SEARCH_RUNS:
        s, t = r[key], r[key]["server_p50_ms"]
        rest = t["total"] - t["triton"] - t["queues"]
        lines.append(
            f"| {key} | {s['p50_ms']} | {t['total']} | {t['triton']} | {t['queues']} | {rest:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
