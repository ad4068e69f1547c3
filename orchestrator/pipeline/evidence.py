"""Evidence, not whole chunks: the sentences of the retrieved chunks that answer the question,
with their neighbours for context, go into the prompt in place of the chunks.

The whole top 5 chunks (~1,050 tokens) made the small model read text it does not need: on 2
cores the first token waited ~6 s. Each sentence is scored by its embedding's cosine with the
question's (the embedding model on Triton, every sentence of every chunk in one batched
request) plus the share of the question's content words it contains; the best
`answer_evidence_sentences` over all chunks are kept with one neighbour on each side, in the
chunk's own order. A chunk none of whose sentences is kept leaves the prompt. Sources keep
their numbers, chunk ids and full text, so citations still point at the stored chunk.
"""

from __future__ import annotations

import functools
import re
from dataclasses import replace

import numpy as np

from orchestrator.clients.vectors import Matrix
from orchestrator.pipeline import injection
from orchestrator.pipeline.generate import Source, content_words

NEIGHBOURS = 1
LEXICAL_WEIGHT = 0.5  # the question's words a sentence holds, beside its cosine
GAP = " … "  # between sentences that were not next to each other
# A sentence ends at . ! ? followed by white space and a capital, digit, quote or bracket; a
# blank line or a list item also ends one.
_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[])|\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)])\s)")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _BOUNDARY.split(text) if s and s.strip()]


@functools.lru_cache(maxsize=4096)
def source_sentences(text: str) -> tuple[str, ...]:
    """A source's sentences that may reach a prompt or a quote: those planted to steer the
    model (pipeline/injection.py) left out, so neither the prompt nor a quote carries them."""
    parts = (s.replace(injection.REMOVED, "").strip() for s in sentences(injection.defuse(text)))
    return tuple(p for p in parts if p)


def overlap(question: set[str], sentence: str) -> float:
    """The share of the question's content words found in the sentence."""
    return len(question & content_words(sentence)) / len(question) if question else 0.0


def ranked(
    question: str, query: Matrix, sources: list[Source], vectors: list[Matrix]
) -> list[tuple[float, int, int]]:
    """(score, source index, sentence index) of every sentence, best first: the cosine with
    the question plus LEXICAL_WEIGHT x the question's words it holds. `vectors[i]` holds the
    embeddings of `source_sentences(sources[i].text)`, `query` the question's (L2-normalised)."""
    words = content_words(question)
    scored = []
    for i, (source, rows) in enumerate(zip(sources, vectors, strict=True)):
        cosines = rows @ np.asarray(query, dtype=np.float32).reshape(-1)
        for j, part in enumerate(source_sentences(source.text)):
            scored.append((float(cosines[j]) + LEXICAL_WEIGHT * overlap(words, part), i, j))
    return sorted(scored, reverse=True)


def choose(
    question: str, query: Matrix, sources: list[Source], vectors: list[Matrix], keep: int
) -> list[Source]:
    """`sources` with `evidence` set to their chosen sentences; those with none dropped."""
    best = ranked(question, query, sources, vectors)[:keep]
    kept: dict[int, set[int]] = {}
    for _, i, j in best:
        last = len(source_sentences(sources[i].text)) - 1
        kept.setdefault(i, set()).update(
            range(max(0, j - NEIGHBOURS), min(last, j + NEIGHBOURS) + 1)
        )
    return [
        replace(source, evidence=_join(source_sentences(source.text), kept[i]))
        for i, source in enumerate(sources)
        if i in kept
    ]


def best_sentences(
    ranking: list[tuple[float, int, int]], sources: list[Source]
) -> list[tuple[int, str]]:
    """(source number, sentence) in the ranking's order, for a quote."""
    return [(sources[i].number, source_sentences(sources[i].text)[j]) for _, i, j in ranking]


def _join(parts: tuple[str, ...], keep: set[int]) -> str:
    """The kept sentences in order, an ellipsis wherever some were left out."""
    out, previous = "" if min(keep) == 0 else "… ", None
    for j in sorted(keep):
        joiner = "" if previous is None else " " if j == previous + 1 else GAP
        out, previous = out + joiner + parts[j], j
    return out if max(keep) == len(parts) - 1 else out + " …"
