"""int8 variants by ONNX Runtime dynamic quantisation; the fastest that passes its gate wins."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic


@dataclass(frozen=True)
class Scheme:
    """One way to quantise: weight type and per-channel scales."""

    name: str
    weight_type: QuantType
    per_channel: bool


SCHEMES = (
    Scheme("s8-per-tensor", QuantType.QInt8, per_channel=False),
    Scheme("u8-per-tensor", QuantType.QUInt8, per_channel=False),
    Scheme("s8-per-channel", QuantType.QInt8, per_channel=True),
)


def quantize(fp32: Path, out: Path, scheme: Scheme) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        str(fp32),
        str(out),
        weight_type=scheme.weight_type,
        per_channel=scheme.per_channel,
        # MatMul carries the work in a BERT encoder; Gather (embeddings) stays fp32 for accuracy.
        op_types_to_quantize=["MatMul", "Attention"],
    )
    return out


def texts_per_second(
    encode: Callable[[list[str]], object], texts: list[str], batch: int = 1, seconds: float = 4.0
) -> float:
    """Throughput of `encode` over `texts`, `batch` texts per call, for about `seconds`."""
    encode(texts[:batch])  # warm the session
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = [texts[(done + k) % len(texts)] for k in range(batch)]
        encode(chunk)
        done += batch
    return done / (time.perf_counter() - start)
