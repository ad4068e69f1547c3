"""`tritonrag export`'s report in the terminal: each int8 and OpenVINO candidate against fp32
(quality only for those judged: export judges candidates fastest first)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def show_export(console: Console, report: dict[str, Any]) -> None:
    """The export report as a table: each int8 and OpenVINO candidate against fp32."""
    fp32 = report["fp32"]
    candidates = report["int8"] | report.get("openvino", {})
    console.print(
        f"fp32: recall@10 {fp32['recall@10']:.4f}, MRR@10 {fp32['mrr@10']:.4f} on "
        f"{fp32['queries']} known-item queries; {fp32['texts_per_s']} texts/s"
    )
    table = Table(
        "candidate", "mean cos", "recall@10 Δ", "MRR@10 Δ", "top-10 overlap", "texts/s",
        "verdict", caption="Δ: points against fp32 [95 % paired bootstrap interval]",
    )  # fmt: skip
    for name, r in candidates.items():
        quality = (
            [f"{r['parity']['mean_cosine']:.4f}", _delta(r["recall@10_delta"]),
             _delta(r["mrr@10_delta"]), f"{r['top10_overlap_vs_fp32']:.3f}"]
            if r["judged"] else ["-"] * 4
        )  # fmt: skip
        verdict = r["verdict"].split(":")[0].split(",")[0]
        table.add_row(name, *quality, str(r["texts_per_s"]), verdict)
    console.print(table)
    for name, r in candidates.items():
        if r["failed"]:
            console.print(f"{name} failed: " + "; ".join(r["failed"]))
        elif not r["judged"]:
            console.print(f"{name} {r['verdict']}")
    console.print(f"CPU: {report['cpu_isa']}; `embed` serves [bold]{report['embed_serves']}[/bold]")


def _delta(d: dict[str, float]) -> str:
    return f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]"
