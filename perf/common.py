"""What the benchmarks share: the perf_analyzer binary, its input data, a Triton to measure."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_repository.backend.encoder import Matrix, Variant
from orchestrator.cli.tritonserver import free_port
from orchestrator.settings import PORT_FIELDS, Settings

RESULTS = Path(__file__).resolve().parent / "results"


def noisy_batches(
    seeds: Matrix, count: int, rng: np.random.Generator, batch: int = 5000
) -> Iterator[tuple[int, NDArray[np.int64], NDArray[np.float64]]]:
    """`count` unit vectors scattered around `seeds` (real embeddings plus noise), `batch`
    at a time: (offset of the batch, the seed each row came from, the rows)."""
    for offset in range(0, count, batch):
        idx = rng.integers(0, len(seeds), size=min(batch, count - offset))
        rows = seeds[idx] + rng.normal(scale=0.03, size=(len(idx), seeds.shape[1]))
        yield offset, idx, rows / np.linalg.norm(rows, axis=1, keepdims=True)


def engine_of(folder: Path) -> str:
    """What a published model folder runs, as report rows name it: engine and variant."""
    meta = Variant.load(folder)
    return f"{meta.engine} {meta.variant.removeprefix('openvino-')}"


def save_results(name: str, results: Any, markdown: str, folder: Path = RESULTS) -> None:
    """`name`.json (machine-readable) and `name`.md (the table) in `folder`; prints the table."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / f"{name}.md").write_text(markdown)
    print(markdown)


def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer links libcudart.so.12, shipped by the nvidia-cuda-runtime-cu12 wheel."""
    import nvidia.cuda_runtime

    lib = Path(next(iter(nvidia.cuda_runtime.__path__))) / "lib"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib), env.get("LD_LIBRARY_PATH")]))
    return env


def perf_analyzer_bin() -> str:
    found = Path(sys.executable).parent / "perf_analyzer"
    return str(found) if found.exists() else (shutil.which("perf_analyzer") or "perf_analyzer")


def write_input_data(texts: list[str], folder: Path) -> Path:
    """perf_analyzer's --input-data JSON: one request per text, real text."""
    path = folder / "input_data.json"
    steps = [{"text": {"content": [t], "shape": [1]}} for t in texts]
    path.write_text(json.dumps({"data": steps}))
    return path


def run_perf_analyzer(
    settings: Settings, model: str, texts: list[str], concurrency: int, seconds: float = 5.0
) -> dict[str, float]:
    """One perf_analyzer measurement over gRPC at a fixed concurrency; returns its CSV row."""
    with tempfile.TemporaryDirectory() as tmp:
        data = write_input_data(texts, Path(tmp))
        out = Path(tmp) / "out.csv"
        cmd = [
            perf_analyzer_bin(), "-m", model, "-i", "grpc", "-u", settings.triton_grpc_url,
            "--input-data", str(data), "--concurrency-range", f"{concurrency}:{concurrency}",
            "--measurement-interval", str(int(seconds * 1000)), "--stability-percentage", "50",
            "--max-trials", "10", "-f", str(out), "--percentile", "99",
        ]  # fmt: skip
        run = subprocess.run(
            cmd, env=perf_analyzer_env(), capture_output=True, text=True, check=False
        )
        if run.returncode != 0:
            raise RuntimeError(
                f"perf_analyzer failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
            )
        row = next(csv.DictReader(io.StringIO(out.read_text())))
    return {k: float(v) for k, v in row.items() if _is_number(v)}


def bench_settings(runtime_dir: Path) -> Settings:
    """Free ports, every variant loaded (they are compared) and no response cache: repeated
    texts must cost a real inference."""
    return Settings(
        triton_load_all=True,
        triton_http_port=free_port(),
        triton_grpc_port=free_port(),
        triton_metrics_port=free_port(),
        triton_cache_mb=0,
        runtime_dir=runtime_dir,
    )


@contextmanager
def own_stack(**overrides: Any) -> Iterator[Settings]:
    """The embedded stack on free ports in a temporary folder, stopped on exit."""
    from orchestrator.cli import launcher as embedded

    with tempfile.TemporaryDirectory() as tmp:
        ports = {p: free_port() for p in PORT_FIELDS}
        settings = Settings(runtime_dir=Path(tmp), **(ports | overrides))
        embedded.up(settings, print)
        try:
            yield settings
        finally:
            embedded.down(settings, print)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
