"""The project's eval set (perf/eval_set.py): 120+ questions over three kinds of text, each
answer present in a document it names."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from orchestrator.pipeline.score import load_cases
from perf.eval_set import build


def test_the_eval_set_has_120_questions_over_three_kinds_each_answerable(tmp_path: Path) -> None:
    questions = build(tmp_path)
    cases = load_cases(questions)  # the format tritonrag eval reads
    assert len(cases) >= 120
    kinds = Counter(c.id.split("-")[0] for c in cases)
    assert set(kinds) == {"stdlib", "project", "settings"} and min(kinds.values()) >= 30, kinds
    for case in cases:
        assert case.answer is not None
        texts = [(tmp_path / "corpus" / d).read_text() for d in case.documents]
        assert any(re.search(case.answer, t, re.IGNORECASE) for t in texts), case
    raw = [json.loads(line) for line in questions.read_text().splitlines()]
    assert len({r["id"] for r in raw}) == len(raw)
