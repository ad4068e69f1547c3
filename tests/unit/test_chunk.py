from itertools import pairwise
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from orchestrator.pipeline.chunk import Chunker
from orchestrator.settings import Settings

MODEL = Settings().model_repository / "embed" / "1"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


TEXT = " ".join(f"Sentence number {i} talks about topic {i % 7} at length." for i in range(300))


def test_chunks_never_exceed_the_model_max_length(tokenizer: Tokenizer) -> None:
    chunker = Chunker(tokenizer, max_seq_length=64, size=500, overlap=8)
    chunks = chunker.split(TEXT)
    assert chunker.size == 62 and len(chunks) > 10
    assert max(len(tokenizer.encode(c.text).ids) for c in chunks) <= 64


def test_chunks_overlap_and_cover_the_text(tokenizer: Tokenizer) -> None:
    chunker = Chunker(tokenizer, max_seq_length=256, size=40, overlap=10)
    chunks = chunker.split(TEXT)
    assert chunks[0].start == 0 and chunks[-1].end == len(TEXT)
    for a, b in pairwise(chunks):
        assert b.start < a.end  # overlap
        assert TEXT[b.start : b.end] == b.text
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_point_ids_are_deterministic_and_follow_content(tokenizer: Tokenizer) -> None:
    chunker = Chunker(tokenizer, max_seq_length=256, size=40, overlap=0)
    first = chunker.split(TEXT)
    again = chunker.split(TEXT)
    changed = chunker.split("Phrase" + TEXT.removeprefix("Sentence"))  # same token count
    ids = [c.point_id("c", "d", "m") for c in first]
    assert ids == [c.point_id("c", "d", "m") for c in again]
    assert len(set(ids)) == len(ids)
    assert ids[1:] == [c.point_id("c", "d", "m") for c in changed][1:]
    assert ids[0] != changed[0].point_id("c", "d", "m")
    assert ids[0] != first[0].point_id("c", "other-doc", "m")
    assert ids[0] != first[0].point_id("other-collection", "d", "m")
    assert ids[0] != first[0].point_id("c", "d", "another-model")  # never reused across models


def test_overlap_must_be_smaller_than_size(tokenizer: Tokenizer) -> None:
    with pytest.raises(ValueError, match="overlap"):
        Chunker(tokenizer, max_seq_length=256, size=10, overlap=10)


def test_model_dir_chunker_uses_its_variant(tmp_path: Path) -> None:
    chunker = Chunker.from_model_dir(MODEL, size=10_000, overlap=0)
    assert chunker.size == 254  # max_seq_length 256 minus [CLS] and [SEP]
