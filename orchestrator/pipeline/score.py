"""Scoring an evaluation run: retrieval hit@k and MRR, fact in the answer, the right document
cited, the answer's supported sentences and how far "supported" can be trusted, latencies.
Pure functions over what the API returned, so `tritonrag eval`, perf/ and tests score the
same way.

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


def answer(
    case: Case,
    text: str,
    cited_documents: list[str],
    grounding: list[dict[str, Any]] | None = None,
    generated: str | None = None,
) -> dict[str, Any]:
    """The answer's scores; with the API's grounding report (of `generated`, the text an auto
    fallback replaced, else of `text`) also its sentences supported and whether those hold
    the fact."""
    row: dict[str, Any] = {
        "fact": case.fact(text),
        "cites_document": any(d in cited_documents for d in case.documents),
        "cites_anything": bool(cited_documents),
    }
    if grounding is None:
        return row
    supported = [g["text"] for g in grounding if g["supported"]]
    return row | {
        "sentences": len(grounding),
        "sentences_supported": len(supported),
        "supported_with_fact": sum(bool(case.fact(t)) for t in supported) if case.answer else None,
        "checked_fact": case.fact(text if generated is None else generated),
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
    summary |= grounding_summary(rows)
    for name in ("first_token_ms", "total_ms"):
        values = sorted(float(r[name]) for r in rows if r.get(name) is not None)
        summary[f"{name}_p50"] = round(statistics.median(values), 1) if values else None
        summary[f"{name}_p90"] = round(values[int(0.9 * (len(values) - 1))], 1) if values else None
    return summary


def grounding_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`supported`: the share of all answer sentences supported; `precision`: the share of
    supported sentences that state the expected fact; the fact in the checked text when all
    its sentences are supported against when none is."""
    graded = [r for r in rows if r.get("sentences")]
    sentences = sum(r["sentences"] for r in graded)
    supported = sum(r["sentences_supported"] for r in graded)
    with_fact = [r for r in graded if r.get("supported_with_fact") is not None]
    held = sum(r["supported_with_fact"] for r in with_fact)
    pool = sum(r["sentences_supported"] for r in with_fact)

    def fact_when(test: Any) -> float | None:
        facts = [float(r["checked_fact"]) for r in with_fact if test(r)]
        return round(statistics.fmean(facts), 3) if facts else None

    return {
        "supported": round(supported / sentences, 3) if sentences else None,
        "precision": round(held / pool, 3) if pool else None,
        "fact_all_supported": fact_when(lambda r: r["sentences_supported"] == r["sentences"]),
        "fact_none_supported": fact_when(lambda r: r["sentences_supported"] == 0),
        "all_supported": len([r for r in graded if r["sentences_supported"] == r["sentences"]]),
        "none_supported": len([r for r in graded if r["sentences_supported"] == 0]),
    }


HEADLINE = [
    "hit@1",
    "hit@5",
    "mrr",
    "fact",
    "cites_document",
    "supported",
    "precision",
    "fact_all_supported",
    "fact_none_supported",
]


def _rate(value: Any) -> str:
    return "-" if value is None else f"{value:.0%}" if value <= 1 else str(value)


def label(run: dict[str, Any]) -> str:
    """`retrieval mode / answer mode` of a run; "default" where the server's setting ruled."""
    return f"{run.get('mode') or 'default'} / {run.get('answer_mode') or 'default'}"


def markdown(runs: list[dict[str, Any]], title: str) -> str:
    """One summary row per run (`mode`, `answer_mode`, `summary`, `rows`), then each run's
    rows, one per question."""
    lines = [
        f"# {title}",
        "",
        "| mode / answer mode | questions | "
        + " | ".join(HEADLINE)
        + " | first token p50 / p90 ms | total p50 ms |",
        "|---" * (len(HEADLINE) + 4) + "|",
    ]
    for run in runs:
        summary = run["summary"]
        cells = [
            f"{summary[h]:.3f}" if h == "mrr" and summary[h] is not None else _rate(summary[h])
            for h in HEADLINE
        ]
        lines.append(
            f"| {label(run)} | {summary['questions']} | "
            + " | ".join(cells)
            + f" | {summary['first_token_ms_p50']} / {summary['first_token_ms_p90']}"
            + f" | {summary['total_ms_p50']} |"
        )
    for run in runs:
        lines += _rows(run)
    return "\n".join(lines) + "\n"


def _rows(run: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## {label(run)}",
        "",
        "| id | question | rank | fact | cites it | supported | by | answer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in run["rows"]:
        rank = round(1 / r["rr"]) if r.get("rr") else "-"
        text = " ".join(str(r.get("answer", "")).split())[:120].replace("|", "\\|")
        fact = {True: "yes", False: "no", None: "-"}[r.get("fact")]
        cited = "yes" if r.get("cites_document") else "no"
        held = f"{r['sentences_supported']}/{r['sentences']}" if "sentences" in r else "-"
        by = r.get("answered_by") or "-"
        question = r["question"].replace("|", "\\|")
        lines.append(
            f"| {r['id']} | {question} | {rank} | {fact} | {cited} | {held} | {by} | {text} |"
        )
    return lines
