"""What the answer path costs on top of the LLM: /ask through the whole stack against the same
prompt sent straight to Triton's `llm` model, question by question, in one run.

For each question (answer cache off, so every /ask really generates): time to first token of
`POST /ask` (SSE) as a client sees it, then the LLM's own time to first token for the prompt
the llm lane built (same retrieval, same pipeline code) over gRPC to Triton, alternating the
order. Before each, an unrelated one-token prompt empties llama.cpp's prompt-prefix cache, so
both read their prompt cold. Reported: p50/p90 of the paired difference (target: <= 30 ms
at p50), and generation tokens/s both ways.

    python -m perf.answer_latency      # writes perf/results/answer_latency.{json,md}
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from orchestrator.clients.chat_template import GGUFTokenizer
from orchestrator.clients.llm import Sampling, TritonLLM
from orchestrator.pipeline import generate
from orchestrator.settings import Settings
from perf.answer_quality import CASES, documents
from perf.common import own_stack, save_results

TARGET_MS = 30.0
COLD = generate.Prompt([{"role": "user", "content": "Hello."}], [], 0)


def stack_ask(api: httpx.Client, collection: str, question: str) -> dict[str, float]:
    start = time.perf_counter()
    first: float | None = None
    done: dict[str, Any] = {}
    body = {"question": question, "stream": True}
    with api.stream("POST", f"/v1/collections/{collection}/ask", json=body) as response:
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
                if kind == "token" and first is None:
                    first = time.perf_counter()
            elif line.startswith("data:") and kind == "done":
                done = json.loads(line[5:])
    end = time.perf_counter()
    assert first is not None and done, "no answer"
    tokens = int(done["usage"]["completion_tokens"] or 0)
    return {"ttft_ms": 1000 * (first - start), "tokens": tokens, "gen_s": end - first}


async def direct(llm: TritonLLM, prompt: generate.Prompt, max_tokens: int) -> dict[str, float]:
    start = time.perf_counter()
    first: float | None = None
    tokens = 0
    async for delta in llm.stream(prompt.messages, Sampling(max_tokens)):
        if delta.text and first is None:
            first = time.perf_counter()
        tokens = delta.completion_tokens or tokens
    end = time.perf_counter()
    assert first is not None
    return {"ttft_ms": 1000 * (first - start), "tokens": tokens, "gen_s": end - first}


def run(settings: Settings) -> dict[str, Any]:
    tokenizer = GGUFTokenizer(settings.llm_tokenizer_path or Path())
    loop = asyncio.new_event_loop()

    async def connect() -> TritonLLM:  # grpc.aio binds its channel to the running loop
        return TritonLLM(settings.triton_grpc_url, settings.llm_model, tokenizer)

    llm = loop.run_until_complete(connect())
    rows = []
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=300) as api:
        files = [("files", (f"{n}.txt", t.encode())) for n, t in documents().items()]
        jobs = api.post("/v1/collections/bench/documents", files=files).json()["documents"]
        for job in jobs:
            while api.get(f"/v1/jobs/{job['job_id']}").json()["state"] not in ("indexed", "failed"):
                time.sleep(0.2)
        for i, case in enumerate(CASES):
            body = {"query": case.question, "top_k": settings.answer_top_k}
            hits = api.post("/v1/collections/bench/search", json=body).json()["data"]
            sources = generate.relevant(hits, settings.answer_min_score)
            prompt = generate.build_prompt(
                case.question,
                sources,
                tokenizer,
                settings.llm_context_tokens,
                settings.llm_max_tokens,
            )
            pair: dict[str, dict[str, float]] = {}
            for side in ("stack", "direct") if i % 2 == 0 else ("direct", "stack"):
                # llama.cpp reuses the cached prefix of the previous prompt: start both cold.
                loop.run_until_complete(direct(llm, COLD, 1))
                if side == "stack":
                    pair[side] = stack_ask(api, "bench", case.question)
                else:
                    coro = direct(llm, prompt, settings.llm_max_tokens)
                    pair[side] = loop.run_until_complete(coro)
            rows.append(pair)
            print(i, {k: round(v["ttft_ms"], 1) for k, v in pair.items()})
    loop.run_until_complete(llm.aclose())
    return summarize(rows)


def summarize(rows: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    diffs = sorted(r["stack"]["ttft_ms"] - r["direct"]["ttft_ms"] for r in rows)

    def rate(side: str) -> float:
        tokens = sum(r[side]["tokens"] for r in rows)
        return round(tokens / sum(r[side]["gen_s"] for r in rows), 1)

    return {
        "questions": len(rows),
        "stack_ttft_p50_ms": round(statistics.median(r["stack"]["ttft_ms"] for r in rows), 1),
        "direct_ttft_p50_ms": round(statistics.median(r["direct"]["ttft_ms"] for r in rows), 1),
        "overhead_p50_ms": round(statistics.median(diffs), 1),
        "overhead_p90_ms": round(diffs[int(0.9 * (len(diffs) - 1))], 1),
        "stack_tokens_per_s": rate("stack"),
        "direct_tokens_per_s": rate("direct"),
        "rows": rows,
    }


def report(r: dict[str, Any]) -> str:
    verdict = "met" if r["overhead_p50_ms"] <= TARGET_MS else "NOT met"
    return (
        "\n".join(
            [
                f"# /ask vs Triton `llm` directly ({r['questions']} questions, answer cache off)",
                "",
                "| measure | /ask (whole stack) | Triton directly |",
                "|---|---|---|",
                f"| time to first token, p50 ms | {r['stack_ttft_p50_ms']} | "
                f"{r['direct_ttft_p50_ms']} |",
                f"| generation tokens/s | {r['stack_tokens_per_s']} | {r['direct_tokens_per_s']} |",
                "",
                f"Stack overhead on time to first token (paired per question): p50 "
                f"{r['overhead_p50_ms']} ms, p90 {r['overhead_p90_ms']} ms; "
                f"target <= {TARGET_MS:g} ms at p50: {verdict}.",
            ]
        )
        + "\n"
    )


def main() -> None:
    with own_stack(answer_cache_ttl_s=0) as settings:
        results = run(settings)
    save_results("answer_latency", results, report(results))


if __name__ == "__main__":
    main()
