"""Hot questions cost one generation: N callers ask the same new question at once (SSE), on a
stack of its own with the shipped defaults. Reported: answers generated (the llm lane's own
counter), answers received, and each caller's first token against the first caller's.

    python -m perf.hot_question      # writes perf/results/hot_question.{json,md}
    HOT_CALLERS=20 HOT_ROUNDS=3      # the defaults
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import httpx

from orchestrator.settings import Settings
from perf.common import own_stack, save_results

CALLERS = int(os.environ.get("HOT_CALLERS", "20"))
ROUNDS = int(os.environ.get("HOT_ROUNDS", "3"))
DOCS = {
    "backups.txt": "Backups of the vector store run every night at 02:00 UTC and are kept "
    "for 35 days in the backup bucket. Restores take about an hour.",
    "keys.md": "The security team rotates every API key every 90 days. To rotate a key "
    "yourself, run `tritonrag keys rotate` and then restart the API.",
}


async def caller(http: httpx.AsyncClient, question: str, start: float) -> dict[str, Any]:
    """One SSE ask; when its first token and its end came, relative to `start`."""
    first: float | None = None
    text: list[str] = []
    body = {"question": question, "stream": True}
    for _ in range(10):
        async with http.stream("POST", "/v1/collections/hot/ask", json=body) as response:
            if response.status_code == 429:  # a client retries after Retry-After
                await asyncio.sleep(float(response.headers["retry-after"]))
                continue
            kind = ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:") and kind == "token":
                    first = first or time.perf_counter()
                    text.append(json.loads(line[5:])["text"])
            return {
                "status": response.status_code,
                "first_token_s": None if first is None else first - start,
                "done_s": time.perf_counter() - start,
                "answer": "".join(text),
            }
    return {"status": 429, "first_token_s": None, "done_s": None, "answer": ""}


def generated(settings: Settings) -> float:
    url = f"http://127.0.0.1:{settings.llm_worker_metrics_port}/metrics"
    rows = httpx.get(url, timeout=10).text.splitlines()
    return sum(float(r.split()[-1]) for r in rows if r.startswith("tritonrag_llm_answers_total{"))


async def one_round(settings: Settings, n: int) -> dict[str, Any]:
    question = f"How long are the backups kept, and when do they run? (round {n}, {time.time()})"
    before = generated(settings)
    limits = httpx.Limits(max_connections=CALLERS)
    base = f"http://127.0.0.1:{settings.port}"
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as http:
        start = time.perf_counter()
        got = await asyncio.gather(*(caller(http, question, start) for _ in range(CALLERS)))
    firsts = sorted(r["first_token_s"] for r in got if r["first_token_s"] is not None)
    spread_ms = [1000 * (f - firsts[0]) for f in firsts]
    return {
        "callers": CALLERS,
        "answered": sum(r["status"] == 200 and bool(r["answer"]) for r in got),
        "distinct_answers": len({r["answer"] for r in got}),
        "generations": round(generated(settings) - before),
        "first_token_s": round(firsts[0], 3) if firsts else None,
        "spread_ms_p50": round(spread_ms[len(spread_ms) // 2], 1) if spread_ms else None,
        "spread_ms_max": round(spread_ms[-1], 1) if spread_ms else None,
    }


def main() -> None:
    rounds = []
    with own_stack() as settings:
        files = [("files", (name, text.encode())) for name, text in DOCS.items()]
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=60) as http:
            jobs = http.post("/v1/collections/hot/documents", files=files).json()["documents"]
            for job in jobs:
                while http.get(f"/v1/jobs/{job['job_id']}").json()["state"] != "indexed":
                    time.sleep(0.2)
        for n in range(ROUNDS):
            rounds.append(asyncio.run(one_round(settings, n)))
            print(rounds[-1])
    lines = [
        f"# {CALLERS} callers ask the same new question at once ({ROUNDS} rounds)",
        "",
        "| round | answered | distinct answers | generations | first caller's first token s "
        "| others' first token after it, p50 / max ms |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rounds, 1):
        lines.append(
            f"| {i} | {r['answered']}/{r['callers']} | {r['distinct_answers']} | "
            f"{r['generations']} | {r['first_token_s']} | {r['spread_ms_p50']} / "
            f"{r['spread_ms_max']} |"
        )
    save_results("hot_question", rounds, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
