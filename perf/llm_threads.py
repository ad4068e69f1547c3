"""llama.cpp on this CPU: threads and batch size for reading a prompt and for generating, with
the packaged model in process, one run.

Reading the prompt is most of an answer's first-token time (~480 tokens of evidence), and it
is a batched matrix product, while generating is one token at a time: the best thread count
and batch size may differ between the two. Each layout reads the same real prompt (the
system prompt and project text, about as long as the eval's prompts) from a cleared cache,
then generates GEN_TOKENS greedily; ROUNDS rounds, the layouts interleaved, medians reported
as ratios to the shipped layout (all cores for both, n_batch 512) measured in the same run.

    python -m perf.llm_threads      # writes perf/results/llm_threads.{json,md}
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from pathlib import Path
from typing import Any

from export.run import cpu_isa
from orchestrator.pipeline.generate import SYSTEM_PROMPT
from orchestrator.settings import ROOT, Settings
from perf.common import save_results

ROUNDS = int(os.environ.get("LLM_ROUNDS", "3"))
GEN_TOKENS = 48
PROMPT_TOKENS = 480  # the eval's prompts average 477 (perf/results/decoding.md)
Layout = tuple[int, int, int]  # threads (generate), threads (read the prompt), n_batch


def prompt_text(llm: Any) -> str:
    """The system prompt and a question over project text, PROMPT_TOKENS long."""
    words = (ROOT / "docs" / "retrieval.md").read_text().split()
    question = "\n\nWhich fusion does hybrid search use by default?"
    for n in range(200, len(words), 20):
        body = " ".join(words[:n])
        text = (
            f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{body}{question}"
            "<|im_end|>\n<|im_start|>assistant\n"
        )
        if len(llm.tokenize(text.encode(), special=True)) >= PROMPT_TOKENS:
            return text
    raise SystemExit("the source text is too short for the prompt")


def measure(llm: Any, prompt: str) -> dict[str, float]:
    """Seconds to read the prompt from a cleared cache, and generated tokens per second."""
    llm.reset()
    start = time.perf_counter()
    llm.create_completion(prompt, max_tokens=1, temperature=0)
    read_s = time.perf_counter() - start
    llm.reset()
    llm.create_completion(prompt, max_tokens=1, temperature=0)  # the prompt read, then time
    start = time.perf_counter()
    out = llm.create_completion(prompt, max_tokens=GEN_TOKENS, temperature=0, stop=[])
    tokens = int(out["usage"]["completion_tokens"])
    return {"read_s": read_s, "tokens_per_s": tokens / (time.perf_counter() - start)}


def main() -> None:
    from llama_cpp import Llama

    cores = os.cpu_count() or 1
    gguf = Path(Settings().model_repository) / "llm" / "1" / "model.gguf"
    threads = sorted({1, cores})
    layouts: list[Layout] = [
        (t, tb, b) for t, tb, b in itertools.product(threads, threads, (64, 256, 512))
    ]
    shipped: Layout = (cores, cores, 512)
    models = {
        layout: Llama(
            model_path=str(gguf),
            n_ctx=2048,
            n_threads=layout[0],
            n_threads_batch=layout[1],
            n_batch=layout[2],
            verbose=False,
        )
        for layout in layouts
    }
    prompt = prompt_text(models[shipped])
    tokens = len(models[shipped].tokenize(prompt.encode(), special=True))
    runs: dict[Layout, list[dict[str, float]]] = {layout: [] for layout in layouts}
    for _ in range(ROUNDS):
        for layout in layouts:
            runs[layout].append(measure(models[layout], prompt))
    rows = []
    for layout in layouts:
        read = statistics.median(r["read_s"] for r in runs[layout])
        speed = statistics.median(r["tokens_per_s"] for r in runs[layout])
        rows.append({"threads": layout[0], "threads_batch": layout[1], "n_batch": layout[2],
                     "read_s": read, "prompt_tokens_per_s": tokens / read,
                     "tokens_per_s": speed})  # fmt: skip
    base = next(r for r in rows if (r["threads"], r["threads_batch"], r["n_batch"]) == shipped)
    lines = [
        f"CPU: {cpu_isa()}, {cores} cores; {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB), "
        f"a {tokens}-token prompt read from a cleared cache, then {GEN_TOKENS} tokens "
        f"generated greedily; medians of {ROUNDS} interleaved rounds. Shipped: threads "
        f"{cores}/{cores}, n_batch 512.",
        "",
        "| threads (generate) | threads (prompt) | n_batch | prompt read s | prompt tok/s "
        "| vs shipped | generated tok/s | vs shipped |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['threads']} | {r['threads_batch']} | {r['n_batch']} | {r['read_s']:.3f} "
            f"| {r['prompt_tokens_per_s']:.0f} | {base['read_s'] / r['read_s']:.2f}x "
            f"| {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f}x |"
        )
    result = {"cpu_isa": cpu_isa(), "cores": cores, "prompt_tokens": tokens, "rows": rows}
    save_results("llm_threads", result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
