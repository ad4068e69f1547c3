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
MODES = ("dense", "sparse", "hybrid")
ANSWER_MODES = ("generate", "quote", "auto")


def bad_modes(modes: list[str], answer_modes: list[str]) -> str | None:
    """Why the modes asked for are refused, or None."""
    for name, values, allowed in [
        ("--mode", modes, MODES),
        ("--answer-mode", answer_modes, ANSWER_MODES),
    ]:
        wrong = [v for v in values if v not in allowed]
        if wrong:
            return f"{name} {wrong[0]!r}: choose from {' | '.join(allowed)}"
    return None


def run(
    base: str,
    api_key: str | None,
    collection: str,
    cases: list[score.Case],
    console: Console,
    modes: list[str | None] | None = None,
    answer_modes: list[str | None] | None = None,
) -> list[dict[str, Any]]:
    """One run per retrieval mode x answer mode (None: the server's setting), each with one
    row per case: its retrieval and answer scores, the answer and its latencies."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    combos = [(m, a) for m in modes or [None] for a in answer_modes or [None]]
    runs: list[dict[str, Any]] = [{"mode": m, "answer_mode": a, "rows": []} for m, a in combos]
    with (
        httpx.Client(base_url=base, headers=headers, timeout=300) as http,
        Progress(console=console, transient=True) as progress,
    ):
        task = progress.add_task(f"asking {collection}", total=len(cases) * len(combos))
        for case in cases:
            ranked: dict[str | None, list[str]] = {}
            for run_ in runs:
                mode = run_["mode"]
                if mode not in ranked:  # one search per retrieval mode
                    ranked[mode] = _ranked(http, collection, case.question, mode)
                row: dict[str, Any] = {"id": case.id, "question": case.question}
                row |= score.retrieval(case, ranked[mode])
                row |= _ask(http, collection, case, _options(mode, run_["answer_mode"]))
                run_["rows"].append(row)
                progress.advance(task)
    return runs


def _options(mode: str | None, answer_mode: str | None) -> dict[str, str]:
    options = {"mode": mode, "answer_mode": answer_mode}
    return {k: v for k, v in options.items() if v is not None}


def _ranked(http: httpx.Client, collection: str, question: str, mode: str | None) -> list[str]:
    """Documents in the order their best chunk ranks."""
    body: dict[str, Any] = {"query": question, "top_k": SEARCH_K} | _options(mode, None)
    response = http.post(f"/v1/collections/{collection}/search", json=body)
    response.raise_for_status()
    return list(dict.fromkeys(h["document_id"] for h in response.json()["data"]))


def _ask(
    http: httpx.Client, collection: str, case: score.Case, options: dict[str, str]
) -> dict[str, Any]:
    start = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    cited: list[str] = []
    done: dict[str, Any] = {}
    checked: list[dict[str, Any]] | None = None
    body = {"question": case.question, "stream": True} | options
    with http.stream("POST", f"/v1/collections/{collection}/ask", json=body) as response:
        if response.status_code != 200:
            response.read()
            return {"error": f"{response.status_code}: {response.text}"}
        for kind, data in events(response):
            if kind == "token":
                first = first or time.perf_counter()
                text.append(data["text"])
            elif kind == "grounding":
                checked = data["grounding"]
            elif kind == "citations":
                cited = [c["document_id"] for c in data["citations"]]
            elif kind == "done":
                done = data
            elif kind == "error":
                return {"error": f"{data['type']}: {data['message']}"}
    answer = done.get("answer") or "".join(text).strip()  # an auto fallback replaced the tokens
    generated = done.get("generated")
    return score.answer(
        case, answer, cited, checked if done.get("covered") else None, generated
    ) | {
        "answer": answer,
        "answered_by": done.get("answer_mode"),
        "generated": generated,
        "grounding": checked,
        "first_token_ms": round(1000 * ((first or time.perf_counter()) - start), 1),
        "total_ms": round(1000 * (time.perf_counter() - start), 1),
    }


def report(
    console: Console, collection: str, runs: list[dict[str, Any]], out: Path
) -> list[dict[str, Any]]:
    """Print a summary row per run, write eval-<collection>.json and .md into `out`; the runs
    with their summaries."""
    for run_ in runs:
        run_["summary"] = score.summarize(run_["rows"])
        run_["summary"]["errors"] = sum("error" in r for r in run_["rows"])
    shown = ["questions", *score.HEADLINE, "first_token_ms_p50", "total_ms_p50", "errors"]
    table = Table("mode / answer mode", *shown, title=f"eval of {collection}")
    for run_ in runs:
        table.add_row(score.label(run_), *(str(run_["summary"][k]) for k in shown))
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"eval-{collection}"
    record = {"collection": collection, "runs": runs}
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    title = f"Eval of {collection} ({len(runs[0]['rows'])} questions)"
    stem.with_suffix(".md").write_text(score.markdown(runs, title))
    console.print(f"wrote {stem}.json and {stem}.md")
    return runs
