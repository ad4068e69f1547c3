"""The engine choice (export/run.py) and the OpenVINO adapter behind the one encoder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export import openvino
from export.openvino import Candidate, candidates
from export.repository import publish
from export.run import _choose
from model_repository.backend.encoder import OnnxEncoder, Variant
from orchestrator.settings import Settings

FP32 = Settings().model_repository / "embed_fp32" / "1"
TEXTS = [f"Setting {i} defaults to {i * 7} seconds; see the deployment page." * (1 + i % 4)
         for i in range(24)]  # fmt: skip


def _report(fp32: float, int8: float, openvino: dict[str, float]) -> dict[str, Any]:
    return {
        "fp32": {"texts_per_s": fp32},
        "int8": {"a": {"texts_per_s": int8}},
        "int8_published": "a",
        "openvino": {k: {"texts_per_s": v} for k, v in openvino.items()},
    }


def test_the_fastest_that_passed_wins_when_clearly_faster_than_fp32() -> None:
    report = _report(50, 120, {"openvino-fp32": 52, "openvino-bf16": 150})
    assert _choose(report, {"fp32", "int8", "openvino-fp32", "openvino-bf16"}) == "openvino-bf16"
    assert _choose(report, {"fp32", "int8", "openvino-fp32"}) == "int8"  # bf16 failed its gate
    assert _choose(_report(50, 55, {"openvino-fp32": 56}), {"fp32", "int8", "openvino-fp32"}) == (
        "fp32"  # 1.12x is within the noise: fp32 is exact
    )


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_runs_the_fp32_graph_behind_the_same_encoder(
    precision: str, tmp_path: Path
) -> None:
    folder = tmp_path / precision
    shutil.copytree(FP32, folder)
    meta = replace(Variant.load(FP32), variant=f"openvino-{precision}", engine="openvino",
                   precision=precision)  # fmt: skip
    meta.save(folder)
    reference, _ = OnnxEncoder(FP32, threads=2).encode(TEXTS)
    encoder = OnnxEncoder(folder, threads=1, parallel=2)
    got, counts = encoder.encode(TEXTS)
    cosine = np.sum(got * reference, axis=1)
    # bf16 keeps fp32's weights and rounds activations: export's bf16 gate is 0.999.
    assert cosine.min() >= (0.9999 if precision == "f32" else 0.999), cosine.min()
    assert encoder.max_group > 1  # no per-call scales: texts may share a call
    assert counts.tolist() == OnnxEncoder(FP32).encode(TEXTS)[1].tolist()


@pytest.mark.parametrize(
    ("isa", "bf16"),
    [("avx2", False), ("avx2 avx512f avx512_vnni", False), ("avx2 avx512f avx512_bf16", True),
     ("avx2 avx512f amx_bf16 amx_int8", True)],
)  # fmt: skip
def test_openvino_candidates_follow_the_cpu(isa: str, bf16: bool) -> None:
    """bf16 only where the CPU computes in it; NNCF's int8 everywhere, its floating-point rest
    at fp32, and at bf16 too where that is native."""
    found = {c.name: c.precision for c in candidates(isa)}
    wanted = {"openvino-fp32": "f32", "openvino-int8": "f32", "openvino-int8-weights": "f32"}
    at_bf16 = ["openvino-bf16", "openvino-int8-bf16", "openvino-int8-weights-bf16"]
    assert found == wanted | ({name: "bf16" for name in at_bf16} if bf16 else {})


def test_an_nncf_int8_ir_encodes_near_fp32_and_publishes_with_its_weights(tmp_path: Path) -> None:
    """NNCF's weights-only int8 (seconds to build, no calibration) through the one encoder,
    and published as export publishes `embed`: the IR's .bin travels with its .xml."""
    candidate = Candidate("openvino-int8-weights", "f32", "int8-weights")
    folder = tmp_path / candidate.name
    openvino.build(candidate, FP32, folder, lambda: iter(()), {})
    reference, _ = OnnxEncoder(FP32, threads=2).encode(TEXTS)
    got, _ = OnnxEncoder(folder, threads=2).encode(TEXTS)
    assert float(np.mean(np.sum(got * reference, axis=1))) >= 0.99
    model = tmp_path / "repository" / "embed"
    model.mkdir(parents=True)
    shutil.copy(FP32.parent.parent / "embed" / "config.pbtxt", model / "config.pbtxt")
    publish(folder, model, {})
    assert {"model.xml", "model.bin", "tokenizer.json"} <= {f.name for f in (model / "1").iterdir()}
    assert Variant.load(model / "1").variant == candidate.name


# One instance of Triton's, starting at a given time: compile (or read the cache) and encode.
INSTANCE = """
import sys, time
from pathlib import Path
from model_repository.backend.encoder import OnnxEncoder
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
OnnxEncoder(Path(sys.argv[1]), threads=1).encode(["a text"])
"""


def test_instances_starting_together_share_one_openvino_cache(tmp_path: Path) -> None:
    """Triton starts a model's instances side by side, each compiling into the same cache
    folder. Without a lock, one that started while another wrote the blob read it half
    written, deleted it and the writer failed (or crashed on the truncated mmap): 8 of 40
    staggered starts, measured. They must all load."""
    folder = tmp_path / "openvino"
    shutil.copytree(FP32, folder, ignore=shutil.ignore_patterns("openvino_cache"))
    replace(Variant.load(FP32), variant="openvino-fp32", engine="openvino",
            precision="f32").save(folder)  # fmt: skip
    start = time.time() + 3
    runs = [
        subprocess.Popen([sys.executable, "-c", INSTANCE, str(folder), str(start + 0.12 * k)])
        for k in range(10)
    ]
    assert [run.wait(timeout=120) for run in runs] == [0] * 10
    assert any((folder / "openvino_cache").glob("*.blob"))
