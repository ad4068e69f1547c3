"""Dense, sparse (BM25) and hybrid retrieval side by side on the project's eval set
(perf/eval_set.py: 130+ exact-fact questions over stdlib docstrings, the project's docs and
its settings reference), in one run on a stack of its own with the shipped defaults; hybrid
with each fusion (rrf, the default, then dbsf on a second stack).

Reported per mode and per kind of text: hit@1/5/10 and MRR of the document that holds the
answer, and the search's latency through the API (p50 / p90, the query embedding cached, so
the mode's own cost shows); rows: the questions where hybrid and dense rank differently.

    python -m perf.retrieval_modes     # writes perf/results/retrieval_modes.{json,md}
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from orchestrator.cli.launcher import settings_env
from orchestrator.pipeline import score
from perf.common import own_stack, save_results
from perf.eval_set import COLLECTION, build

MODES = ("dense", "sparse", "hybrid")  # "hybrid" is rrf; the table adds "hybrid-dbsf"
TOP_K = 10


def ranked(http: httpx.Client, question: str, mode: str) -> tuple[list[str], float]:
    """Documents in the order of their best chunk, and the request's milliseconds."""
    start = time.perf_counter()
    response = http.post(
        f"/v1/collections/{COLLECTION}/search",
        json={"query": question, "top_k": TOP_K, "mode": mode},
    )
    elapsed = 1000 * (time.perf_counter() - start)
    response.raise_for_status()
    assert response.json()["mode"] == mode, response.json()["mode"]
    return list(dict.fromkeys(h["document_id"] for h in response.json()["data"])), elapsed


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"questions": len(rows)}
    for k in (1, 5, 10):
        out[f"hit@{k}"] = round(statistics.fmean(r[f"hit@{k}"] for r in rows), 3)
    out["mrr"] = round(statistics.fmean(r["rr"] for r in rows), 3)
    ms = sorted(r["ms"] for r in rows)
    out["ms_p50"] = round(statistics.median(ms), 1)
    out["ms_p90"] = round(ms[int(0.9 * (len(ms) - 1))], 1)
    return out


def run(questions: Path, corpus: Path, fusion: str, modes: tuple[str, ...]) -> dict[str, Any]:
    """Rows per mode on a stack whose hybrid search fuses by `fusion`."""
    cases = score.load_cases(questions)
    exe = str(Path(sys.executable).parent / "tritonrag")
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with own_stack(search_fusion=fusion) as settings:
        env = settings_env(settings)
        subprocess.run([exe, "ingest", str(corpus), "-c", COLLECTION], env=env, check=True)
        base = f"http://127.0.0.1:{settings.port}"
        with httpx.Client(base_url=base, timeout=60) as http:
            for case in cases:  # warm: every query embedding cached, the store's pages read
                ranked(http, case.question, "dense")
            for case in cases:
                for mode in modes:  # interleaved, so drift in the box's speed hits all alike
                    documents, ms = ranked(http, case.question, mode)
                    row = score.retrieval(case, documents) | {"ms": ms}
                    rows[mode].append(row | {"id": case.id, "top": documents[:3]})
    return rows


def compare(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    kinds = sorted({r["id"].split("-")[0] for r in rows["dense"]})
    table = {
        mode: {"all": summary(rows[mode])}
        | {k: summary([r for r in rows[mode] if r["id"].startswith(k + "-")]) for k in kinds}
        for mode in rows
    }
    changed = [
        {"id": d["id"], "dense_rr": d["rr"], "hybrid_rr": h["rr"], "sparse_rr": s["rr"]}
        for d, s, h in zip(rows["dense"], rows["sparse"], rows["hybrid"], strict=True)
        if d["rr"] != h["rr"]
    ]
    return {"summary": table, "changed": changed, "kinds": kinds}


def markdown(record: dict[str, Any]) -> str:
    lines = [
        "# Retrieval modes on the project's eval set (one run, shipped defaults)",
        "",
        "| mode | text | questions | hit@1 | hit@5 | hit@10 | MRR | search p50 / p90 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, parts in record["summary"].items():
        for kind, s in parts.items():
            lines.append(
                f"| {mode} | {kind} | {s['questions']} | {s['hit@1']:.1%} | {s['hit@5']:.1%} "
                f"| {s['hit@10']:.1%} | {s['mrr']:.3f} | {s['ms_p50']} / {s['ms_p90']} |"
            )
    better = sum(c["hybrid_rr"] > c["dense_rr"] for c in record["changed"])
    worse = len(record["changed"]) - better
    lines += [
        "",
        f"Hybrid (rrf) ranks the answer's document higher than dense for {better} questions and "
        f"lower for {worse}.",
        "",
        "| question | dense RR | sparse RR | hybrid RR |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {c['id']} | {c['dense_rr']:.2f} | {c['sparse_rr']:.2f} | {c['hybrid_rr']:.2f} |"
        for c in record["changed"]
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        questions = build(Path(tmp))
        rows = run(questions, Path(tmp) / "corpus", "rrf", MODES)
        other = run(questions, Path(tmp) / "corpus", "dbsf", ("hybrid",))
    rows["hybrid-dbsf"] = other["hybrid"]
    record = compare(rows)
    save_results("retrieval_modes", record, markdown(record))
    print(
        json.dumps(record["summary"]["dense"]["all"]),
        json.dumps(record["summary"]["hybrid"]["all"]),
    )


if __name__ == "__main__":
    main()
