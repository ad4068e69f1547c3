"""Resident memory of the embedded stack after `tritonrag up` and a warm-up (uploads,
searches, embeddings), per part, with Triton's python-backend stubs counted per model.

    python -m perf.memory       -> perf/results/memory.{json,md}

Then again at the peak while a bulk ingest, embeddings and searches run together.

The issue's budget (1 GB) is for the stack without the LLM: the `llm` model's stub and the
llm-lane worker are reported on their own lines.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from orchestrator.cli import launcher as embedded
from orchestrator.settings import Settings
from perf.common import own_stack, save_results
from perf.ingest_search import documents, ingest
from perf.soak import rss_mb

LLM_PARTS = ("llm-worker",)
LOAD_DOCS = 60
LOAD_USERS = 4


def _stub_models(triton_pid: int) -> dict[str, float]:
    """RSS of each python-backend stub under Triton, summed by the model it serves."""
    models: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != triton_pid or b"stub" not in args[0]:
            continue
        # argv[1] is the model version's model.py: <repository>/<model>/1/model.py
        model = Path(args[1].decode()).parent.parent.name
        models[model] = models.get(model, 0.0) + rss_mb(int(entry.name))
    return models


def _warm_up(settings: Settings) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=120) as api:
        files = [("files", (f"d{i}.txt", f"Warm-up document {i}. " * 200)) for i in range(8)]
        jobs = api.post("/v1/collections/mem/documents", files=files).json()["documents"]
        for job in jobs:
            while api.get(f"/v1/jobs/{job['job_id']}").json()["state"] not in ("indexed", "failed"):
                time.sleep(0.2)
        for i in range(50):
            api.post("/v1/embeddings", json={"input": f"text {i}"}).raise_for_status()
            body = {"query": f"warm-up question {i}", "top_k": 5}
            api.post("/v1/collections/mem/search", json=body).raise_for_status()


def snapshot(settings: Settings) -> dict[str, Any]:
    """Every part's RSS now, Triton's stubs by model, and the totals."""
    parts: dict[str, float] = {}
    stubs: dict[str, float] = {}
    for part in embedded.parts(settings):
        pid = embedded.running_pid(part, settings)
        if pid is None:
            continue
        parts[part.name] = round(rss_mb(pid), 1)
        if part.name == "triton":
            stubs = {m: round(mb, 1) for m, mb in sorted(_stub_models(pid).items())}
    llm = stubs.get("llm", 0.0) + sum(parts.get(p, 0.0) for p in LLM_PARTS)
    total = sum(parts.values())
    return {
        "parts_mb": parts,
        "triton_stubs_mb": stubs,
        "total_mb": round(total, 1),
        "total_without_llm_mb": round(total - llm, 1),
        "loaded_models": sorted(stubs),
    }


def under_load(settings: Settings) -> dict[str, Any]:
    """The largest snapshot, one a second, while a bulk ingest (LOAD_DOCS documents) and
    LOAD_USERS users sending embeddings (8 texts) and searches run together."""
    url = f"http://127.0.0.1:{settings.port}"
    stop = threading.Event()

    def user(k: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as api:
            i = 0
            while not stop.is_set():  # a 429 is an answer too: the load is what counts here
                texts = [f"user {k} text {i}.{j} " * (10 + 30 * j) for j in range(8)]
                api.post("/v1/embeddings", json={"input": texts})
                api.post("/v1/collections/mem/search", json={"query": f"{k} {i}", "top_k": 5})
                i += 1

    def bulk() -> None:
        with httpx.Client(base_url=url, timeout=120) as api:
            ingest(api, "mem-load", documents(LOAD_DOCS))

    threads = [threading.Thread(target=user, args=(k,)) for k in range(LOAD_USERS)]
    threads.append(threading.Thread(target=bulk))
    for t in threads:
        t.start()
    peak = snapshot(settings)
    while threads[-1].is_alive():
        time.sleep(1)
        now = snapshot(settings)
        peak = now if now["total_mb"] > peak["total_mb"] else peak
    stop.set()
    for t in threads:
        t.join()
    return peak


def measure(settings: Settings) -> dict[str, Any]:
    _warm_up(settings)
    return {"after_warm_up": snapshot(settings), "under_load_peak": under_load(settings)}


def report(r: dict[str, Any]) -> str:
    idle, load = r["after_warm_up"], r["under_load_peak"]
    lines = [
        "# Resident memory (MB) after `tritonrag up` and warm-up, and at its peak under load",
        "",
        f"Load: {LOAD_DOCS} documents ingested while {LOAD_USERS} users send embeddings (8 texts "
        "each) and searches; sampled every second.",
        "",
        "| part | after warm-up | peak under load |",
        "|---|---:|---:|",
        *(
            f"| {name} | {mb:.0f} | {load['parts_mb'].get(name, 0):.0f} |"
            for name, mb in idle["parts_mb"].items()
        ),
        *(
            f"| triton stub: `{m}` | {mb:.0f} | {load['triton_stubs_mb'].get(m, 0):.0f} |"
            for m, mb in idle["triton_stubs_mb"].items()
        ),
        f"| **total** | **{idle['total_mb']:.0f}** | **{load['total_mb']:.0f}** |",
        f"| **total without the LLM** (its stub, the llm-lane worker) | "
        f"**{idle['total_without_llm_mb']:.0f}** | **{load['total_without_llm_mb']:.0f}** |",
        "",
        "Triton's line includes its stubs. Command: `python -m perf.memory`.",
    ]
    return "\n".join(lines)


def main() -> None:
    with own_stack() as settings:
        results = measure(settings)
    save_results("memory", results, report(results))
    print(report(results))


if __name__ == "__main__":
    main()
