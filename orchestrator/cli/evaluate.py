"""`tritonrag eval`: ask a running stack every question of an eval file, through its API as a
user would, and score retrieval and answers (orchestrator/pipeline/score.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from orchestrator.cli.ask import events
from orchestrator.pipeline import score

SEARCH_K = max(score.KS)


def run(
    base: str, api_key: str | None, collection: str, cases: list[score.Case], console: Console
) -> list[dict[str, Any]]:
    """One row per case: its retrieval and answer scores, the answer and its latencies."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    rows = []
    with (
        httpx.Client(base_url=base, headers=headers, timeout=300) as http,
        Progress(console=console, transient=True) as progress,
    ):
        task = progress.add_task(f"asking {collection}", total=len(cases))
        for case in cases:
            row: dict[str, Any] = {"id": case.id, "question": case.question}
            row |= score.retrieval(case, _ranked(http, collection, case.question))
            row |= _ask(http, collection, case)
            rows.append(row)
            progress.advance(task)
    return rows


def _ranked(http: httpx.Client, collection: str, question: str) -> list[str]:
    """Documents in the order their best chunk ranks."""
    body = {"query": question, "top_k": SEARCH_K}
    response = http.post(f"/v1/collections/{collection}/search", json=body)
    response.raise_for_status()
    return list(dict.fromkeys(h["document_id"] for h in response.json()["data"]))


def _ask(http: httpx.Client, collection: str, case: score.Case) -> dict[str, Any]:
    start = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    cited: list[str] = []
    body = {"question": case.question, "stream": True}
    with http.stream("POST", f"/v1/collections/{collection}/ask", json=body) as response:
        if response.status_code != 200:
            response.read()
            return {"error": f"{response.status_code}: {response.text}"}
        for kind, data in events(response):
            if kind == "token":
                first = first or time.perf_counter()
                text.append(data["text"])
            elif kind == "citations":
                cited = [c["document_id"] for c in data["citations"]]
            elif kind == "error":
                return {"error": f"{data['type']}: {data['message']}"}
    answer = "".join(text).strip()
    return score.answer(case, answer, cited) | {
        "answer": answer,
        "first_token_ms": round(1000 * ((first or time.perf_counter()) - start), 1),
        "total_ms": round(1000 * (time.perf_counter() - start), 1),
    }


def report(
    console: Console, collection: str, rows: list[dict[str, Any]], out: Path
) -> dict[str, Any]:
    """Print the summary, write eval-<collection>.json and .md into `out`; the summary."""
    summary = score.summarize(rows)
    summary["errors"] = sum("error" in r for r in rows)
    table = Table(*summary, title=f"eval of {collection}")
    table.add_row(*(str(v) for v in summary.values()))
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"eval-{collection}"
    record = {"collection": collection, "summary": summary, "rows": rows}
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    title = f"Eval of {collection} ({len(rows)} questions)"
    stem.with_suffix(".md").write_text(score.markdown(summary, rows, title))
    console.print(f"wrote {stem}.json and {stem}.md")
    return summary
