"""Export -> parity gate -> int8 variants -> publish into the model repository."""

from __future__ import annotations

import json
import logging
import platform
import shutil
from pathlib import Path
from typing import Any

from export import corpus, parity, quantize, repository
from export.onnx_graph import default_model_dir, export_fp32, max_seq_length, pad_token_id
from orchestrator.encoder import Matrix, OnnxEncoder, Variant
from orchestrator.settings import Settings

log = logging.getLogger("tritonrag.export")
INT8_MIN_SPEEDUP = 1.15


def cpu_isa() -> str:
    """The SIMD features that decide int8 speed (VNNI) on this CPU."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split())
    except (OSError, IndexError):
        return platform.machine()
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"]
    return " ".join(f for f in wanted if f in flags) or platform.machine()


def export_cpu(settings: Settings, model_dir: Path | None = None) -> dict[str, Any]:
    """Run the whole cpu export; returns the report (also written next to each model)."""
    source = model_dir or settings.source_model_dir or default_model_dir()
    work = settings.export_dir / source.name
    shutil.rmtree(work, ignore_errors=True)
    seq = max_seq_length(source)
    fp32_dir = work / "fp32"
    log.info("exporting %s to ONNX (max_seq_length %d)", source, seq)
    export_fp32(source, fp32_dir)
    pad_id = pad_token_id(fp32_dir)

    texts = corpus.parity_texts()
    docs, queries, targets = corpus.known_items()
    log.info(
        "reference embeddings from sentence-transformers (%d texts)",
        len(texts) + len(docs) + len(queries),
    )
    ref = parity.reference(source, texts + docs + queries)
    dim = int(ref.shape[1])
    Variant("fp32", "model.onnx", seq, pad_id, dim).save(fp32_dir)

    report: dict[str, Any] = {
        "source": str(source),
        "max_seq_length": seq,
        "dim": dim,
        "cpu_isa": cpu_isa(),
    }
    fp32 = _evaluate(fp32_dir, texts, docs, queries, targets, ref, None)
    fp32["passed"] = fp32["parity"]["min_cosine"] >= parity.FP32_MIN_COSINE
    report["fp32"] = fp32
    if not fp32["passed"]:
        _write_report(work, report)
        raise SystemExit(f"fp32 parity gate failed: {fp32['parity']} (needs min cosine >= 0.9999)")

    int8: dict[str, Any] = {}
    vnni = "vnni" in report["cpu_isa"]
    for scheme in quantize.SCHEMES:
        folder = work / f"int8-{scheme.name}"
        quantize.quantize(fp32_dir / "model.onnx", folder / "model.onnx", scheme, vnni)
        shutil.copy(fp32_dir / "tokenizer.json", folder / "tokenizer.json")
        Variant("int8", "model.onnx", seq, pad_id, dim).save(folder)
        result = _evaluate(folder, texts, docs, queries, targets, ref, fp32)
        result["passed"] = (
            result["parity"]["mean_cosine"] >= parity.INT8_MEAN_COSINE
            and result["top10_overlap_vs_fp32"] >= parity.INT8_TOP10_OVERLAP
        )
        int8[scheme.name] = result
        log.info("int8 %s: %s", scheme.name, result)
    report["int8"] = int8
    passing = [name for name, r in int8.items() if r["passed"]]
    best_int8 = max(passing, key=lambda n: int8[n]["texts_per_s"], default=None)
    report["int8_published"] = best_int8
    # int8 is served as `embed` only when clearly faster: fp32 is exact, and timings are noisy.
    int8_speed = int8[best_int8]["texts_per_s"] if best_int8 else 0.0
    best = "int8" if int8_speed > INT8_MIN_SPEEDUP * fp32["texts_per_s"] else "fp32"
    report["embed_serves"] = best
    _write_report(work, report)

    repo = settings.model_repository
    dirs = {"fp32": fp32_dir, "int8": work / f"int8-{best_int8}" if best_int8 else None}
    repository.publish(fp32_dir, repo / "embed_fp32", report)
    if dirs["int8"] is not None:
        repository.publish(dirs["int8"], repo / "embed_int8", report)
    else:
        repository.unpublish(repo / "embed_int8")
    chosen = dirs[best]
    assert chosen is not None
    repository.publish(chosen, repo / "embed", report)
    return report


def _evaluate(
    folder: Path,
    texts: list[str],
    docs: list[str],
    queries: list[str],
    targets: list[int],
    ref: Matrix,
    fp32: dict[str, Any] | None,
) -> dict[str, Any]:
    encoder = OnnxEncoder(folder, threads=1)
    all_texts = texts + docs + queries
    got, _ = encoder.encode(all_texts)
    n, d = len(texts), len(docs)
    result: dict[str, Any] = {
        "parity": parity.agreement(texts, ref[:n], got[:n]).as_dict(),
        "known_item_recall@10": parity.known_item_recall(got[n : n + d], got[n + d :], targets, 10),
        "texts_per_s": round(quantize.texts_per_second(encoder.encode, docs, seconds=4.0), 1),
        "file_mb": round((folder / "model.onnx").stat().st_size / 2**20, 1),
    }
    if fp32 is not None:
        base = ref[n:]  # fp32 ONNX equals the reference within 1e-4, so compare to it
        result["top10_overlap_vs_fp32"] = parity.top_k_overlap(
            base[:d], base[d:], got[n : n + d], got[n + d :], 10
        )
    return result


def _write_report(work: Path, report: dict[str, Any]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
