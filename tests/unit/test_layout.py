"""export/layout.py's choice of padded tokens per ONNX Runtime call."""

from __future__ import annotations

from export.layout import choose


def test_the_budget_with_the_least_time_over_both_workloads_wins() -> None:
    # 128 is not the fastest at either, but loses least overall: 1/0.95 + 1/0.97 < 1 + 1/0.8.
    speeds = {
        1: {"queries": 100.0, "chunks": 80.0},
        128: {"queries": 95.0, "chunks": 97.0},
        512: {"queries": 60.0, "chunks": 100.0},
    }
    assert choose(speeds) == 128


def test_a_budget_fastest_at_both_wins_and_ties_go_to_the_smaller() -> None:
    assert choose({1: {"queries": 50.0, "chunks": 50.0}, 64: {"queries": 90, "chunks": 60}}) == 64
    assert choose({1: {"queries": 50.0, "chunks": 50.0}, 64: {"queries": 50, "chunks": 50}}) == 1
