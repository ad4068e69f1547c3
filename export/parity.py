"""The parity gate: exported graphs against the sentence-transformers reference."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from orchestrator.encoder import Matrix

FP32_MIN_COSINE = 0.9999
INT8_MEAN_COSINE = 0.99
INT8_TOP10_OVERLAP = 0.95


@dataclass(frozen=True)
class Agreement:
    """How closely one set of embeddings follows another, text by text."""

    texts: int
    min_cosine: float
    mean_cosine: float
    worst_text: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def reference(model_dir: Path, texts: list[str]) -> Matrix:
    """sentence-transformers' own embeddings, normalised, on the CPU, offline."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    out = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(out, dtype=np.float32)


def agreement(texts: list[str], expected: Matrix, actual: Matrix) -> Agreement:
    cos = np.sum(_unit(expected) * _unit(actual), axis=1)
    worst = int(np.argmin(cos))
    return Agreement(len(texts), float(cos.min()), float(cos.mean()), texts[worst][:80])


def top_k_overlap(
    corpus_a: Matrix, queries_a: Matrix, corpus_b: Matrix, queries_b: Matrix, k: int
) -> float:
    """Mean share of each query's top-k neighbours that two embedding spaces agree on."""
    top_a = np.argsort(-(queries_a @ corpus_a.T), axis=1)[:, :k]
    top_b = np.argsort(-(queries_b @ corpus_b.T), axis=1)[:, :k]
    shared = [len(set(a) & set(b)) / k for a, b in zip(top_a, top_b, strict=True)]
    return float(np.mean(shared))


def known_item_recall(corpus: Matrix, queries: Matrix, targets: list[int], k: int) -> float:
    """Share of queries whose source paragraph is among their top-k hits."""
    top = np.argsort(-(queries @ corpus.T), axis=1)[:, :k]
    return float(np.mean([t in row for t, row in zip(targets, top, strict=True)]))


def _unit(x: Matrix) -> Matrix:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)
