"""int8 candidates by ONNX Runtime quantisation; export publishes the fastest that passes."""

from __future__ import annotations

import contextlib
import io
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from numpy.typing import NDArray
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from export.quiet import quiet

Method = Literal["dynamic", "optimized", "static"]
Feeds = dict[str, NDArray[np.int64]]


@dataclass(frozen=True)
class Scheme:
    """One way to quantise; weights are always s8 with per-channel scales.

    dynamic: every weight MatMul, activations quantised at run time.
    optimized: ORT's transformer optimizer (attention, layer-norm, GELU fusion) first.
    static: QDQ with activation ranges calibrated on real text.
    keep_fp32: weight MatMuls (node names) left in fp32.
    """

    name: str
    method: Method = "dynamic"
    keep_fp32: tuple[str, ...] = ()


def weight_matmuls(model: Path) -> list[str]:
    """MatMuls with a constant (weight) input: the ones quantisation can make int8."""
    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    return [
        n.name for n in graph.node if n.op_type == "MatMul" and any(x in weights for x in n.input)
    ]


def whole_schemes() -> list[Scheme]:
    """The schemes that make every weight MatMul int8, one per method."""
    return [Scheme("all-matmul"), Scheme("optimized-all-matmul", "optimized"),
            Scheme("static-qdq", "static")]  # fmt: skip


def partial_schemes(matmuls: list[str], most_sensitive: list[str]) -> list[Scheme]:
    """Dynamic schemes that keep some weight MatMuls in fp32: never faster than all-matmul,
    worth trying only where it fails the gate."""
    ffn = tuple(n for n in matmuls if re.search(r"/(intermediate|output)/dense/MatMul$", n))
    out = [Scheme(f"keep-{k}-most-sensitive-fp32", keep_fp32=tuple(most_sensitive[:k]))
           for k in (1, 2, 4)]  # fmt: skip
    return [*out, Scheme("feed-forward-fp32", keep_fp32=ffn)]


def quantize(
    fp32: Path,
    out: Path,
    scheme: Scheme,
    vnni: bool,
    calibration: Callable[[], Iterable[Feeds]] | None = None,
    only: list[str] | None = None,
) -> Path:
    """Write `scheme`'s int8 model to `out`; `only`: quantise just these MatMuls."""
    out.parent.mkdir(parents=True, exist_ok=True)
    common: dict[str, object] = {
        "per_channel": True,
        "weight_type": QuantType.QInt8,
        # Without VNNI, u8*s8 products can saturate; 7-bit weights avoid it (ORT's advice).
        "reduce_range": not vnni,
        "nodes_to_exclude": list(scheme.keep_fp32),
        "nodes_to_quantize": only,
        "extra_options": {"MatMulConstBOnly": True},  # activation x activation stays fp32
    }
    with quiet():
        _run(fp32, out, scheme, common, calibration)
    return out


def _run(
    fp32: Path,
    out: Path,
    scheme: Scheme,
    common: dict[str, object],
    calibration: Callable[[], Iterable[Feeds]] | None,
) -> None:
    if scheme.method == "dynamic":
        quantize_dynamic(str(fp32), str(out), op_types_to_quantize=["MatMul"], **common)
    elif scheme.method == "optimized":
        from onnxruntime.transformers.optimizer import optimize_model

        fused = out.with_name("fused.onnx")
        # 0 heads / 0 hidden size: read from the graph.
        # It prints "failed in shape inference" (stdout) when it skips the fusions that need
        # symbolic shapes; the scheme's timing already shows what it gained.
        with contextlib.redirect_stdout(io.StringIO()):
            optimized = optimize_model(str(fp32), model_type="bert", num_heads=0, hidden_size=0)
        optimized.save_model_to_file(str(fused))
        # The fused ops are Microsoft's: shape inference cannot type them, so say fp32.
        float32 = onnx.TensorProto.FLOAT
        common["extra_options"] = {"MatMulConstBOnly": True, "DefaultTensorType": float32}
        quantize_dynamic(
            str(fused), str(out), op_types_to_quantize=["MatMul", "Attention"], **common
        )
        fused.unlink()
    else:
        assert calibration is not None, "static quantisation needs calibration text"
        quantize_static(
            str(fp32),
            str(out),
            _Reader(calibration()),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            op_types_to_quantize=["MatMul"],
            **common,
        )


def sensitivity(
    fp32: Path, scratch: Path, vnni: bool, loss: Callable[[Path], float]
) -> list[tuple[str, float]]:
    """Each weight MatMul quantised alone, most harmful first: (node, loss of that model)."""
    out = []
    for node in weight_matmuls(fp32):
        quantize(fp32, scratch / "model.onnx", Scheme("one"), vnni, only=[node])
        out.append((node, loss(scratch)))
    return sorted(out, key=lambda item: -item[1])


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, feeds: Iterable[Feeds]) -> None:
        self.feeds: Iterator[Feeds] = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self.feeds, None)


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
