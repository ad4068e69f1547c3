"""The `tritonrag` command."""

from __future__ import annotations

import asyncio
import json
import logging
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
    judge_all: Annotated[
        bool,
        typer.Option(help="judge every candidate's quality, not only those fast enough to serve"),
    ] = False,
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
    from orchestrator.cli.export_report import show_export

    show_export(console, export_cpu(settings, model_dir, judge_all))


@app.command("publish-llm")
def publish_llm(
    model: Annotated[
        str | None, typer.Option(help="smollm2 | gemma3 | a GGUF path (default: llm_gguf)")
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="auto | llama.cpp | openvino (default: llm_engine)")
    ] = None,
) -> None:
    """Publish a GGUF chat model as Triton's `llm` model, run by the engine that works and
    answers first on this CPU (llama.cpp or OpenVINO GenAI)."""
    from export.llm import ENGINES, why_not
    from export.llm import publish_llm as publish

    if engine is not None and engine not in ("auto", *ENGINES):
        raise typer.BadParameter(f"engine is auto or one of {', '.join(ENGINES)}")
    path, trials, chosen = publish(Settings(), model, engine)
    for trial in trials:
        if trial.failure:
            console.print(f"  {trial.engine}: cannot serve here ({trial.failure})")
        else:
            console.print(
                f"  {trial.engine}: first token {trial.first_token_s:.2f}s on a ~480-token "
                f"prompt, {trial.rss_mb:.0f} MB resident"
            )
        if (reason := why_not(trial, chosen)) is not None:
            console.print(f"  {trial.engine}: not chosen: {reason}")
    size = path.stat().st_size / 2**20
    console.print(f"`llm` serves {path.resolve()} ({size:.0f} MiB) with {chosen.engine}")


@app.command()
def triton() -> None:
    """Run Triton in the foreground until Ctrl-C or SIGTERM."""
    from orchestrator.cli.tritonserver import TritonProcess

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
    """Start Redis, Triton, a Celery worker and the API in the background; return when all
    are ready. Parts already running are left alone, missing ones are started."""
    from orchestrator.cli import launcher as stack

    settings = Settings()
    try:
        stack.up(settings, console.print)
    except stack.StackError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"ready: http://{settings.host}:{settings.port} (logs in {settings.runtime_dir})")
    from orchestrator.cli import prometheus

    if prometheus.binary():
        console.print(f"metrics: {prometheus.url(settings)} (look with `tritonrag top`)")
    else:
        console.print("no Prometheus here (apt-get install prometheus): running unmonitored")


@app.command()
def down() -> None:
    """Stop what `up` started, and nothing else."""
    from orchestrator.cli import launcher as stack

    if stack.down(Settings(), console.print) == 0:
        console.print("nothing to stop")


@app.command()
def status() -> None:
    """Each part's pid and readiness."""
    from orchestrator.cli import launcher as stack

    table = Table("part", "pid", "ready")
    for name, state in stack.status(Settings()).items():
        table.add_row(name, str(state["pid"] or "-"), str(state["ready"]))
    console.print(table)


@app.command()
def top(
    interval: Annotated[float, typer.Option(help="seconds between refreshes")] = 2.0,
    once: Annotated[bool, typer.Option(help="print one snapshot and exit")] = False,
    url: Annotated[str | None, typer.Option(help="Prometheus URL")] = None,
) -> None:
    """Live view of the dashboards' key panels (Triton, pipeline, API, LLM) from Prometheus."""
    import time

    import httpx
    from rich.live import Live

    from orchestrator.cli import prometheus
    from orchestrator.cli.top import render

    base = url or prometheus.url(Settings())
    with httpx.Client(base_url=base, timeout=10) as client:
        try:
            view = render(client)
        except httpx.HTTPError as exc:
            console.print(f"[red]no Prometheus at {base}: {exc}[/red] (is the stack up?)")
            raise typer.Exit(1) from exc
        if once:
            console.print(view)
            return
        with Live(view, console=console, screen=True, auto_refresh=False) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(render(client), refresh=True)
            except KeyboardInterrupt:
                pass


@app.command()
def dashboards() -> None:
    """Write grafana/dashboards/*.json from cli/dashboards.py (needs the dev extras)."""
    from orchestrator.cli.dashboards import write

    for path in write():
        console.print(f"wrote {path}")


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files or folders (recursively)")],
    collection: Annotated[str, typer.Option("--collection", "-c")] = "docs",
    url: Annotated[str | None, typer.Option(help="orchestrator URL")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="TRITONRAG_API_KEY")] = None,
) -> None:
    """Upload documents and show a progress bar until every one is indexed or failed."""
    from orchestrator.cli.ingest import ingest_paths

    settings = Settings()
    failed = ingest_paths(
        url or f"http://{settings.host}:{settings.port}", api_key, collection, paths, console
    )
    if failed:
        raise typer.Exit(1)


@app.command()
def search(
    query: Annotated[str, typer.Argument()],
    collection: Annotated[str, typer.Option("--collection", "-c")] = "docs",
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    mode: Annotated[
        str | None, typer.Option(help="dense | sparse | hybrid (default: the server's)")
    ] = None,
    url: Annotated[str | None, typer.Option(help="orchestrator URL")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="TRITONRAG_API_KEY")] = None,
) -> None:
    """Search a collection and print the hits."""
    import httpx

    settings = Settings()
    base = url or f"http://{settings.host}:{settings.port}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {"query": query, "top_k": top_k} | ({"mode": mode} if mode else {})
    response = httpx.post(
        f"{base}/v1/collections/{collection}/search", json=body, headers=headers, timeout=30
    )
    if response.status_code != 200:
        console.print(f"[red]{response.status_code}: {response.text}[/red]")
        raise typer.Exit(1)
    found = response.json()
    title = f"{query!r} in {collection} ({found['mode']})"
    table = Table("score", "document", "chunk", "text", title=title)
    for hit in found["data"]:
        text = " ".join(hit["text"].split())
        table.add_row(
            f"{hit['score']:.3f}", hit["document_id"], str(hit["chunk_index"]), text[:160]
        )
    console.print(table)


@app.command()
def reindex(
    collection: Annotated[str, typer.Argument()],
    model: Annotated[
        str | None,
        typer.Option(help="re-embed every chunk with this Triton embedding model"),
    ] = None,
    wait: Annotated[bool, typer.Option(help="follow it until it is done")] = True,
    url: Annotated[str | None, typer.Option(help="orchestrator URL")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="TRITONRAG_API_KEY")] = None,
) -> None:
    """Re-index a collection in the background, searches answering throughout: with
    --model (or when the served model is not the collection's), every chunk is embedded
    again into a new collection that is swapped in when done; otherwise BM25 vectors are
    added to a collection indexed before they existed."""
    import time

    import httpx

    settings = Settings()
    base = url or f"http://{settings.host}:{settings.port}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.post(
        f"{base}/v1/collections/{collection}/reindex",
        headers=headers,
        json={"model": model},
        timeout=30,
    )
    while True:
        if response.status_code not in (200, 202):
            console.print(f"[red]{response.status_code}: {response.text}[/red]")
            raise typer.Exit(1)
        state = response.json()
        progress = state.get("rebuild") or {}
        if progress.get("state") == "failed":
            console.print(f"[red]re-index failed: {progress.get('reason')}[/red]")
            raise typer.Exit(1)
        if not (wait and state["reindexing"]):
            break
        if progress:
            copied, total = progress["documents_copied"], progress["documents_total"]
            console.print(f"{collection}: {copied}/{total} documents into {progress['model']}")
        time.sleep(2)
        response = httpx.get(f"{base}/v1/collections/{collection}", headers=headers, timeout=30)
    done = "is re-indexing" if state["reindexing"] else "re-indexed"
    name = (state.get("model") or {}).get("name", "?")
    sparse = "with" if state["sparse"] else "without"
    console.print(f"{collection}: {state['points']} points by {name}, {sparse} BM25, {done}")


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


@app.command()
def ask(
    question: Annotated[str, typer.Argument()],
    collection: Annotated[str, typer.Option("--collection", "-c")] = "docs",
    top_k: Annotated[int | None, typer.Option("--top-k", "-k")] = None,
    url: Annotated[str | None, typer.Option(help="orchestrator URL")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="TRITONRAG_API_KEY")] = None,
) -> None:
    """Ask a collection: stream the answer, then print the sources it cites."""
    from orchestrator.cli.ask import ask_stream

    settings = Settings()
    base = url or f"http://{settings.host}:{settings.port}"
    if not ask_stream(base, api_key, collection, question, top_k, console):
        raise typer.Exit(1)


@app.command("eval")
def evaluate(
    questions: Annotated[Path, typer.Argument(help="JSONL: question, document, answer (regex)")],
    collection: Annotated[str, typer.Option("--collection", "-c")] = "docs",
    out: Annotated[Path, typer.Option(help="folder for eval-<collection>.json and .md")] = Path(),
    mode: Annotated[
        list[str] | None, typer.Option(help="dense | sparse | hybrid (repeat for several)")
    ] = None,
    answer_mode: Annotated[
        list[str] | None, typer.Option(help="generate | quote | auto (repeat for several)")
    ] = None,
    url: Annotated[str | None, typer.Option(help="orchestrator URL")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="TRITONRAG_API_KEY")] = None,
) -> None:
    """Ask every question of an eval file through the API; score retrieval (hit@k, MRR) and
    answers (fact in the answer, right document cited, supported sentences, first-token and
    total latency), one run per retrieval mode x answer mode (default: the server's)."""
    from orchestrator.cli import evaluate as run_eval
    from orchestrator.errors import TritonRagError
    from orchestrator.pipeline.score import load_cases

    settings = Settings()
    try:
        cases = load_cases(questions)
    except (OSError, TritonRagError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    base = url or f"http://{settings.host}:{settings.port}"
    if problem := run_eval.bad_modes(mode or [], answer_mode or []):
        console.print(f"[red]{problem}[/red]")
        raise typer.Exit(2)
    modes: list[str | None] = [*mode] if mode else [None]
    answer_modes: list[str | None] = [*answer_mode] if answer_mode else [None]
    runs = run_eval.run(base, api_key, collection, cases, console, modes, answer_modes)
    if any(r["summary"]["errors"] for r in run_eval.report(console, collection, runs, out)):
        raise typer.Exit(1)
