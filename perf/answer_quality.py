"""Answer quality of each candidate LLM, through the project's own answer pipeline.

Documents: the docstrings of 10 standard-library modules (real prose, one document each).
33 questions, each with the fact its answer must contain and the document it comes from.
Retrieval is the project's (same chunker, the published `embed` ONNX model, top answer_top_k,
the relevance threshold); prompts are built by pipeline/generate.py with each model's own
tokenizer and chat template; generation is llama.cpp, greedy, exactly as the Triton `llm`
model runs it. Reported per model: answers containing the fact, answers citing the right
document, load time, generation tokens/s, resident memory, file size.

    python -m perf.answer_quality            # writes perf/results/answer_quality.{json,md}

ANSWER_MODELS=smollm2 limits the models; ANSWER_EVIDENCE=0,6 compares whole chunks (0) with
the evidence sentences the API sends (pipeline/evidence.py; default: both, the setting's
default second); ANSWER_PENALTIES=1.0,1.1 compares llama.cpp repeat penalties (default: the
setting's). Each row also says how many answer tokens came before the fact was stated, and how
many answers ran to the token budget (ANSWER_MAX_TOKENS, default 256): what the budget is
chosen by.
"""

from __future__ import annotations

import importlib
import inspect
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.llm import MODELS, gguf_path
from model_repository.backend.encoder import OnnxEncoder
from orchestrator.clients.chat_template import GGUFTokenizer
from orchestrator.pipeline import evidence, generate
from orchestrator.pipeline.chunk import Chunker
from orchestrator.settings import Settings
from perf.common import save_results

MODULES = ["heapq", "calendar", "tempfile", "uuid", "zlib", "secrets", "difflib", "base64"]
MODULES += ["textwrap", "shutil"]
MAX_TOKENS = int(os.environ.get("ANSWER_MAX_TOKENS", "256"))


@dataclass(frozen=True)
class Case:
    question: str
    facts: tuple[str, ...]  # the answer must contain one of these (case-insensitive)
    document: str


CASES = [
    Case("In heapq, which element of a heap is always the smallest?", ("a[0]", "heap[0]"), "heapq"),
    Case("How long does heapify take to turn a list into a heap?", ("linear", "o(len"), "heapq"),
    Case("Does heapq's heappop return the smallest or the largest item?", ("smallest",), "heapq"),
    Case("Does the heapq API use 0-based or 1-based indexing?", ("0-based",), "heapq"),
    Case(
        "Which day is the first day of the week by default in the calendar module?",
        ("monday",),
        "calendar",
    ),
    Case(
        "Which calendar function sets the first day of the week?", ("setfirstweekday",), "calendar"
    ),
    Case("Which calendar class returns complete HTML pages?", ("htmlcalendar",), "calendar"),
    Case("What does calendar.monthrange return?", ("weekday", "number of days"), "calendar"),
    Case("Which tempfile function is subject to race conditions?", ("mktemp",), "tempfile"),
    Case("What is the default mode of NamedTemporaryFile?", ("w+b",), "tempfile"),
    Case(
        "What happens to a TemporaryDirectory when its context exits?",
        ("removed", "deleted"),
        "tempfile",
    ),
    Case("Which RFC do Python's UUID objects follow?", ("4122",), "uuid"),
    Case("Which uuid function may compromise privacy?", ("uuid1",), "uuid"),
    Case("Which uuid function creates a random UUID?", ("uuid4",), "uuid"),
    Case("Which hash function does uuid3 use?", ("md5",), "uuid"),
    Case("Which hash function does uuid5 use?", ("sha-1", "sha1"), "uuid"),
    Case("Which library is Python's zlib module based on?", ("gnu zip", "gzip"), "zlib"),
    Case("Which compression levels does zlib.compress accept?", ("0-9", "0 to 9"), "zlib"),
    Case("Which checksums can the zlib module compute?", ("adler", "crc"), "zlib"),
    Case("Which PEP describes the secrets module?", ("506",), "secrets"),
    Case(
        "Which secrets function returns a random URL-safe text string?",
        ("token_urlsafe",),
        "secrets",
    ),
    Case(
        "What kind of attack does secrets.compare_digest protect against?", ("timing",), "secrets"
    ),
    Case(
        "Which secrets function returns a random int in the range [0, n)?",
        ("randbelow",),
        "secrets",
    ),
    Case("What is the default cutoff of difflib.get_close_matches?", ("0.6",), "difflib"),
    Case(
        "Which difflib function returns a delta in unified diff format?",
        ("unified_diff",),
        "difflib",
    ),
    Case("Which RFC does the base64 module follow for Base64?", ("3548",), "base64"),
    Case(
        "Which data encodings does the base64 module provide?",
        ("base32", "base85", "ascii85", "base16"),
        "base64",
    ),
    Case("What is the default width of lines wrapped by TextWrapper?", ("70",), "textwrap"),
    Case("What is the default tabsize of TextWrapper?", ("8",), "textwrap"),
    Case("What does textwrap.dedent remove from every line?", ("whitespace",), "textwrap"),
    Case("Which placeholder does TextWrapper append to truncated text?", ("[...]",), "textwrap"),
    Case(
        "Which shutil exception is raised when source and destination are the same file?",
        ("samefileerror",),
        "shutil",
    ),
    Case("Which shutil error is raised when an archive cannot be read?", ("readerror",), "shutil"),
]


def documents() -> dict[str, str]:
    """Each module's docstring followed by its public functions' and classes' docstrings."""
    docs = {}
    for name in MODULES:
        module = importlib.import_module(name)
        parts = [inspect.getdoc(module) or ""]
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or not (inspect.isroutine(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", name) not in (name, None) and not inspect.isbuiltin(obj):
                continue
            if doc := inspect.getdoc(obj):
                parts.append(f"{attr}: {doc}")
        docs[name] = "\n\n".join(parts)
    return docs


class Retriever:
    """The project's chunker and embedding model, cosine top-k over all chunks."""

    def __init__(self, settings: Settings, docs: dict[str, str]) -> None:
        model_dir = settings.chunking_model_dir
        chunker = Chunker.from_model_dir(model_dir, settings.chunk_tokens, settings.chunk_overlap)
        self.encoder = OnnxEncoder(model_dir, threads=2)
        self.chunks = [
            (name, i, chunk.text)
            for name, text in docs.items()
            for i, chunk in enumerate(chunker.split(text))
        ]
        self.matrix, _ = self.encoder.encode([text for _, _, text in self.chunks])

    def evidence(self, question: str, sources: list[generate.Source], keep: int) -> Any:
        """As the API does it (api/answers.py), with the same model run in process."""
        parts = [evidence.source_sentences(x.text) for x in sources]
        rows, _ = self.encoder.encode([p for ps in parts for p in ps])
        query, _ = self.encoder.encode([question])
        vectors, start = [], 0
        for ps in parts:
            vectors.append(rows[start : start + len(ps)])
            start += len(ps)
        return evidence.choose(question, query[0], sources, vectors, keep)

    def hits(self, question: str, top_k: int) -> list[dict[str, Any]]:
        query, _ = self.encoder.encode([question])
        scores = self.matrix @ query[0]
        return [
            {
                "document_id": self.chunks[i][0],
                "chunk_id": f"{self.chunks[i][0]}-{self.chunks[i][1]}",
                "chunk_index": self.chunks[i][1],
                "score": float(scores[i]),
                "text": self.chunks[i][2],
            }
            for i in np.argsort(-scores)[:top_k]
        ]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def evaluate(
    name: str, settings: Settings, retriever: Retriever, keep: int = 0, penalty: float = 1.0
) -> dict[str, Any]:
    from llama_cpp import Llama

    path = gguf_path(name, settings.export_dir)
    before = rss_mb()
    start = time.perf_counter()
    llm = Llama(model_path=str(path), n_ctx=settings.llm_context_tokens, verbose=False)
    load_s = time.perf_counter() - start
    tokenizer = GGUFTokenizer(path)
    rows: list[dict[str, Any]] = []
    tokens, decode_s, first_ms, prompt_total = 0, 0.0, [], 0
    for case in CASES:
        sources = generate.relevant(
            retriever.hits(case.question, settings.answer_top_k), settings.answer_min_score
        )
        if keep and sources:
            sources = retriever.evidence(case.question, sources, keep)
        prompt = generate.build_prompt(
            case.question, sources, tokenizer, settings.llm_context_tokens, MAX_TOKENS
        )
        prompt_total += prompt.prompt_tokens
        start = time.perf_counter()
        first, pieces = 0.0, []
        stream: Any = llm.create_completion(
            tokenizer.render(prompt.messages),
            max_tokens=MAX_TOKENS,
            temperature=0,
            repeat_penalty=penalty,
            stream=True,
        )
        for piece in stream:
            first = first or time.perf_counter()
            if piece["choices"][0]["finish_reason"] is None:
                pieces.append(piece["choices"][0]["text"])
        first_ms.append(1000 * (first - start))
        decode_s += time.perf_counter() - first
        tokens += len(pieces) - 1  # the first token's time is in first_ms
        answer = "".join(pieces).strip()
        fact_at = next(
            (i for i in range(1, len(pieces) + 1) if _has_fact("".join(pieces[:i]), case.facts)),
            None,
        )
        found = generate.citations(answer, prompt.sources)
        cited = {c["document_id"] for c in found}
        rows.append(
            {
                "question": case.question,
                "answer": answer,
                "retrieved": case.document in {s.document_id for s in prompt.sources},
                "has_fact": _has_fact(answer, case.facts),
                "tokens": len(pieces),
                "fact_at_token": fact_at,
                "cites_document": case.document in cited,
                "cites_anything": bool(cited),
                "cites_by_marker": any(c["by"] == "marker" for c in found),
            }
        )
        print(f"[{name}, evidence {keep}, penalty {penalty}] {case.question} -> {answer[:100]!r}")
    n = len(rows)
    stated = sorted(r["fact_at_token"] for r in rows if r["fact_at_token"] is not None)
    return {
        "model": name,
        "evidence_sentences": keep,
        "repeat_penalty": penalty,
        "answer_tokens_p50": int(np.median([r["tokens"] for r in rows])),
        "at_budget": sum(r["tokens"] >= MAX_TOKENS for r in rows),
        "fact_at_token_max": stated[-1] if stated else None,
        "file": str(path),
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "load_s": round(load_s, 3),
        "rss_mb": round(rss_mb() - before, 1),
        "decode_tokens_per_s": round(tokens / decode_s, 1),
        "first_token_p50_ms": round(float(np.median(first_ms)), 1),
        "prompt_tokens_mean": round(prompt_total / n),
        "fact_rate": round(sum(r["has_fact"] for r in rows) / n, 3),
        "cites_right_document_rate": round(sum(r["cites_document"] for r in rows) / n, 3),
        "cites_anything_rate": round(sum(r["cites_anything"] for r in rows) / n, 3),
        "marker_rate": round(sum(r["cites_by_marker"] for r in rows) / n, 3),
        "retrieval_recall": round(sum(r["retrieved"] for r in rows) / n, 3),
        "questions": n,
        "rows": rows,
    }


def _has_fact(answer: str, facts: Any) -> bool:
    return any(f in answer.lower() for f in facts)


def report(results: list[dict[str, Any]]) -> str:
    best = max(results, key=lambda r: (r["fact_rate"], r["cites_right_document_rate"]))
    lines = [
        f"# Answer quality ({results[0]['questions']} questions over {len(MODULES)} documents; "
        f"greedy, at most {MAX_TOKENS} tokens; CPU threads: {os.cpu_count()})",
        "",
        "| model | evidence sentences | repeat penalty | answer has the fact | "
        "cites the right document | ... by an [n] marker | retrieval had it | "
        "answer tokens p50 | answers at the budget | fact stated by token (max) | load s | "
        "first token p50 ms | decode tokens/s | RSS MB | file MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r.get('evidence_sentences') or 'whole chunks'} "
            f"| {r['repeat_penalty']} | "
            f"{r['fact_rate']:.0%} | {r['cites_right_document_rate']:.0%} | "
            f"{r['marker_rate']:.0%} | {r['retrieval_recall']:.0%} | "
            f"{r['answer_tokens_p50']} | {r['at_budget']} | {r['fact_at_token_max']} | "
            f"{r['load_s']} | "
            f"{r['first_token_p50_ms']} | {r['decode_tokens_per_s']} | {r['rss_mb']} | "
            f"{r['file_mb']} |"
        )
    lines += [
        "",
        "Prompts average "
        + ", ".join(f"{r['prompt_tokens_mean']}" for r in results)
        + " tokens in the rows' order (system prompt, up to "
        f"{Settings().answer_top_k} sources, the question); the first token waits for all of "
        "them to be read.",
    ]
    lines += [
        "",
        f"Better by these figures: **{best['model']}**, evidence sentences "
        f"{best.get('evidence_sentences') or 'none (whole chunks)'}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    settings = Settings()
    retriever = Retriever(settings, documents())
    models = os.environ.get("ANSWER_MODELS", ",".join(MODELS)).split(",")
    default = f"0,{settings.answer_evidence_sentences}"
    keeps = [int(k) for k in os.environ.get("ANSWER_EVIDENCE", default).split(",")]
    penalty = str(settings.llm_repeat_penalty)
    penalties = [float(p) for p in os.environ.get("ANSWER_PENALTIES", penalty).split(",")]
    results = [
        evaluate(name, settings, retriever, keep, p)
        for name in models
        for keep in keeps
        for p in penalties
    ]
    save_results("answer_quality", results, report(results))


if __name__ == "__main__":
    main()
