"""Fill the committed Triton model repository with what export generated."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

from model_repository.backend.encoder import Variant

ROOT = Path(__file__).resolve().parent.parent
BACKEND_FILES = (
    ROOT / "model_repository" / "backend" / "model.py",
    ROOT / "model_repository" / "backend" / "encoder.py",
    ROOT / "model_repository" / "backend" / "startup.py",
)
WARMUP_TEXT = "Triton warms this model up before it reports ready."


def publish(variant_dir: Path, model_dir: Path, report: dict[str, object]) -> None:
    """Copy one exported variant into `model_dir/1/` for the python backend, atomically."""
    if not (model_dir / "config.pbtxt").exists():
        raise SystemExit(f"{model_dir}/config.pbtxt is missing: the repository is committed")
    meta = Variant.load(variant_dir)
    staging = model_dir / ".1.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    weights = Path(meta.onnx_file).with_suffix(".bin").name  # an OpenVINO IR's weights
    extra = [weights] if (variant_dir / weights).exists() else []
    for name in (meta.onnx_file, *extra, "tokenizer.json", "variant.json"):
        link_or_copy(variant_dir / name, staging / name)
    for source in BACKEND_FILES:
        shutil.copy(source, staging / source.name)
    (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(model_dir / "1", ignore_errors=True)
    staging.rename(model_dir / "1")
    _write_warmup(model_dir / "warmup")


def unpublish(model_dir: Path) -> None:
    """A variant that failed its gate must not be served by a stale earlier export."""
    shutil.rmtree(model_dir / "1", ignore_errors=True)


def published(repository: Path) -> list[str]:
    """Models whose version 1 is in place (export or publish-llm ran), so Triton can load them."""
    return sorted(p.parent.parent.name for p in repository.glob("*/1/model.py"))


def _write_warmup(folder: Path) -> None:
    # Triton reads TYPE_STRING warmup data as 4-byte little-endian length + bytes.
    folder.mkdir(exist_ok=True)
    data = WARMUP_TEXT.encode()
    (folder / "text").write_bytes(struct.pack("<I", len(data)) + data)


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)
