"""Grounded answers: each sentence of a generated answer checked against the sources the model
was given, and the quote that stands in for an answer nothing supports.

Entailment is out of reach on 2 cores, so a sentence is *supported* when its best-matching
source sentence (cosine on the embedding model plus word overlap, as evidence.py ranks) is
close in meaning (SUPPORT_COSINE), holds most of its content words (SUPPORT_OVERLAP) and holds
every number and identifier it states. The last test catches the small model's typical
failure: a default stated as another number than the source's ("6379" where it says "6390").
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from orchestrator.clients.vectors import Matrix
from orchestrator.pipeline import evidence
from orchestrator.pipeline.generate import Source, content_words

# Chosen on the project's eval (python -m perf.eval_set ... --save grounding; docs/answers.md):
# at 0.5 / 0.5 answers whose sentences are all supported held the fact 72 % of the time, those
# with none 28 %, a gap as wide as any the sweep found (0.4-0.6 x 0.5-0.7) while still
# supporting a third of the sentences; stricter values support fewer without separating better.
SUPPORT_COSINE = 0.5
SUPPORT_OVERLAP = 0.5
# A heading ("API key rotation.") ranks high on the question's words but answers nothing: a
# quote skips sentences with fewer content words (the integration test's question quoted it).
QUOTE_MIN_WORDS = 4
LEXICAL_WEIGHT = evidence.LEXICAL_WEIGHT  # picks the best source sentence, as for evidence
_MARKER = re.compile(r"\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\]")
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_TOKEN = re.compile(r"[a-z0-9_][a-z0-9_.:/+-]*[a-z0-9_]|[a-z0-9]")
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3}\b)")
Embed = Callable[[list[str]], Awaitable[Matrix]]


@dataclass(frozen=True)
class Checked:
    """One sentence of the answer and what in the sources supports it."""

    text: str  # as the answer wrote it
    supported: bool
    sources: list[int] = field(default_factory=list)  # numbers of the sources that support it
    score: float = 0.0  # cosine with the best source sentence
    overlap: float = 0.0  # share of its content words in that sentence
    missing: list[str] = field(default_factory=list)  # its numbers/identifiers that sentence lacks

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plain(sentence: str) -> str:
    """The sentence without [n] markers or a list bullet: what is compared."""
    return _LIST_ITEM.sub("", _MARKER.sub("", sentence)).strip()


def answer_sentences(answer: str) -> list[str]:
    """The answer's sentences that say something (a bare "[1]" does not)."""
    return [s for s in evidence.sentences(answer) if content_words(plain(s))]


def source_sentences(source: Source) -> list[str]:
    """The sentences of what the model read: the evidence, or the whole chunk."""
    return list(evidence.source_sentences(source.prompt_text.replace("…", "\n\n")))


def _normal(text: str) -> str:
    return _DIGIT_COMMA.sub("", text.lower())


def terms(sentence: str) -> set[str]:
    """Its numbers and identifiers: words holding a digit or an underscore."""
    words = _TOKEN.findall(_normal(plain(sentence)))
    return {w for w in words if "_" in w or any(c.isdigit() for c in w)}


def _has(text: str, term: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(term)}(?![\w])", _normal(text)) is not None


def _passes(cosine: float, share: float, missing: list[str]) -> bool:
    return bool(not missing and float(cosine) >= SUPPORT_COSINE and share >= SUPPORT_OVERLAP)


def check(
    parts: list[str], rows: Matrix, given: list[tuple[int, str]], source_rows: Matrix
) -> list[Checked]:
    """Each answer sentence (`rows`: their embeddings) against the source sentences `given`
    as (source number, sentence) (`source_rows`: theirs); all rows L2-normalised."""
    cosines = np.asarray(rows, np.float32) @ np.asarray(source_rows, np.float32).T
    out = []
    for i, part in enumerate(parts):
        words, wanted = content_words(plain(part)), terms(part)
        shares = [len(words & content_words(s)) / len(words) for _, s in given]
        lacking = [sorted(t for t in wanted if not _has(s, t)) for _, s in given]
        best = max(range(len(given)), key=lambda k: cosines[i, k] + LEXICAL_WEIGHT * shares[k])
        ok = [k for k in range(len(given)) if _passes(cosines[i, k], shares[k], lacking[k])]
        numbers = sorted({given[k][0] for k in ok} - {given[best][0]})
        supported = _passes(cosines[i, best], shares[best], lacking[best])
        out.append(
            Checked(
                part,
                supported,
                [given[best][0], *numbers] if supported else [],
                round(float(cosines[i, best]), 4),
                round(shares[best], 4),
                lacking[best],
            )
        )
    return out


async def ground(
    answer: str, sources: list[Source], embed: Embed, known: dict[str, Any] | None = None
) -> list[Checked]:
    """Check the answer's sentences against `sources`; the answer's sentences and the source
    sentences not in `known` (sentence -> embedding, from the evidence step) are embedded in
    one call of `embed`."""
    parts = answer_sentences(answer)
    given = [(s.number, p) for s in sources for p in source_sentences(s)]
    if not parts or not given:
        return [Checked(p, False, missing=sorted(terms(p))) for p in parts]
    known = known or {}
    todo = list(dict.fromkeys([plain(p) for p in parts] + [p for _, p in given if p not in known]))
    vectors = dict(known) | dict(zip(todo, await embed(todo), strict=True))
    rows = np.stack([vectors[plain(p)] for p in parts])
    return check(parts, rows, given, np.stack([vectors[p] for _, p in given]))


def share(checked: list[Checked]) -> float | None:
    """The share of sentences supported; None when the answer had none to check."""
    return round(sum(c.supported for c in checked) / len(checked), 4) if checked else None


def quote(best: list[tuple[int, str]], count: int) -> tuple[str, list[Checked]]:
    """The `count` best evidence sentences, each with its [n], and their (trivial) report."""
    chosen: list[tuple[int, str]] = []
    for number, sentence in best:
        text = plain(sentence)
        if len(content_words(text)) >= QUOTE_MIN_WORDS and text not in {s for _, s in chosen}:
            chosen.append((number, text))
        if len(chosen) == count:
            break
    lines = [(number, f"{text} [{number}]") for number, text in chosen]
    return " ".join(x for _, x in lines), [Checked(x, True, [n], 1.0, 1.0) for n, x in lines]


def outcome(
    mode: str,
    generated: str,
    checked: list[Checked],
    best: list[tuple[int, str]],
    count: int,
    min_supported: float = 1.0,
) -> dict[str, Any]:
    """The answer's grounding fields: in auto mode an answer with less than `min_supported`
    of its sentences supported gives way to the quote (the generated text stays, under
    `generated`)."""
    fields: dict[str, Any] = {
        "answer": generated,
        "answer_mode": "generate",
        "generated": None,
        "grounding": [c.as_dict() for c in checked],
        "supported": share(checked),
    }
    kept = share(checked) or 0.0
    if mode == "auto" and best and (kept < min_supported or not kept):
        fields |= {"answer": quote(best, count)[0], "answer_mode": "quote", "generated": generated}
    return fields


def quoted(best: list[tuple[int, str]], count: int) -> dict[str, Any]:
    """The grounding fields of answer_mode quote: no LLM, the best sentences cited."""
    text, checked = quote(best, count)
    return {
        "answer": text,
        "answer_mode": "quote",
        "generated": None,
        "grounding": [c.as_dict() for c in checked],
        "supported": share(checked),
    }
