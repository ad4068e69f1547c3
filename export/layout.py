"""How the texts of one dynamic batch share ONNX Runtime calls on this CPU: `max_group_tokens`.

Short texts grouped into one call share its fixed cost, but a padded group costs more per
token as it grows, and where that turns depends on the CPU: on a VNNI Xeon groups of up to
128 tokens were 20 % faster for short queries, on an AVX2 box one chunk per call was fastest.
So export measures it on the machine that will serve, on the fp32 graph (int8 runs one text
per call: its activation scale is per call), and writes the winner into variant.json, which
the served model and the raw benchmark both read.
"""

from __future__ import annotations

from pathlib import Path

from export.quantize import texts_per_second
from model_repository.backend.encoder import OnnxEncoder

CANDIDATES = (1, 64, 128, 256, 512)  # padded tokens per call; 1: every text alone
BATCH = 8  # texts per dynamic batch: eight users' queries, or a share of an ingest batch
WORKLOADS = ("queries", "chunks")
Speeds = dict[int, dict[str, float]]


def measure(folder: Path, queries: list[str], chunks: list[str], seconds: float = 1.0) -> Speeds:
    """Texts/s per candidate on both workloads, as one Triton instance runs them (two
    sessions side by side, one thread each), best of two interleaved rounds."""
    encoder = OnnxEncoder(folder, threads=1, parallel=2)
    texts = {"queries": queries, "chunks": chunks}
    speeds = {c: dict.fromkeys(WORKLOADS, 0.0) for c in CANDIDATES}
    for _ in range(2):  # interleaved: a noisy moment hits every candidate alike
        for tokens in CANDIDATES:
            encoder.max_group_tokens = tokens
            for name in WORKLOADS:
                got = texts_per_second(encoder.encode, texts[name], BATCH, seconds)
                speeds[tokens][name] = round(max(speeds[tokens][name], got), 1)
    return speeds


def choose(speeds: Speeds) -> int:
    """The budget with the least time over both workloads, each against its own fastest."""
    best = {w: max(s[w] for s in speeds.values()) for w in WORKLOADS}
    return min(speeds, key=lambda c: sum(best[w] / speeds[c][w] for w in WORKLOADS))
