"""The LLM's engine on this CPU: llama.cpp's threads and batch size, and OpenVINO GenAI on the
same packaged GGUF, reading the same prompt and generating, in process, one run.

Reading the prompt is most of an answer's first-token time (~480 tokens of evidence), and it
is a batched matrix product, while generating is one token at a time: the best thread count
and batch size may differ between the two, and so may the engine. Each llama.cpp layout
reads the same real prompt (the system prompt and project text, about as long as the eval's
prompts) from a cleared cache, then generates GEN_TOKENS greedily; OpenVINO GenAI
(`LLMPipeline` on the GGUF itself) reads the same prompt, its start changed each round so no
cached prefix helps, and generates as many. ROUNDS rounds, interleaved, medians reported as
ratios to the shipped layout (llama.cpp, all cores, n_batch from the shipped config) measured
in the same run. The first GEN_TOKENS of each engine's greedy answer are compared as a sanity
check (the engines round differently: the text may part after a while).

    python -m perf.llm_engines      # writes perf/results/llm_engines.{json,md}
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from pathlib import Path
from typing import Any

from export.llm import config_params
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


def measure(llm: Any, prompt: str) -> dict[str, Any]:
    """llama.cpp: seconds to read the prompt from a cleared cache, generated tokens per second
    and the text."""
    llm.reset()
    start = time.perf_counter()
    llm.create_completion(prompt, max_tokens=1, temperature=0)
    read_s = time.perf_counter() - start
    llm.reset()
    llm.create_completion(prompt, max_tokens=1, temperature=0)  # the prompt read, then time
    start = time.perf_counter()
    out = llm.create_completion(prompt, max_tokens=GEN_TOKENS, temperature=0, stop=[])
    tokens = int(out["usage"]["completion_tokens"])
    speed = tokens / (time.perf_counter() - start)
    return {"read_s": read_s, "tokens_per_s": speed, "text": out["choices"][0]["text"]}


def measure_openvino(pipe: Any, prompt: str, round_: int) -> dict[str, Any]:
    """OpenVINO GenAI, from its own metrics: time to the first token (the prompt read) and
    time per output token; the prompt's start changed so no cached prefix is reused."""
    import openvino_genai as og

    fresh = prompt.replace("<|im_start|>system\n", f"<|im_start|>system\nRound {round_}. ", 1)
    config = og.GenerationConfig()
    config.max_new_tokens = GEN_TOKENS
    # The prompt is templated already; GenAI would wrap it in the chat template again.
    config.apply_chat_template = False
    out = pipe.generate([fresh], config)
    metrics = out.perf_metrics
    # The answer to the unchanged prompt, compared with llama.cpp's: once is enough.
    same = pipe.generate([prompt], config).texts[0] if round_ == 0 else None
    return {
        "read_s": metrics.get_ttft().mean / 1000,
        "tokens_per_s": 1000 / metrics.get_tpot().mean,
        "text": same,
    }


def main() -> None:
    import openvino_genai as og
    from llama_cpp import Llama

    cores = os.cpu_count() or 1
    repo = Path(Settings().model_repository)
    gguf = repo / "llm" / "1" / "model.gguf"
    shipped_batch = int(config_params(repo / "llm" / "config.pbtxt")["n_batch"])
    threads = sorted({1, cores})
    layouts: list[Layout] = [
        (t, tb, b) for t, tb, b in itertools.product(threads, threads, (64, 256, 512))
    ]
    shipped: Layout = (cores, cores, shipped_batch)

    def load(layout: Layout) -> Any:
        t, tb, b = layout
        return Llama(model_path=str(gguf), n_ctx=2048, n_threads=t, n_threads_batch=tb,
                     n_batch=b, verbose=False)  # fmt: skip

    probe = load(shipped)
    prompt = prompt_text(probe)
    tokens = len(probe.tokenize(prompt.encode(), special=True))
    del probe
    runs: dict[Layout | str, list[dict[str, Any]]] = {layout: [] for layout in layouts}
    runs["openvino"] = []
    for k in range(ROUNDS):
        for layout in layouts:
            # One model loaded at a time: idle llama.cpp thread pools still spin and would
            # take cores from the one measured (they did: 20 % swings).
            llm = load(layout)
            runs[layout].append(measure(llm, prompt))
            del llm
        pipe = og.LLMPipeline(str(gguf), "CPU")  # reads the GGUF itself (Q4_1 -> int4)
        pipe.generate(["Warm up."], og.GenerationConfig(max_new_tokens=4))  # as Triton would
        runs["openvino"].append(measure_openvino(pipe, prompt, k))
        del pipe
    rows = []
    for key, measured in runs.items():
        layout = key if isinstance(key, tuple) else (cores, cores, 0)
        rows.append({
            "engine": "llama.cpp" if isinstance(key, tuple) else "openvino-genai",
            "threads": layout[0],
            "threads_batch": layout[1],
            "n_batch": layout[2] or None,
            "read_s": statistics.median(r["read_s"] for r in measured),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in measured),
            "text": measured[0]["text"],
        })  # fmt: skip
    base = next(r for r in rows if (r["threads"], r["threads_batch"], r["n_batch"]) == shipped)
    lines = [
        f"CPU: {cpu_isa()}, {cores} cores; {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB), "
        f"a {tokens}-token prompt read with nothing cached, then {GEN_TOKENS} tokens "
        f"generated greedily; medians of {ROUNDS} interleaved rounds. Shipped: llama.cpp, "
        f"threads {cores}/{cores}, n_batch {shipped_batch}.",
        "",
        "| engine | threads (generate) | threads (prompt) | n_batch | prompt read s "
        "| prompt tok/s | vs shipped | generated tok/s | vs shipped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['threads']} | {r['threads_batch']} | {r['n_batch'] or '-'} "
            f"| {r['read_s']:.3f} | {tokens / r['read_s']:.0f} "
            f"| {base['read_s'] / r['read_s']:.2f}x | {r['tokens_per_s']:.1f} "
            f"| {r['tokens_per_s'] / base['tokens_per_s']:.2f}x |"
        )
    ours, theirs = base["text"], rows[-1]["text"]
    pairs = zip(ours, theirs, strict=False)
    common = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(ours), len(theirs)))
    lines += ["", f"Greedy answers: llama.cpp {ours!r}", f"OpenVINO GenAI {theirs!r}",
              f"(the same for their first {common} characters)"]  # fmt: skip
    result = {"cpu_isa": cpu_isa(), "cores": cores, "prompt_tokens": tokens, "rows": rows}
    save_results("llm_engines", result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
