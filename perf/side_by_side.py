"""Each engine raw in-process vs Triton at saturation, same file, same threads, one run.

    python -m perf.side_by_side   (or `make perf`)

The models: `embed_fp32` and `embed_int8` (ONNX Runtime) and `embed`, whichever engine export
chose on this CPU (ONNX Runtime or OpenVINO). Raw gets its best layout, on the model's own
engine: one session with all threads or one single-threaded session per core, at its best
batch size. Triton is driven by perf_analyzer over gRPC at concurrency 8
and 16 (the better counts). Two text sets: short queries and long RAG chunks, all real prose.
Where the served time goes: CPU per text of the raw run, and of each served process (the
python-backend stubs, tritonserver itself, perf_analyzer), texts counted by Triton's statistics.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import tritonclient.grpc as grpcclient

from export.corpus import chunks, known_items
from export.run import cpu_isa
from model_repository.backend.encoder import OnnxEncoder
from orchestrator.cli.tritonserver import TritonProcess
from perf.common import RESULTS, bench_settings, engine_of, run_perf_analyzer

SECONDS = float(os.environ.get("PERF_SECONDS", "6"))


def raw_throughput(
    folder: Path, texts: list[str], sessions: int, threads: int, batch: int
) -> tuple[float, float]:
    """Texts/s of `sessions` encoders in parallel threads, each `threads` wide, `batch` per
    call, and the CPU ms each text took."""
    encoders = [OnnxEncoder(folder, threads=threads) for _ in range(sessions)]
    for e in encoders:
        e.encode(texts[:batch])

    def work(k: int) -> int:
        done, start = 0, time.perf_counter()
        i = k * 997
        while time.perf_counter() - start < SECONDS:
            encoders[k].encode([texts[(i + j) % len(texts)] for j in range(batch)])
            done, i = done + batch, i + batch
        return done

    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(sessions) as pool:
        total = sum(pool.map(work, range(sessions)))
    return total / (time.perf_counter() - start), (time.process_time() - cpu) / total * 1000


def served_cpu_s(server: TritonProcess) -> dict[str, float]:
    """CPU seconds so far: tritonserver, its python-backend stubs, and reaped children of
    this process (perf_analyzer; Triton is not reaped until it stops)."""
    root = psutil.Process(server.process.pid)
    stubs = root.children(recursive=True)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "python backend": sum(t.user + t.system for t in (p.cpu_times() for p in stubs)),
        "tritonserver": sum(root.cpu_times()[:2]),
        "perf_analyzer": children.ru_utime + children.ru_stime,
    }


def inference_count(settings: Any, model: str) -> int:
    stats = grpcclient.InferenceServerClient(settings.triton_grpc_url).get_inference_statistics(
        model, as_json=True
    )
    return int(stats["model_stats"][0].get("inference_count", 0))


def best_raw(folder: Path, texts: list[str], cores: int) -> dict[str, Any]:
    layouts = [(1, cores, b) for b in (1, 4, 16, 32)] + [(cores, 1, b) for b in (1, 4, 16)]
    runs = []
    for s, t, b in layouts:
        rate, cpu_ms = raw_throughput(folder, texts, s, t, b)
        runs.append(
            {
                "sessions": s,
                "threads": t,
                "batch": b,
                "texts_per_s": rate,
                "cpu_ms_per_text": cpu_ms,
            }
        )
    return {"best": max(runs, key=lambda r: r["texts_per_s"]), "all": runs}


def served(server: TritonProcess, model: str, texts: list[str]) -> dict[str, Any]:
    runs = []
    for concurrency in (8, 16):
        cpu, count = served_cpu_s(server), inference_count(server.settings, model)
        row = run_perf_analyzer(server.settings, model, texts, concurrency, SECONDS)
        spent, done = served_cpu_s(server), inference_count(server.settings, model) - count
        per_text = {k: (spent[k] - cpu[k]) / max(done, 1) * 1000 for k in cpu}
        runs.append(
            {
                "texts_per_s": row["Inferences/Second"],
                "concurrency": row["Concurrency"],
                "cpu_ms_per_text": per_text,
            }
        )
    return max(runs, key=lambda r: r["texts_per_s"])


def text_sets() -> dict[str, list[str]]:
    """Short: one-sentence queries; long: RAG chunks of 60-1000 characters."""
    return {"short": known_items()[1][:600], "long": chunks(600)}


MODELS = ("embed_fp32", "embed_int8", "embed")  # embed: whichever engine export chose here


def main() -> None:
    cores = os.cpu_count() or 1
    sets = text_sets()
    with tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(Path(tmp))
        repo = settings.model_repository
        models = [m for m in MODELS if (repo / m / "1").exists()]
        engines = {m: engine_of(repo / m / "1") for m in models}
        raw = {
            (name, m): best_raw(repo / m / "1", texts, cores)
            for name, texts in sets.items()
            for m in models
        }
        with TritonProcess.start(settings) as server:
            server.wait_ready()
            triton = {
                (name, m): served(server, m, texts) for name, texts in sets.items() for m in models
            }
    result: dict[str, Any] = {"cpu_isa": cpu_isa(), "cores": cores, "engines": engines}
    lines = [
        f"CPU: {result['cpu_isa']}, {cores} cores; 600 short texts (one-sentence queries, "
        f"mean {_mean_chars(sets['short'])} chars) and 600 long (RAG chunks, mean "
        f"{_mean_chars(sets['long'])} chars). Each model is compared with its own engine's raw "
        "best layout: that is its ceiling.",
        "",
        "| texts | model | engine | raw best (layout) | Triton (concurrency) | served / raw |",
        "|---|---|---|---|---|---|",
    ]
    for name in sets:
        result[name] = {"texts": len(sets[name])}
        for m in models:
            b, t = raw[name, m]["best"], triton[name, m]
            ratio = t["texts_per_s"] / b["texts_per_s"]
            result[name][m] = {"raw": raw[name, m], "triton": t, "served_over_raw": ratio}
            lines.append(
                f"| {name} | {m} | {engines[m]} | {b['texts_per_s']:.1f}/s ({b['sessions']}x"
                f"{b['threads']} threads, batch {b['batch']}) | {t['texts_per_s']:.1f}/s "
                f"({t['concurrency']:.0f}) | {ratio:.3f} |"
            )
    lines += [
        "",
        "Where the time goes, CPU ms per text (both cores; texts counted by Triton): raw's best "
        "layout against each served process at the served row above.",
        "",
        "| texts | model | raw | served: python backend | tritonserver | perf_analyzer |",
        "|---|---|---|---|---|---|",
    ]
    for name in sets:
        for m in models:
            split = triton[name, m]["cpu_ms_per_text"]
            lines.append(
                f"| {name} | {m} | {raw[name, m]['best']['cpu_ms_per_text']:.2f} | "
                f"{split['python backend']:.2f} | {split['tritonserver']:.2f} | "
                f"{split['perf_analyzer']:.2f} |"
            )
    lines.append("")
    for name in sets:
        for m in [m for m in models if m != "embed_fp32"]:
            speedup = triton[name, m]["texts_per_s"] / triton[name, "embed_fp32"]["texts_per_s"]
            result[name][f"{m}_served_over_fp32_served"] = speedup
            lines.append(f"{name} texts: {m} served / embed_fp32 served = {speedup:.2f}x")
        if {"embed", "embed_int8"} <= set(models):
            over = triton[name, "embed"]["texts_per_s"] / triton[name, "embed_int8"]["texts_per_s"]
            result[name]["embed_served_over_int8_served"] = over
            lines.append(f"{name} texts: embed served / embed_int8 served = {over:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "side_by_side.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "side_by_side.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _mean_chars(texts: list[str]) -> int:
    return round(sum(map(len, texts)) / len(texts))


if __name__ == "__main__":
    main()
