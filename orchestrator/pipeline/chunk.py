"""Text -> overlapping chunks measured in the embedding model's own tokens."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

# Fixed namespace so the same (collection, document, index, content) always maps to one id.
POINT_NAMESPACE = uuid.UUID("6f1d4a52-8c1e-4c61-9d0b-5b7f3e2a9c10")


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int  # character offsets into the document text
    end: int
    content_hash: str

    def point_id(self, collection: str, document_id: str, model: str) -> str:
        """The same chunk of the same document gets the same id, unless another embedding
        model made it: its vector is then never reused for this model's."""
        key = f"{model}\x1f{collection}\x1f{document_id}\x1f{self.index}\x1f{self.content_hash}"
        return str(uuid.uuid5(POINT_NAMESPACE, key))

    @classmethod
    def stored(cls, index: int, text: str) -> Chunk:
        """A chunk as the store keeps it (its offsets are not kept)."""
        return cls(index, text, 0, len(text), content_hash(text))


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Chunker:
    """Splits text into windows of at most `size` model tokens, `overlap` tokens apart."""

    def __init__(self, tokenizer: Tokenizer, max_seq_length: int, size: int, overlap: int) -> None:
        # [CLS] and [SEP] take two of the model's positions.
        self.size = max(1, min(size, max_seq_length - 2))
        if not 0 <= overlap < self.size:
            raise ValueError(f"overlap must be in [0, {self.size}), got {overlap}")
        self.overlap = overlap
        self._tokenizer = tokenizer

    @classmethod
    def from_model_dir(cls, folder: Path, size: int, overlap: int) -> Chunker:
        return _cached_chunker(folder, size, overlap)

    def split(self, text: str) -> list[Chunk]:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        offsets = [span for span in encoding.offsets if span[1] > span[0]]
        chunks: list[Chunk] = []
        step = self.size - self.overlap
        for first in range(0, max(1, len(offsets)), step):
            window = offsets[first : first + self.size]
            if not window:
                break
            start, end = window[0][0], window[-1][1]
            piece = text[start:end]
            chunks.append(Chunk(len(chunks), piece, start, end, content_hash(piece)))
            if first + self.size >= len(offsets):
                break
        return chunks


@lru_cache(maxsize=4)
def _cached_chunker(folder: Path, size: int, overlap: int) -> Chunker:
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    # variant.json is written by export beside the tokenizer (model_repository/backend/encoder.py)
    max_seq_length = int(json.loads((folder / "variant.json").read_text())["max_seq_length"])
    return Chunker(tokenizer, max_seq_length, size, overlap)
