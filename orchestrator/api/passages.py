"""What one question is answered from and how the answer is checked: its retrieval (the
query lane), the evidence sentences of the hits (pipeline/evidence.py), the quote that answers
without the LLM, and the grounding of a generated answer (pipeline/grounding.py), with the
embedding model on Triton at query priority. api/answers.py runs the flow around them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.api.services import Services
from orchestrator.clients.chat_template import Message
from orchestrator.clients.triton import Priority
from orchestrator.clients.vectors import Matrix
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.jobs import scoped
from orchestrator.pipeline import evidence, generate, grounding

Event = dict[str, Any]


@dataclass(frozen=True)
class Question:
    tenant: str
    collection: str
    question: str
    top_k: int
    filters: dict[str, Any] = field(default_factory=dict)
    history: list[Message] = field(default_factory=list)
    mode: str | None = None  # retrieval: dense | sparse | hybrid; None: the search_mode setting
    answer_mode: str | None = None  # generate | quote | auto; None: the answer_mode setting

    @property
    def store_name(self) -> str:
        return scoped(self.tenant, self.collection)


@dataclass(frozen=True)
class Evidence:
    sources: list[generate.Source]  # what the prompt carries (cut to evidence sentences)
    best: list[tuple[int, str]] = field(default_factory=list)  # (number, sentence), best first
    known: dict[str, Any] = field(default_factory=dict)  # sentence -> its embedding
    model: str | None = None  # the embedding model of the query and the sentences


async def check_question(services: Services, q: Question) -> None:
    """Bad input and unknown collections fail before anything runs."""
    s = services.settings
    if not q.question.strip():
        raise TritonRagError(ErrorCode.EMPTY_INPUT, "the question is blank")
    if len(q.question) > s.max_question_chars:
        raise TritonRagError(
            ErrorCode.TOO_LARGE,
            f"the question has {len(q.question)} characters; the limit is {s.max_question_chars}",
        )
    await services.require_collection(q.tenant, q.collection)


async def retrieve(services: Services, q: Question, mode: str) -> Evidence:
    """The relevant hits as numbered sources, cut to their evidence sentences."""
    text = generate.retrieval_text(q.question, q.history)
    vector, live = await services.embed_query(q.store_name, text)
    found = await services.searches.search(
        live.physical, vector, q.top_k, q.filters, text=text, mode=q.mode, model=live.model
    )
    sources = generate.relevant(found.hits, services.settings.answer_min_score)
    return await _evidence(services, q.question, vector, sources, mode, live.model)


def without_llm(services: Services, found: Evidence) -> Event:
    """The no-sources answer, or answer_mode quote: the best evidence sentences."""
    if not found.sources:
        record: Event = {"answer": generate.NO_SOURCES_ANSWER, "citations": [], "sources": []}
        return record | {"covered": False, "answer_mode": None, "grounding": [], "supported": None}
    record = grounding.quoted(found.best, services.settings.answer_quote_sentences)
    record["citations"] = generate.citations(record["answer"], found.sources)
    return record | {"sources": sources_of(found.sources)}


async def grounded(
    services: Services, q: Question, answer: str, used: list[generate.Source], found: Evidence
) -> Event:
    """Each sentence checked against the sources the model read (one embedding request); in
    auto mode an answer not supported enough gives way to the best evidence sentences."""

    async def embed(texts: list[str]) -> Matrix:
        return (await services.embedder.embed(texts, found.model, Priority.QUERY)).embeddings

    checked = await grounding.ground(answer, used, embed, found.known)
    numbers = {x.number for x in used}
    best = [b for b in found.best if b[0] in numbers]
    mode = q.answer_mode or services.settings.answer_mode
    count = services.settings.answer_quote_sentences
    least = services.settings.answer_auto_min_supported
    record = grounding.outcome(mode, answer, checked, best, count, least)
    record["citations"] = generate.citations(record["answer"], used)
    return record | {"sources": sources_of(used)}


async def _evidence(
    services: Services,
    question: str,
    query: list[float],
    sources: list[generate.Source],
    mode: str,
    model: str,
) -> Evidence:
    """The sources cut to the sentences that answer the question (pipeline/evidence.py) and
    those sentences ranked for a quote: every sentence embedded in one request at query
    priority. Skipped when neither evidence nor a quote is wanted."""
    keep = services.settings.answer_evidence_sentences
    parts = [evidence.source_sentences(x.text) for x in sources]
    flat = [p for ps in parts for p in ps]
    if not flat or (not keep and mode == "generate"):
        return Evidence(sources, model=model)
    rows = (await services.embedder.embed(flat, model, Priority.QUERY)).embeddings
    vectors, start = [], 0
    for ps in parts:
        vectors.append(rows[start : start + len(ps)])
        start += len(ps)
    vector = np.asarray(query, np.float32)
    ranking = evidence.ranked(question, vector, sources, vectors)
    chosen = evidence.choose(question, vector, sources, vectors, keep) if keep else sources
    known = dict(zip(flat, rows, strict=True))
    return Evidence(chosen, evidence.best_sentences(ranking, sources), known, model)


def sources_of(sources: list[generate.Source]) -> list[Event]:
    return [generate.citation(x) | {"text": x.text} for x in sources]
