"""The `tritonrag` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.settings import Settings

app = typer.Typer(
    help="tritonrag: RAG around NVIDIA Triton Inference Server.", no_args_is_help=True
)
console = Console()


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


@app.command()
def export(
    model_dir: Annotated[
        Path | None, typer.Option(help="sentence-transformers model directory")
    ] = None,
    target: Annotated[str, typer.Option(help="cpu | gpu")] = "cpu",
) -> None:
    """Export the embedding model to ONNX (+ int8), gate it on parity and publish it."""
    logging.getLogger("tritonrag.export").setLevel(logging.INFO)
    settings = Settings()
    if target == "gpu":
        from export.gpu import export_gpu

        export_gpu(settings, model_dir)
        return
    if target != "cpu":
        raise typer.BadParameter("target is cpu or gpu")
    from export.run import export_cpu

    report = export_cpu(settings, model_dir)
    fp32, int8 = report["fp32"], report["int8"]
    table = Table("variant", "min cos", "mean cos", "top-10 overlap", "texts/s", "passed")
    table.add_row(
        "fp32",
        f"{fp32['parity']['min_cosine']:.6f}",
        f"{fp32['parity']['mean_cosine']:.6f}",
        "1.000",
        str(fp32["texts_per_s"]),
        str(fp32["passed"]),
    )
    for name, r in int8.items():
        table.add_row(
            f"int8 {name}",
            f"{r['parity']['min_cosine']:.4f}",
            f"{r['parity']['mean_cosine']:.4f}",
            f"{r['top10_overlap_vs_fp32']:.3f}",
            str(r["texts_per_s"]),
            str(r["passed"]),
        )
    console.print(table)
    console.print(f"CPU: {report['cpu_isa']}; `embed` serves [bold]{report['embed_serves']}[/bold]")


def _pid_file(settings: Settings) -> Path:
    return settings.runtime_dir / "triton.pid"


@app.command()
def triton() -> None:
    """Run Triton in the foreground until Ctrl-C or SIGTERM."""
    from orchestrator.tritonserver import TritonProcess

    settings = Settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with TritonProcess.start(settings) as server:
        server.wait_ready()
        console.print(
            f"Triton ready: http {settings.triton_http_url}, grpc {settings.triton_grpc_url}, "
            f"metrics :{settings.triton_metrics_port}; log {server.log_file}"
        )
        try:
            while not stop.is_set() and server.process.poll() is None:
                stop.wait(0.5)
        except KeyboardInterrupt:
            pass
    console.print("Triton stopped")


@app.command()
def up() -> None:
    """Start Triton in the background and return once it is ready."""
    from orchestrator.tritonserver import TritonProcess, is_ready

    settings = Settings()
    if _running_pid(settings) is not None and is_ready(settings):
        console.print("Triton already running and ready")
        return
    server = TritonProcess.start(settings, detach=True)
    _pid_file(settings).write_text(str(server.process.pid))
    server.wait_ready()
    console.print(f"Triton ready (pid {server.process.pid}); log {server.log_file}")


@app.command()
def down() -> None:
    """Stop what `up` started, and nothing else."""
    settings = Settings()
    pid = _running_pid(settings)
    if pid is None:
        console.print("nothing to stop")
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(120):
        if _running_pid(settings) is None:
            break
        threading.Event().wait(0.25)
    else:
        os.kill(pid, signal.SIGKILL)
    _pid_file(settings).unlink(missing_ok=True)
    console.print(f"stopped Triton (pid {pid})")


@app.command()
def status() -> None:
    """Say whether Triton is running and ready."""
    from orchestrator.tritonserver import is_ready

    settings = Settings()
    pid = _running_pid(settings)
    console.print(f"triton: pid {pid or '-'}, ready {is_ready(settings)}")


def _running_pid(settings: Settings) -> int | None:
    """The pid in our pid file, if that process is still our tritonserver."""
    try:
        pid = int(_pid_file(settings).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"tritonserver" in cmdline else None


@app.command()
def embed(
    texts: Annotated[list[str], typer.Argument(help="texts to embed")],
    model: Annotated[str | None, typer.Option(help="Triton model (default: embed)")] = None,
) -> None:
    """Embed texts through Triton (gRPC) and print their cosine similarities."""
    from orchestrator.clients.triton import TritonEmbedder

    settings = Settings()

    async def run() -> None:
        async with TritonEmbedder.connect(settings) as client:
            result = await client.embed(texts, model=model)
        vectors = result.embeddings
        table = Table(
            "", *[f"#{i}" for i in range(len(texts))], title=f"cosine similarity ({result.variant})"
        )
        for i, text in enumerate(texts):
            row = [f"{float(vectors[i] @ vectors[j]):.3f}" for j in range(len(texts))]
            table.add_row(f"#{i} {text[:40]}", *row)
        console.print(table)
        console.print(json.dumps({"dim": int(vectors.shape[1]), "tokens": result.token_counts}))

    asyncio.run(run())
