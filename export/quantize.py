"""int8 variants by ONNX Runtime dynamic quantisation; the fastest that passes its gate wins."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic


@dataclass(frozen=True)
class Scheme:
    """One way to quantise: weight type, per-channel scales, MatMuls left in fp32."""

    name: str
    weight_type: QuantType
    per_channel: bool
    keep_fp32: str = ""  # regex over MatMul node names


# Measured on all-MiniLM-L6-v2 (AVX2, no VNNI): quantising every MatMul fails the top-10
# overlap gate (0.91); keeping the feed-forward MatMuls in fp32 passes it (0.96).
SCHEMES = (
    Scheme("s8-per-channel", QuantType.QInt8, per_channel=True),
    Scheme(
        "s8-per-channel-ffn-fp32",
        QuantType.QInt8,
        per_channel=True,
        keep_fp32=r"/(intermediate|output)/dense/MatMul$",
    ),
)


def quantize(fp32: Path, out: Path, scheme: Scheme, vnni: bool) -> Path:
    """Dynamic int8 quantisation of the weight MatMuls (embeddings stay fp32)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    graph = onnx.load(str(fp32), load_external_data=False).graph
    keep = [
        n.name
        for n in graph.node
        if n.op_type == "MatMul"
        and scheme.keep_fp32
        and re.search(scheme.keep_fp32, n.name)
        and "/attention/" not in n.name
    ]
    quantize_dynamic(
        str(fp32),
        str(out),
        weight_type=scheme.weight_type,
        per_channel=scheme.per_channel,
        # Without VNNI, u8*s8 products can saturate; 7-bit weights avoid it (ORT's advice).
        reduce_range=not vnni,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=keep,
        extra_options={"MatMulConstBOnly": True},  # activation x activation stays fp32
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
