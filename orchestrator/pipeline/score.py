"""Scoring an evaluation run: retrieval hit@k and MRR, fact in the answer, the right document
cited, latencies. Pure functions over what the API returned, so `tritonrag eval`, perf/ and
tests score the same way.

An eval file is JSON lines, one question each: `question`, `document` (the id of the document
the answer is in, or a list of the ids that hold it) and, optionally, `answer` (a regular
expression the answer must match, case-insensitive) and `id`.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ErrorCode, TritonRagError

KS = (1, 3, 5, 10)


@dataclass(frozen=True)
class Case:
    id: str
    question: str
    documents: tuple[str, ...]  # any of them holds the answer
    answer: str | None = None  # regex

    def fact(self, text: str) -> bool | None:
        """Whether the answer states the fact; None when the case gives no pattern."""
        if self.answer is None:
            return None
        return re.search(self.answer, text, re.IGNORECASE) is not None


def load_cases(path: Path) -> list[Case]:
    """The cases of a JSONL file; a bad line is an error naming its line number."""
    cases: list[Case] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            document = raw["document"]
            documents = (document,) if isinstance(document, str) else tuple(document)
            case = Case(
                str(raw.get("id", number)), str(raw["question"]), documents, raw.get("answer")
            )
            if not documents or not all(isinstance(d, str) for d in documents):
                raise TypeError("document is an id or a list of ids")
            if case.answer is not None:
                re.compile(case.answer)
        except (ValueError, KeyError, TypeError, re.error) as exc:
            raise TritonRagError(
                ErrorCode.INVALID_INPUT, f"{path}:{number}: not an eval case ({exc})"
            ) from exc
        if not case.question.strip():
            raise TritonRagError(ErrorCode.EMPTY_INPUT, f"{path}:{number}: the question is blank")
        cases.append(case)
    if not cases:
        raise TritonRagError(ErrorCode.EMPTY_INPUT, f"{path}: no questions")
    return cases


def retrieval(case: Case, ranked_documents: list[str]) -> dict[str, Any]:
    """hit@k for each k and the reciprocal rank of the case's best-ranked document (0 if none
    was found)."""
    rank = next((i for i, d in enumerate(ranked_documents, 1) if d in case.documents), None)
    row: dict[str, Any] = {f"hit@{k}": rank is not None and rank <= k for k in KS}
    row["rr"] = 1.0 / rank if rank else 0.0
    return row


def answer(case: Case, text: str, cited_documents: list[str]) -> dict[str, Any]:
    return {
        "fact": case.fact(text),
        "cites_document": any(d in cited_documents for d in case.documents),
        "cites_anything": bool(cited_documents),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates over the rows (a rate over the rows that have the field), latency percentiles."""
    summary: dict[str, Any] = {"questions": len(rows)}
    fields = [f"hit@{k}" for k in KS] + ["rr", "fact", "cites_document", "cites_anything"]
    for name in fields:
        values = [float(r[name]) for r in rows if r.get(name) is not None]
        summary["mrr" if name == "rr" else name] = (
            round(statistics.fmean(values), 3) if values else None
        )
    for name in ("first_token_ms", "total_ms"):
        values = sorted(float(r[name]) for r in rows if r.get(name) is not None)
        summary[f"{name}_p50"] = round(statistics.median(values), 1) if values else None
        summary[f"{name}_p90"] = round(values[int(0.9 * (len(values) - 1))], 1) if values else None
    return summary


def markdown(summary: dict[str, Any], rows: list[dict[str, Any]], title: str) -> str:
    def rate(value: Any) -> str:
        return "-" if value is None else f"{value:.0%}" if value <= 1 else str(value)

    head = ["hit@1", "hit@5", "hit@10", "mrr", "fact", "cites_document"]
    lines = [
        f"# {title}",
        "",
        "| questions | " + " | ".join(head) + " | first token p50 / p90 ms | total p50 ms |",
        "|---" * (len(head) + 3) + "|",
        f"| {summary['questions']} | "
        + " | ".join(
            f"{summary[h]:.3f}" if h == "mrr" and summary[h] is not None else rate(summary[h])
            for h in head
        )
        + f" | {summary['first_token_ms_p50']} / {summary['first_token_ms_p90']}"
        + f" | {summary['total_ms_p50']} |",
        "",
        "| id | question | rank | fact | cites it | answer |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        rank = round(1 / r["rr"]) if r.get("rr") else "-"
        text = " ".join(str(r.get("answer", "")).split())[:120].replace("|", "\\|")
        fact = {True: "yes", False: "no", None: "-"}[r.get("fact")]
        cited = "yes" if r.get("cites_document") else "no"
        lines.append(f"| {r['id']} | {r['question']} | {rank} | {fact} | {cited} | {text} |")
    return "\n".join(lines) + "\n"
