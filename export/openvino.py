"""OpenVINO candidates from the same fp32 ONNX graph: fp32, bf16 where this CPU computes in it
(AVX512-BF16 or AMX), and int8 made by NNCF: full post-training quantisation calibrated on real
chunks (static activation scales, so texts may share a call), and weights only. export/run.py
judges each by the same retrieval gate and times it the same way."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from export import repository
from export.quantize import Feeds
from export.quiet import quiet
from model_repository.backend.encoder import Variant

log = logging.getLogger("tritonrag.export")
BF16_MEAN_COSINE = 0.999  # bf16 keeps fp32's weights: it must stay practically fp32


@dataclass(frozen=True)
class Candidate:
    name: str
    precision: str  # OpenVINO's inference precision for what stays floating point
    build: str  # "graph": the fp32 ONNX file as is; "int8": NNCF full; "int8-weights"


def candidates(cpu_isa: str) -> list[Candidate]:
    """What this CPU may run: bf16 only where it computes in bf16 (else OpenVINO emulates it,
    slower than fp32). NNCF's int8 leaves some layers in floating point; where bf16 is native
    that rest runs at fp32 and at bf16, as two candidates: which is faster differs by CPU
    (measured: fp32 rest 1.5x bf16 rest on an AVX512-BF16 CPU without AMX)."""
    bf16 = any(f in cpu_isa.split() for f in ("avx512_bf16", "amx_bf16"))
    out = [Candidate("openvino-fp32", "f32", "graph")]
    if bf16:
        out.append(Candidate("openvino-bf16", "bf16", "graph"))
    for build in ("int8", "int8-weights"):
        out.append(Candidate(f"openvino-{build}", "f32", build))
        if bf16:
            out.append(Candidate(f"openvino-{build}-bf16", "bf16", build))
    return out


def build(
    candidate: Candidate,
    fp32_dir: Path,
    folder: Path,
    calibration: Callable[[], Iterator[Feeds]],
    built: dict[str, Path],
) -> None:
    """The candidate's model folder: the model, the tokenizer and its variant.json. `built`
    (build -> folder) lets candidates that differ only in precision share one NNCF run."""
    folder.mkdir(parents=True)
    repository.link_or_copy(fp32_dir / "tokenizer.json", folder / "tokenizer.json")
    meta = Variant.load(fp32_dir)
    if candidate.build == "graph":
        repository.link_or_copy(fp32_dir / "model.onnx", folder / "model.onnx")
        model_file = "model.onnx"
    else:
        model_file = "model.xml"
        if candidate.build in built:
            for name in (model_file, "model.bin"):
                repository.link_or_copy(built[candidate.build] / name, folder / name)
        else:
            _nncf(fp32_dir / "model.onnx", folder / model_file, candidate.build, calibration)
            built[candidate.build] = folder
    replace(
        meta,
        variant=candidate.name,
        onnx_file=model_file,
        engine="openvino",
        precision=candidate.precision,
    ).save(folder)


def _nncf(
    source: Path, target: Path, build: str, calibration: Callable[[], Iterator[Feeds]]
) -> None:
    import nncf  # export only: NNCF and its dependencies never load in Triton
    import openvino as ov

    model = ov.Core().read_model(str(source))
    nncf.set_log_level(logging.WARNING)  # its statistics tables; warnings and errors still show
    # Its progress bars (rich, on stdout) would fill the export's output; failures raise.
    with quiet(), contextlib.redirect_stdout(io.StringIO()):
        if build == "int8-weights":
            model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
        else:
            feeds = list(calibration())
            model = nncf.quantize(
                model,
                nncf.Dataset(feeds),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(feeds),
            )
    ov.save_model(model, str(target), compress_to_fp16=False)
    log.info("%s: NNCF %s written", target.parent.name, build)


def verdict(candidate: Candidate, result: dict[str, Any], failed: list[str]) -> list[str]:
    """The gate's failures plus bf16's own bound: it keeps fp32's weights, so it must stay
    practically fp32 (int8 candidates answer to the gate's int8 bounds)."""
    cosine = result["parity"]["mean_cosine"]
    if candidate.build == "graph" and candidate.precision == "bf16" and cosine < BF16_MEAN_COSINE:
        failed = [*failed, f"mean cosine {cosine:.5f} < {BF16_MEAN_COSINE}"]
    return failed
