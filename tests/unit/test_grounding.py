"""Grounded answers (orchestrator/pipeline/grounding.py): each answer sentence checked against
the sources it was given, numbers must match, and the quote that replaces an unsupported answer.

The embedding model is faked by a bag of hashed words: the same words give cosine 1, no shared
word gives 0; the real model's behaviour is covered by the integration test."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from orchestrator.clients.vectors import Matrix
from orchestrator.pipeline import grounding
from orchestrator.pipeline.generate import Source, content_words

BACKUPS = (
    "Backups of the vector store run every night at 02:00 UTC. They are kept for 35 days. "
    "The bucket is encrypted."
)
REDIS = "The embedded Redis listens on port 6390 (`TRITONRAG_REDIS_PORT`)."
SOURCES = [
    Source(1, "backups.txt", "c1", 0, 0.8, BACKUPS),
    Source(2, "ops.md", "c2", 0, 0.6, REDIS),
]


class FakeEmbed:
    """Hashed bag of content words, L2-normalised; records every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, texts: list[str]) -> Matrix:
        self.calls.append(list(texts))
        return np.stack([self.vector(t) for t in texts])

    @staticmethod
    def vector(text: str) -> Matrix:
        row = np.zeros(256, dtype=np.float32)
        for word in content_words(text):
            row[zlib.crc32(word.encode()) % 256] += 1.0
        return row / (np.linalg.norm(row) or 1.0)


async def _ground(answer: str) -> list[grounding.Checked]:
    return await grounding.ground(answer, SOURCES, FakeEmbed())


async def test_a_sentence_the_sources_state_is_supported_by_its_source() -> None:
    checked = await _ground("They are kept for 35 days [1]. The embedded Redis listens on 6390.")
    assert [c.supported for c in checked] == [True, True]
    assert checked[0].sources == [1] and checked[1].sources == [2]
    assert checked[0].text == "They are kept for 35 days [1]."  # as written, marker and all
    assert checked[0].score >= grounding.SUPPORT_COSINE and not checked[0].missing
    assert grounding.share(checked) == 1.0


async def test_a_sentence_the_sources_do_not_state_is_unsupported() -> None:
    checked = await _ground("Backups are kept for 35 days. The cafeteria serves pizza on Fridays.")
    assert [c.supported for c in checked] == [True, False]
    assert checked[1].sources == [] and checked[1].score < grounding.SUPPORT_COSINE
    assert grounding.share(checked) == 0.5
    sent = json.loads(json.dumps([c.as_dict() for c in checked]))  # plain JSON types
    assert [c["supported"] for c in sent] == [True, False]


async def test_a_number_the_best_source_sentence_lacks_makes_a_sentence_unsupported() -> None:
    checked = await _ground("The embedded Redis listens on port 6379. They are kept for 30 days.")
    assert [c.supported for c in checked] == [False, False]
    assert checked[0].missing == ["6379"] and checked[1].missing == ["30"]
    close = checked[0].score >= grounding.SUPPORT_COSINE
    assert close and checked[0].overlap >= grounding.SUPPORT_OVERLAP  # only the number fails
    right = await _ground("The embedded Redis listens on port 6,390 (TRITONRAG_REDIS_PORT).")
    assert right[0].supported and right[0].missing == []  # 6,390 is 6390
    wrong_name = await _ground("The embedded Redis listens on port 6390 (TRITONRAG_PORT).")
    assert not wrong_name[0].supported and wrong_name[0].missing == ["tritonrag_port"]


async def test_one_embedding_call_and_sentences_already_embedded_are_not_sent_again() -> None:
    embed = FakeEmbed()
    known = {"The bucket is encrypted.": FakeEmbed.vector("The bucket is encrypted.")}
    await grounding.ground("The bucket is encrypted [1]. [2]", SOURCES, embed, known)
    assert len(embed.calls) == 1
    sent = embed.calls[0]
    assert "The bucket is encrypted." in sent  # the answer's own sentence, marker removed
    assert sent.count("The bucket is encrypted.") == 1 and "[2]" not in sent
    assert "They are kept for 35 days." in sent
    assert await grounding.ground("", SOURCES, embed) == [] and len(embed.calls) == 1


async def test_without_sources_nothing_is_supported() -> None:
    checked = await grounding.ground("Port 6390.", [], FakeEmbed())
    assert [(c.supported, c.missing) for c in checked] == [(False, ["6390"])]


BEST = [(2, "The embedded Redis listens on port 6390."), (1, "- They are kept for 35 days.")]


def test_auto_quotes_the_best_evidence_unless_enough_sentences_are_supported() -> None:
    wrong = [grounding.Checked("Redis uses 6379.", False, missing=["6379"])]
    fell_back = grounding.outcome("auto", "Redis uses 6379.", wrong, BEST, count=2)
    assert fell_back["answer"] == (
        "The embedded Redis listens on port 6390. [2] They are kept for 35 days. [1]"
    )
    assert fell_back["answer_mode"] == "quote" and fell_back["generated"] == "Redis uses 6379."
    assert fell_back["supported"] == 0.0 and fell_back["grounding"][0]["missing"] == ["6379"]
    kept = grounding.outcome("generate", "Redis uses 6379.", wrong, BEST, count=2)
    assert (kept["answer"], kept["answer_mode"], kept["generated"]) == (
        "Redis uses 6379.",
        "generate",
        None,
    )
    half = [wrong[0], grounding.Checked("Port 6390 [2].", True, [2], 0.9, 1.0)]
    assert grounding.outcome("auto", "x", half, BEST, count=2)["answer_mode"] == "quote"
    lenient = grounding.outcome("auto", "x", half, BEST, count=2, min_supported=0.5)
    assert lenient["answer_mode"] == "generate"
    assert grounding.outcome("auto", "x", half[1:], BEST, count=2)["answer_mode"] == "generate"
    empty = grounding.outcome("auto", "", [], BEST, count=1)  # nothing said: quoted too
    assert empty["answer"] == "The embedded Redis listens on port 6390. [2]"
    assert grounding.outcome("auto", "", [], [], count=1)["answer_mode"] == "generate"


def test_quote_mode_cites_each_sentence_and_reports_it_supported() -> None:
    repeated = [BEST[0], BEST[0], BEST[1]]
    fields = grounding.quoted(repeated, count=2)
    assert fields["answer_mode"] == "quote" and fields["supported"] == 1.0
    assert [g["sources"] for g in fields["grounding"]] == [[2], [1]]  # the repeat skipped
    assert fields["grounding"][1]["text"] == "They are kept for 35 days. [1]"  # no bullet
    heading = [(1, "API key rotation."), *BEST]  # ranked first, answers nothing
    assert grounding.quoted(heading, count=1)["answer"].startswith("The embedded Redis")


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("Kept for 35 days [1].", {"35"}),
        ("Set `TRITONRAG_ANSWER_TOP_K` to 5.", {"tritonrag_answer_top_k", "5"}),
        ("1. Run it at 02:00 UTC.", {"02:00"}),
        ("Nothing numeric here.", set()),
    ],
)
def test_terms_are_numbers_and_identifiers(sentence: str, expected: set[str]) -> None:
    assert grounding.terms(sentence) == expected
