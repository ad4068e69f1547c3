"""The parity gate: exported graphs against the sentence-transformers reference."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from model_repository.backend.encoder import Matrix

Ranks = NDArray[np.int64]
Scores = NDArray[np.float64]

FP32_MIN_COSINE = 0.9999
INT8_MEAN_COSINE = 0.99
# The most recall@10 / MRR@10 an int8 model may lose against fp32 (fraction, = 1.0 point),
# judged by the lower end of a 95 % paired bootstrap interval.
INT8_MAX_LOSS = 0.01


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


def target_ranks(corpus: Matrix, queries: Matrix, targets: list[int]) -> Ranks:
    """0-based rank of each query's source paragraph among all paragraphs."""
    sims = queries @ corpus.T
    own = sims[np.arange(len(targets)), targets]
    return np.asarray((sims > own[:, None]).sum(axis=1), dtype=np.int64)


def recall_at(ranks: Ranks, k: int = 10) -> Scores:
    """Per query: 1 when its source paragraph is in the top k."""
    return np.asarray(ranks < k, dtype=np.float64)


def reciprocal_rank_at(ranks: Ranks, k: int = 10) -> Scores:
    """Per query: 1 / rank of its source paragraph within the top k, else 0 (MRR@k's terms)."""
    return np.where(ranks < k, 1.0 / (ranks + 1), 0.0)


@dataclass(frozen=True)
class Delta:
    """Candidate minus baseline over the same queries, with a 95 % bootstrap interval."""

    mean: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 5) for k, v in asdict(self).items()}


def paired_delta(candidate: Scores, baseline: Scores, rounds: int = 2000, seed: int = 0) -> Delta:
    """Queries resampled with replacement, both models scored on the same resample."""
    diff = candidate - baseline
    picks = np.random.default_rng(seed).integers(0, len(diff), (rounds, len(diff)))
    low, high = np.percentile(diff[picks].mean(axis=1), [2.5, 97.5])
    return Delta(float(diff.mean()), float(low), float(high))


def _unit(x: Matrix) -> Matrix:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)
