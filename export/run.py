"""Export -> parity gate -> int8 variants and OpenVINO candidates -> publish into the model
repository: `embed` serves the fastest candidate that passed the retrieval gate on this CPU."""

from __future__ import annotations

import json
import logging
import platform
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export import corpus, layout, openvino, parity, quantize, repository
from export.onnx_graph import default_model_dir, export_fp32, max_seq_length, pad_token_id
from model_repository.backend.encoder import Matrix, OnnxEncoder, Variant, pad
from orchestrator.settings import Settings

log = logging.getLogger("tritonrag.export")
INT8_MIN_SPEEDUP = 1.15  # over fp32, for any candidate: fp32 is exact, timings are noisy


def cpu_isa() -> str:
    """The SIMD features that decide int8 speed (VNNI) on this CPU."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split())
    except (OSError, IndexError):
        return platform.machine()
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]
    return " ".join(f for f in wanted if f in flags) or platform.machine()


@dataclass(frozen=True)
class Bench:
    """What every variant is judged on: parity texts, known-item documents and queries, and
    sentence-transformers' reference embeddings of them all (in that order)."""

    texts: list[str]
    docs: list[str]
    queries: list[str]
    targets: list[int]
    ref: Matrix

    def speed(self, folder: Path) -> dict[str, Any]:
        """Texts per second on one core, one known-item document per call, and file size."""
        single = OnnxEncoder(folder, threads=1)
        rate = quantize.texts_per_second(single.encode, self.docs, seconds=4.0)
        return {"texts_per_s": round(rate, 1), "file_mb": round(_size_mb(folder), 1)}

    def quality(self, folder: Path, base: parity.Ranks | None) -> dict[str, Any]:
        return _quality(folder, self.texts, self.docs, self.queries, self.targets, self.ref, base)

    def base(self) -> parity.Ranks:
        """fp32's ranks, from the reference (the fp32 graph equals it within 1e-4)."""
        n, d = len(self.texts), len(self.docs)
        return parity.target_ranks(self.ref[n : n + d], self.ref[n + d :], self.targets)


def export_cpu(
    settings: Settings, model_dir: Path | None = None, judge_all: bool = False
) -> dict[str, Any]:
    """Run the whole cpu export; returns the report (also written next to each model).

    Every candidate is built and timed; the gate judges them fastest first and stops at the
    first that passes, since a slower one could not be chosen over it (`judge_all`: judge
    every one, for the full table)."""
    source = model_dir or settings.source_model_dir or default_model_dir()
    work = settings.export_dir / source.name
    shutil.rmtree(work, ignore_errors=True)
    report: dict[str, Any] = {"source": str(source), "cpu_isa": cpu_isa(), "judge_all": judge_all}
    fp32_dir, bench = _fp32(source, work, report)
    best_int8 = _int8(work, fp32_dir, bench, report, judge_all)
    dirs = {"fp32": fp32_dir} | _openvino(work, fp32_dir, bench, report, judge_all)
    if best_int8:
        dirs["int8"] = work / f"int8-{best_int8}"
    best = _choose(report, set(dirs))
    report["embed_serves"] = best
    _write_report(work, report)

    repo = settings.model_repository
    repository.publish(fp32_dir, repo / "embed_fp32", report)
    if best_int8:
        repository.publish(dirs["int8"], repo / "embed_int8", report)
    else:
        repository.unpublish(repo / "embed_int8")
    repository.publish(dirs[best], repo / "embed", report)
    return report


def _speed(report: dict[str, Any], name: str) -> float:
    if name == "fp32":
        return float(report["fp32"]["texts_per_s"])
    if name == "int8":
        return float(report["int8"][report["int8_published"]]["texts_per_s"])
    return float(report["openvino"][name]["texts_per_s"])


def _choose(report: dict[str, Any], passed: set[str]) -> str:
    """The fastest candidate that passed, if it is clearly faster than fp32; else fp32."""
    fastest = max(passed, key=lambda name: _speed(report, name))
    clearly = _speed(report, fastest) > INT8_MIN_SPEEDUP * _speed(report, "fp32")
    return fastest if clearly else "fp32"


def _openvino(
    work: Path, fp32_dir: Path, bench: Bench, report: dict[str, Any], judge_all: bool
) -> dict[str, Path]:
    """The OpenVINO candidates this CPU may run (export/openvino.py), timed the same way and
    judged by the same gate if fast enough to be served. Returns the folders that passed."""
    calibration = _calibration(fp32_dir, corpus.chunks(64))
    built: dict[str, Path] = {}
    results: dict[str, dict[str, Any]] = {}
    folders: dict[str, Path] = {}
    kinds = {c.name: c for c in openvino.candidates(report["cpu_isa"])}
    for name, candidate in kinds.items():
        folders[name] = work / name
        openvino.build(candidate, fp32_dir, folders[name], calibration, built)
        results[name] = bench.speed(folders[name])
    # Served only if the fastest that passed and clearly faster than fp32.
    passed = {"fp32": _speed(report, "fp32")}
    if report["int8_published"]:
        passed["int8"] = _speed(report, "int8")
    bar = max(INT8_MIN_SPEEDUP * passed["fp32"], *passed.values())
    base = bench.base()

    def check(name: str, result: dict[str, Any]) -> list[str]:
        result |= bench.quality(folders[name], base)
        return openvino.verdict(kinds[name], result, gate_failures(result))

    judge_fastest_first(results, check, bar, judge_all)
    for name, result in results.items():
        log.info("%s: %s", name, result)
    report["openvino"] = results
    return {name: folders[name] for name, r in results.items() if _passed(r)}


def judge_fastest_first(
    results: dict[str, dict[str, Any]],
    check: Callable[[str, dict[str, Any]], list[str]],
    bar: float,
    judge_all: bool,
) -> str | None:
    """Judge timed candidates fastest first, each faster than `bar`, until one passes: a
    slower one could not be chosen over it. Sets each one's `judged`, `failed` and `verdict`;
    returns the fastest that passed."""
    winner: str | None = None
    for name in sorted(results, key=lambda n: -results[n]["texts_per_s"]):
        result = results[name]
        speed = result["texts_per_s"]
        if not judge_all and (winner or speed <= bar):
            why = f"slower than {winner}, which passed" if winner else f"{speed}/s <= {bar:.1f}/s"
            result |= {"judged": False, "failed": [], "verdict": f"not judged: {why}"}
            continue
        failed = check(name, result)
        verdict = "failed: " + "; ".join(failed) if failed else "passed"
        result |= {"judged": True, "failed": failed, "verdict": verdict}
        if not failed and winner is None:
            winner = name
    return winner


def _passed(result: dict[str, Any]) -> bool:
    return bool(result["judged"]) and not result["failed"]


def _size_mb(folder: Path) -> float:
    """The model's own files (an IR's weights sit in its .bin)."""
    files = [f for f in folder.iterdir() if f.suffix in (".onnx", ".xml", ".bin")]
    return sum(f.stat().st_size for f in files) / 2**20


def _fp32(source: Path, work: Path, report: dict[str, Any]) -> tuple[Path, Bench]:
    """The fp32 graph, gated on parity with sentence-transformers, with the grouping this
    CPU serves fastest; the bench every variant is then judged on."""
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
    bench = Bench(texts, docs, queries, targets, parity.reference(source, texts + docs + queries))
    dim = int(bench.ref.shape[1])
    Variant("fp32", "model.onnx", seq, pad_id, dim).save(fp32_dir)
    report |= {"max_seq_length": seq, "dim": dim}
    fp32 = bench.speed(fp32_dir) | bench.quality(fp32_dir, None)
    fp32["passed"] = fp32["parity"]["min_cosine"] >= parity.FP32_MIN_COSINE
    report["fp32"] = fp32
    if not fp32["passed"]:
        _write_report(work, report)
        raise SystemExit(f"fp32 parity gate failed: {fp32['parity']} (needs min cosine >= 0.9999)")
    log.info("grouping: padded tokens per ONNX Runtime call on this CPU")
    speeds = layout.measure(fp32_dir, queries[:400], corpus.chunks(200))
    group_tokens = layout.choose(speeds)
    report["grouping"] = {"max_group_tokens": group_tokens, "texts_per_s": speeds}
    Variant("fp32", "model.onnx", seq, pad_id, dim, group_tokens).save(fp32_dir)
    return fp32_dir, bench


def _int8(
    work: Path, fp32_dir: Path, bench: Bench, report: dict[str, Any], judge_all: bool
) -> str | None:
    """The int8 schemes, timed, then judged by the gate against fp32 fastest first; the
    fastest that passed, if any. Schemes that keep some MatMuls in fp32 (and the sensitivity
    sweep that picks them) are tried only where making every MatMul int8 fails the gate."""
    vnni = "vnni" in report["cpu_isa"]
    fp32_meta = Variant.load(fp32_dir)
    base = bench.base()
    calibration = _calibration(fp32_dir, corpus.chunks(64))
    int8: dict[str, dict[str, Any]] = {}
    folders: dict[str, Path] = {}

    def build(scheme: quantize.Scheme) -> None:
        folder = folders[scheme.name] = work / f"int8-{scheme.name}"
        quantize.quantize(fp32_dir / "model.onnx", folder / "model.onnx", scheme, vnni, calibration)
        shutil.copy(fp32_dir / "tokenizer.json", folder / "tokenizer.json")
        Variant("int8", "model.onnx", fp32_meta.max_seq_length, fp32_meta.pad_token_id,
                fp32_meta.dim).save(folder)  # fmt: skip
        int8[scheme.name] = {"keep_fp32": list(scheme.keep_fp32)} | bench.speed(folder)

    def check(name: str, result: dict[str, Any]) -> list[str]:
        result |= bench.quality(folders[name], base)
        return gate_failures(result)

    for scheme in quantize.whole_schemes():
        build(scheme)
    best = judge_fastest_first(int8, check, 0.0, judge_all)
    report["sensitivity"] = []
    if judge_all or int8["all-matmul"]["failed"]:
        ranked = _sensitivity(work, fp32_dir, bench, vnni)
        report["sensitivity"] = [{"matmul": m, "mean_cosine_loss": round(v, 6)} for m, v in ranked]
        matmuls = quantize.weight_matmuls(fp32_dir / "model.onnx")
        partial = quantize.partial_schemes(matmuls, [m for m, _ in ranked])
        for scheme in partial:
            build(scheme)
        bar = int8[best]["texts_per_s"] if best else 0.0
        judge_fastest_first({s.name: int8[s.name] for s in partial}, check, bar, judge_all)
        passing = [name for name, r in int8.items() if _passed(r)]
        best = max(passing, key=lambda n: int8[n]["texts_per_s"], default=None)
    for name, r in int8.items():
        log.info("int8 %s: %s", name, {k: v for k, v in r.items() if k != "keep_fp32"})
        if name == best:
            r["verdict"] = "published: the fastest that passed"
        elif _passed(r):
            r["verdict"] = f"passed, slower than {best}"
    report["int8"] = int8
    report["int8_published"] = best
    return best


def _sensitivity(work: Path, fp32_dir: Path, bench: Bench, vnni: bool) -> list[tuple[str, float]]:
    """Each weight MatMul quantised alone, ranked by the mean cosine it costs."""
    meta = Variant.load(fp32_dir)
    scratch = work / "sensitivity"
    scratch.mkdir()
    shutil.copy(fp32_dir / "tokenizer.json", scratch / "tokenizer.json")
    Variant("int8", "model.onnx", meta.max_seq_length, meta.pad_token_id, meta.dim).save(scratch)
    n = len(bench.texts)

    def loss(folder: Path) -> float:
        got, _ = OnnxEncoder(folder, threads=2).encode(bench.texts)
        return 1.0 - float(np.mean(np.sum(got * bench.ref[:n], axis=1)))

    log.info("sensitivity sweep: each weight MatMul quantised alone")
    ranked = quantize.sensitivity(fp32_dir / "model.onnx", scratch, vnni, loss)
    shutil.rmtree(scratch)
    return ranked


def _quality(
    folder: Path,
    texts: list[str],
    docs: list[str],
    queries: list[str],
    targets: list[int],
    ref: Matrix,
    base: parity.Ranks | None,
) -> dict[str, Any]:
    encoder = OnnxEncoder(folder, threads=2)
    got, _ = encoder.encode(texts + docs + queries)
    n, d = len(texts), len(docs)
    ranks = parity.target_ranks(got[n : n + d], got[n + d :], targets)
    recall, mrr = parity.recall_at(ranks), parity.reciprocal_rank_at(ranks)
    result: dict[str, Any] = {
        "parity": parity.agreement(texts, ref[:n], got[:n]).as_dict(),
        "queries": len(queries),
        "recall@10": round(float(recall.mean()), 4),
        "mrr@10": round(float(mrr.mean()), 4),
    }
    if base is not None:
        result["recall@10_delta"] = parity.paired_delta(recall, parity.recall_at(base)).as_dict()
        result["mrr@10_delta"] = parity.paired_delta(mrr, parity.reciprocal_rank_at(base)).as_dict()
        # Reported, not gated: neighbours reorder without the user's answer moving.
        base_docs, base_queries = ref[n : n + d], ref[n + d :]
        result["top10_overlap_vs_fp32"] = round(
            parity.top_k_overlap(base_docs, base_queries, got[n : n + d], got[n + d :], 10), 4
        )
    return result


def gate_failures(result: dict[str, Any]) -> list[str]:
    """Why an int8 candidate may not be published; empty when it may."""
    why = []
    if result["parity"]["mean_cosine"] < parity.INT8_MEAN_COSINE:
        why.append(f"mean cosine {result['parity']['mean_cosine']:.4f} < {parity.INT8_MEAN_COSINE}")
    for metric in ("recall@10", "mrr@10"):
        delta = result[f"{metric}_delta"]
        if delta["low"] < -parity.INT8_MAX_LOSS:
            why.append(
                f"{metric} {100 * delta['mean']:+.2f} pt (95 % CI {100 * delta['low']:+.2f}.."
                f"{100 * delta['high']:+.2f}) may lose more than {100 * parity.INT8_MAX_LOSS:.1f}"
            )
    return why


def _calibration(folder: Path, texts: list[str]) -> Callable[[], Iterator[quantize.Feeds]]:
    """Batches of 8 real chunks, tokenised as Triton's model does, for static calibration."""
    encoder = OnnxEncoder(folder, threads=1)

    def feeds() -> Iterator[quantize.Feeds]:
        for i in range(0, len(texts), 8):
            encodings = encoder.tokenizer.encode_batch(texts[i : i + 8])
            ids, mask = pad(encodings, encoder.meta.pad_token_id)
            yield {"input_ids": ids, "attention_mask": mask}

    return feeds


def _write_report(work: Path, report: dict[str, Any]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
