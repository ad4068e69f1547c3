"""TensorRT plan (fp16, optimisation profiles) for the `gpu` target. Needs an NVIDIA GPU."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class NoGpuError(SystemExit):
    """Raised where TensorRT cannot run; exits non-zero with the reason."""


def gpu_present() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    probe = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
    return probe.returncode == 0 and "GPU" in probe.stdout


def build_plan(
    onnx_file: Path, plan: Path, max_batch: int, max_seq: int, opt_seq: int = 128
) -> Path:
    """Build an fp16 engine whose profile covers batch 1..max_batch and 1..max_seq tokens."""
    if not gpu_present():
        raise NoGpuError(
            "TensorRT export needs an NVIDIA GPU and `nvidia-smi` found none on this machine. "
            "Nothing was built; run `tritonrag export --target gpu` on a GPU host "
            "(the cpu target does not need this step)."
        )
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise NoGpuError(f"TensorRT export needs `pip install tensorrt`: {exc}") from exc

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SystemExit(f"TensorRT could not parse {onnx_file}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name in ("input_ids", "attention_mask"):
        profile.set_shape(name, (1, 1), (max(1, max_batch // 4), opt_seq), (max_batch, max_seq))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise SystemExit("TensorRT failed to build the engine (see the log above)")
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(bytes(engine))
    return plan
