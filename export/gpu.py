"""The `gpu` target: tokenizer model + fp32 ONNX encoder + TensorRT fp16 plan."""

from __future__ import annotations

import shutil
from pathlib import Path

from export import tensorrt
from export.onnx_graph import default_model_dir, export_fp32, max_seq_length, pad_token_id
from export.repository import BACKEND_FILES, ROOT
from model_repository.backend.encoder import Variant
from orchestrator.settings import Settings

GPU_REPO = ROOT / "model_repository" / "gpu"
MAX_BATCH = 64


def export_gpu(settings: Settings, model_dir: Path | None = None) -> None:
    """Write gpu/tokenize/1, gpu/encoder_onnx/1 and gpu/encoder_trt/1 (needs a GPU)."""
    if not tensorrt.gpu_present():  # fail before minutes of export, and say why
        tensorrt.build_plan(Path("unused.onnx"), Path("unused.plan"), MAX_BATCH, 1)
    source = model_dir or settings.source_model_dir or default_model_dir()
    seq = max_seq_length(source)
    work = settings.export_dir / source.name / "gpu"
    onnx_file = export_fp32(source, work)
    # dim is not needed by the tokenizer step, which is all that reads this file on the gpu.
    Variant("fp32", "model.onnx", seq, pad_token_id(work), 0).save(work)

    tokenize = GPU_REPO / "tokenize" / "1"
    tokenize.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "model_repository" / "backend" / "tokenize.py", tokenize / "model.py")
    for helper in BACKEND_FILES[1:]:  # encoder.py, startup.py
        shutil.copy(helper, tokenize / helper.name)
    for name in ("tokenizer.json", "variant.json"):
        shutil.copy(work / name, tokenize / name)
    (GPU_REPO / "encoder_onnx" / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy(onnx_file, GPU_REPO / "encoder_onnx" / "1" / "model.onnx")
    tensorrt.build_plan(onnx_file, GPU_REPO / "encoder_trt" / "1" / "model.plan", MAX_BATCH, seq)
    for ensemble in ("embed", "embed_fp32"):
        (GPU_REPO / ensemble / "1").mkdir(parents=True, exist_ok=True)
