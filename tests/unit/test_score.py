"""Eval scoring (orchestrator/pipeline/score.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.pipeline import score

CASE = score.Case("k1", "How often are API keys rotated?", ("keys.md",), r"90\s*days")


def test_cases_load_from_jsonl_and_a_bad_line_is_named(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    lines: list[dict[str, object]] = [
        {"question": "How often are API keys rotated?", "document": "keys.md", "answer": "90"},
        {"id": "b", "question": "When do backups run?", "document": ["backups.txt", "ops.md"]},
    ]
    good.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    cases = score.load_cases(good)
    assert [(c.id, c.documents, c.answer) for c in cases] == [
        ("1", ("keys.md",), "90"),
        ("b", ("backups.txt", "ops.md"), None),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(lines[0]) + '\n{"question": "no document"}\n')
    listed = tmp_path / "listed.jsonl"
    listed.write_text(json.dumps(lines[0] | {"document": [1, 2]}) + "\n")
    with pytest.raises(TritonRagError, match=r"listed\.jsonl:1"):
        score.load_cases(listed)
    with pytest.raises(TritonRagError, match=r"bad\.jsonl:2") as failed:
        score.load_cases(bad)
    assert failed.value.code is ErrorCode.INVALID_INPUT
    regex = tmp_path / "regex.jsonl"
    regex.write_text(json.dumps(lines[0] | {"answer": "(unclosed"}) + "\n")
    with pytest.raises(TritonRagError, match=r"regex\.jsonl:1"):
        score.load_cases(regex)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(TritonRagError, match="no questions"):
        score.load_cases(empty)


def test_retrieval_scores_the_rank_of_the_expected_document() -> None:
    third = score.retrieval(CASE, ["backups.txt", "cafeteria.html", "keys.md"])
    assert (third["hit@1"], third["hit@3"], third["hit@5"], round(third["rr"], 3)) == (
        False,
        True,
        True,
        0.333,
    )
    either = score.Case("e", "q", ("keys.md", "cafeteria.html"))
    assert score.retrieval(either, ["backups.txt", "cafeteria.html", "keys.md"])["rr"] == 0.5
    assert score.answer(either, "x", ["keys.md"])["cites_document"] is True
    missing = score.retrieval(CASE, ["backups.txt"])
    assert not any(missing[f"hit@{k}"] for k in score.KS) and missing["rr"] == 0.0


def test_answers_are_scored_for_the_fact_and_the_citation() -> None:
    assert score.answer(CASE, "Every 90 days [1].", ["keys.md"]) == {
        "fact": True,
        "cites_document": True,
        "cites_anything": True,
    }
    wrong = score.answer(CASE, "Every 30 days.", [])
    assert (wrong["fact"], wrong["cites_document"], wrong["cites_anything"]) == (
        False,
        False,
        False,
    )
    no_pattern = score.Case("x", "q", ("keys.md",))
    assert score.answer(no_pattern, "anything", ["keys.md"])["fact"] is None


def test_summary_rates_skip_what_a_row_does_not_have() -> None:
    rows = [
        {"id": "1", "question": "a", "hit@1": True, "hit@3": True, "hit@5": True,
         "hit@10": True, "rr": 1.0, "fact": True, "cites_document": True,
         "cites_anything": True, "first_token_ms": 100.0, "total_ms": 900.0, "answer": "x"},
        {"id": "2", "question": "b", "hit@1": False, "hit@3": False, "hit@5": True,
         "hit@10": True, "rr": 0.25, "fact": None, "cites_document": False,
         "cites_anything": False, "first_token_ms": 300.0, "total_ms": 1100.0, "answer": "y"},
    ]  # fmt: skip
    summary = score.summarize(rows)
    assert summary["questions"] == 2 and summary["hit@1"] == 0.5 and summary["hit@5"] == 1.0
    assert summary["mrr"] == 0.625 and summary["fact"] == 1.0  # one row has a pattern
    assert summary["first_token_ms_p50"] == 200.0 and summary["total_ms_p50"] == 1000.0
    runs = [{"mode": "hybrid", "answer_mode": None, "summary": summary, "rows": rows}]
    table = score.markdown(runs, "Eval")
    assert "| hybrid / default | 2 | 50% | 100% | 0.625 |" in table
    assert "| 1 | a | 1 | yes | yes | - | - | x |" in table
    assert "| 2 | b | 4 | - | no | - | - | y |" in table


def _checked(*sentences: tuple[str, bool]) -> list[dict[str, object]]:
    return [{"text": text, "supported": ok} for text, ok in sentences]


def test_grounding_is_scored_per_sentence_and_against_the_fact() -> None:
    good = score.answer(CASE, "Every 90 days [1].", [], _checked(("Every 90 days [1].", True)))
    assert (good["sentences"], good["sentences_supported"], good["supported_with_fact"]) == (
        1,
        1,
        1,
    )
    wrong = score.answer(
        CASE,
        "They are kept for 90 days. [1]",  # the quote an auto fallback gave
        [],
        _checked(("Keys rotate every 30 days.", False), ("Rotation matters.", True)),
        generated="Keys rotate every 30 days. Rotation matters.",
    )
    assert wrong["fact"] is True and wrong["checked_fact"] is False  # the quote has it
    assert wrong["supported_with_fact"] == 0
    none = score.answer(CASE, "No idea.", [], _checked(("No idea.", False)))
    summary = score.grounding_summary([good, wrong, none])
    assert summary["supported"] == 0.5  # 2 of the 4 sentences
    assert summary["precision"] == 0.5  # 1 of the 2 supported sentences states the fact
    assert summary["fact_all_supported"] == 1.0 and summary["fact_none_supported"] == 0.0
    assert (summary["all_supported"], summary["none_supported"]) == (1, 1)
    assert score.grounding_summary([score.answer(CASE, "x", [])])["supported"] is None
