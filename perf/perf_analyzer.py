"""perf_analyzer sweep over concurrency 1..16 with real text: CSV, markdown table, PNG chart.

python -m perf.perf_analyzer [MODEL]   (default: embed; or `make perf`)
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from export.corpus import chunks
from export.run import cpu_isa
from orchestrator.cli.tritonserver import TritonProcess
from perf.common import RESULTS, bench_settings, run_perf_analyzer

CONCURRENCY = (1, 2, 4, 8, 16)
COLUMNS = (
    "Concurrency",
    "Inferences/Second",
    "p50 latency",
    "p99 latency",
    "Server Queue",
    "Server Compute Infer",
)


def main(model: str = "embed") -> None:
    texts = chunks(600)
    seconds = float(os.environ.get("PERF_SECONDS", "5"))
    with tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(Path(tmp))
        with TritonProcess.start(settings) as server:
            server.wait_ready()
            rows = [run_perf_analyzer(settings, model, texts, c, seconds) for c in CONCURRENCY]
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"perf_analyzer_{model}"
    with stem.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"`{model}` over gRPC, perf_analyzer 2.51, {len(texts)} real prose chunks; CPU {cpu_isa()}",
        "",
        "| concurrency | texts/s | p50 ms | p99 ms | queue ms | compute ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms = [
            r[k] / 1000
            for k in ("p50 latency", "p99 latency", "Server Queue", "Server Compute Infer")
        ]
        lines.append(
            f"| {r['Concurrency']:.0f} | {r['Inferences/Second']:.1f} | "
            + " | ".join(f"{v:.1f}" for v in ms)
            + " |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    _chart(rows, stem.with_suffix(".png"), model)
    print("\n".join(lines))


def _chart(rows: list[dict[str, float]], path: Path, model: str) -> None:
    conc = [r["Concurrency"] for r in rows]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(conc, [r["Inferences/Second"] for r in rows], "o-", color="tab:blue")
    left.set_xlabel("concurrency")
    left.set_ylabel("texts/s", color="tab:blue")
    left.set_xscale("log", base=2)
    right = left.twinx()
    for key, style in (("p50 latency", "s--"), ("p99 latency", "^--")):
        right.plot(conc, [r[key] / 1000 for r in rows], style, color="tab:red", label=key)
    right.set_ylabel("latency ms", color="tab:red")
    right.legend(loc="upper left")
    left.set_title(f"Triton `{model}` (perf_analyzer, gRPC)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main(*sys.argv[1:2])
