"""What the API adds to one embedding request: tritonrag `/v1/embeddings` against Triton's
own HTTP endpoint, on one embedded stack, the same 500 real RAG chunks, wrk closed loop at
concurrency 32, the two targets alternating PERF_ROUNDS times.

    python -m perf.api_cost     (PERF_SECONDS per point, default 8; PERF_ROUNDS, default 2)

Per point: answered/s, p50/p99, and each stack process's CPU ms per request (Triton's
python-backend stubs count as Triton; requests counted by Triton's statistics, warm-up
included in both). Results: perf/results/api_cost.{md,json}.
"""

from __future__ import annotations

import os
from typing import Any

from export.corpus import chunks
from perf import compare
from perf.common import own_stack, save_results
from perf.search_hop import stack_cpu_s
from perf.side_by_side import inference_count

ROUNDS = int(os.environ.get("PERF_ROUNDS", "2"))
CONCURRENCY = 32


def main() -> None:
    texts = chunks(500)
    compare.SECONDS = float(os.environ.get("PERF_SECONDS", "8"))
    rows: list[dict[str, Any]] = []
    with own_stack(triton_cache_mb=0) as settings:
        model = settings.embed_model
        targets = [
            compare.Target(
                "tritonrag /v1/embeddings",
                f"http://127.0.0.1:{settings.port}/v1/embeddings",
                compare.openai_body(model),
            ),
            compare.Target(
                "Triton HTTP",
                f"http://{settings.triton_http_url}/v2/models/{model}/infer",
                compare.triton_body,
            ),
        ]
        for round_ in range(1, ROUNDS + 1):
            for target in targets:
                cpu, count = stack_cpu_s(settings), inference_count(settings, model)
                row = compare.wrk_point(target, texts, CONCURRENCY)
                spent, done = stack_cpu_s(settings), inference_count(settings, model) - count
                row["round"] = round_
                row["cpu_ms_per_request"] = {
                    k: round((spent[k] - cpu.get(k, 0.0)) / max(done, 1) * 1000, 2) for k in spent
                }
                rows.append(row)
                print(row, flush=True)
    lines = [
        f"# What the API adds: wrk c = {CONCURRENCY}, 500 RAG chunks, one per request",
        "",
        "| round | target | answered/s | p50 ms | p99 ms | CPU ms per request by process |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        by = ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_request"].items() if v >= 0.01)
        lines.append(
            f"| {r['round']} | {r['target']} | {r['rps']:.1f} | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {by} |"
        )
    ratios = [api["rps"] / triton["rps"] for api, triton in zip(rows[::2], rows[1::2], strict=True)]
    lines += [
        "",
        "API / Triton HTTP, answered/s, per round: " + ", ".join(f"{x:.3f}" for x in ratios),
    ]
    save_results("api_cost", {"rows": rows, "api_over_triton": ratios}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
