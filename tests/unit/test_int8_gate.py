"""The int8 gate's arithmetic: ranks, recall@10, MRR@10, the paired interval, the verdict."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console

from export import parity, quantize
from export.run import gate_failures, judge_fastest_first
from model_repository.backend.encoder import Matrix
from orchestrator.cli.export_report import show_export


def _unit_rows(rows: list[list[float]]) -> Matrix:
    m = np.asarray(rows, dtype=np.float32)
    return np.asarray(m / np.linalg.norm(m, axis=1, keepdims=True), dtype=np.float32)


def test_the_rank_counts_paragraphs_closer_than_the_source() -> None:
    corpus = _unit_rows([[1, 0], [0.9, 0.1], [0, 1]])
    queries = _unit_rows([[1, 0.05], [0, 1], [1, 0]])
    ranks = parity.target_ranks(corpus, queries, [1, 2, 2])
    assert ranks.tolist() == [1, 0, 2]
    assert parity.recall_at(ranks, k=2).tolist() == [1.0, 1.0, 0.0]
    assert parity.reciprocal_rank_at(ranks, k=2).tolist() == [0.5, 1.0, 0.0]


def test_the_interval_holds_the_mean_and_is_empty_for_equal_models() -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2, 1000).astype(np.float64)
    same = parity.paired_delta(base, base)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    worse = base.copy()
    worse[:30] = 0.0  # 30 hits lost at most, out of 1000
    delta = parity.paired_delta(worse, base)
    lost = float(base[:30].sum()) / 1000
    assert delta.mean == -lost and delta.low < delta.mean < delta.high <= 0.0


def _result(cosine: float, recall_low: float, mrr_low: float) -> dict[str, Any]:
    return {
        "parity": {"mean_cosine": cosine},
        "recall@10_delta": {"mean": recall_low / 2, "low": recall_low, "high": 0.0},
        "mrr@10_delta": {"mean": mrr_low / 2, "low": mrr_low, "high": 0.0},
    }


def test_a_candidate_fails_on_cosine_or_a_possible_loss_over_one_point() -> None:
    assert gate_failures(_result(0.995, -0.009, -0.004)) == []
    assert len(gate_failures(_result(0.989, -0.001, -0.001))) == 1
    (why,) = gate_failures(_result(0.995, -0.002, -0.011))
    assert why.startswith("mrr@10") and "-1.10" in why
    assert len(gate_failures(_result(0.98, -0.02, -0.02))) == 3


def test_candidates_run_from_all_int8_to_the_feed_forward_kept_fp32() -> None:
    names = [
        f"/0/encoder/layer.{i}/{part}/MatMul"
        for i in range(2)
        for part in ("attention/self/query", "intermediate/dense", "output/dense")
    ]
    ranked = [names[5], names[2], names[1], names[0]]
    whole, partial = quantize.whole_schemes(), quantize.partial_schemes(names, ranked)
    assert all(not s.keep_fp32 for s in whole)
    assert all(s.keep_fp32 and s.method == "dynamic" for s in partial)  # slower than all-matmul
    found = {s.name: s for s in whole + partial}
    assert found["all-matmul"].keep_fp32 == ()
    assert found["keep-2-most-sensitive-fp32"].keep_fp32 == (names[5], names[2])
    assert set(found["feed-forward-fp32"].keep_fp32) == {names[1], names[2], names[4], names[5]}
    assert {s.method for s in found.values()} == {"dynamic", "optimized", "static"}


def _timed(**speeds: float) -> dict[str, dict[str, Any]]:
    return {name: {"texts_per_s": speed} for name, speed in speeds.items()}


def test_candidates_are_judged_fastest_first_until_one_passes() -> None:
    judged: list[str] = []

    def check(name: str, result: dict[str, Any]) -> list[str]:
        judged.append(name)
        return ["mean cosine too low"] if name == "fastest" else []

    results = _timed(slow=30.0, fastest=50.0, second=40.0, slowest=10.0)
    assert judge_fastest_first(results, check, 20.0, judge_all=False) == "second"
    assert judged == ["fastest", "second"]  # nothing slower than a pass could be chosen
    assert results["fastest"]["verdict"] == "failed: mean cosine too low"
    assert results["second"] == {"texts_per_s": 40.0, "judged": True, "failed": [],
                                 "verdict": "passed"}  # fmt: skip
    assert results["slow"]["verdict"] == "not judged: slower than second, which passed"
    assert not results["slowest"]["judged"] and results["slowest"]["failed"] == []


def test_a_candidate_no_faster_than_the_bar_is_not_judged_unless_all_are() -> None:
    results = _timed(a=20.0, b=12.0)
    assert judge_fastest_first(results, lambda name, result: [], 20.0, judge_all=False) is None
    assert results["a"]["verdict"] == "not judged: 20.0/s <= 20.0/s"
    results = _timed(a=20.0, b=12.0)
    assert judge_fastest_first(results, lambda name, result: [], 20.0, judge_all=True) == "a"
    assert results["b"]["verdict"] == "passed"


def test_the_export_table_shows_candidates_that_were_not_judged() -> None:
    delta = {"mean": -0.001, "low": -0.004, "high": 0.002}
    quality = {"parity": {"mean_cosine": 0.995}, "recall@10_delta": delta,
               "mrr@10_delta": delta, "top10_overlap_vs_fp32": 0.95}  # fmt: skip
    report = {
        "fp32": {"recall@10": 0.98, "mrr@10": 0.9, "queries": 1200, "texts_per_s": 26.1},
        "int8": {"all-matmul": {"texts_per_s": 27.4, "judged": True, "failed": [],
                                "verdict": "published: the fastest that passed"} | quality},
        "openvino": {"openvino-fp32": {"texts_per_s": 21.4, "judged": False, "failed": [],
                                       "verdict": "not judged: 21.4/s <= 30.0/s"}},
        "cpu_isa": "avx2",
        "embed_serves": "fp32",
    }  # fmt: skip
    console = Console(record=True, width=200)
    show_export(console, report)
    text = console.export_text()
    assert "not judged: 21.4/s <= 30.0/s" in text and "published" in text
    assert "`embed` serves fp32" in text
