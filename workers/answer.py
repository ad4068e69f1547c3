"""The llm lane: fit the sources into the prompt, stream the LLM's answer into a Redis stream
the API relays as SSE, stop when the API says the client went away.

Events (JSON in field `event`): `sources` (which numbered sources fit, prompt tokens),
`token` (text), then `done` (usage, timings) or `error` (the project's error body).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import redis.asyncio as aioredis
from opentelemetry.trace import SpanKind

from orchestrator import lanes
from orchestrator.clients.chat_template import Message
from orchestrator.clients.llm import LLM, Sampling, open_llm
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.jobs import JobStore, answer_key, async_client, cancel_key
from orchestrator.metrics import (
    LLM_ANSWERS,
    LLM_FIRST_TOKEN_SECONDS,
    LLM_TOKENS,
    LLM_TOKENS_PER_SECOND,
)
from orchestrator.pipeline.generate import Source, build_prompt
from orchestrator.pipeline.loops import loop_start
from orchestrator.settings import Settings
from orchestrator.tracing import tracer
from workers.celery_app import app
from workers.runtime import BackgroundLoop

EVENTS_TTL_S = 300


class LLMRuntime:
    """What an llm-lane worker process opens once: a loop, the LLM adapter, async Redis."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = BackgroundLoop()
        # grpc.aio and redis.asyncio bind to the loop they are created in.
        self.llm, self.redis = self.loop.run(_open(settings))


async def _open(settings: Settings) -> tuple[LLM, aioredis.Redis]:
    return open_llm(settings), async_client(settings.broker_url, socket_timeout=10)


_lock = threading.Lock()
_runtime: LLMRuntime | None = None


def llm_runtime() -> LLMRuntime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = LLMRuntime(Settings())
        return _runtime


# Acked on receipt: an answer is interactive; if its worker dies the caller times out and asks
# again, a redelivery half an hour later would answer no one.
@app.task(name=lanes.ANSWER, acks_late=False)
def answer(
    request_id: str, question: str, history: list[Message], sources: list[dict[str, Any]]
) -> None:
    try:
        rt = llm_runtime()
    except (Exception, SystemExit) as exc:  # no LLM to talk to: say so instead of going quiet
        error = TritonRagError(ErrorCode.NOT_READY, f"the llm lane cannot start: {exc}", 5)
        JobStore.from_url(Settings().broker_url).redis.xadd(
            answer_key(request_id), {"event": json.dumps({"type": "error", **error.body()})}
        )
        raise
    rt.loop.run(generate(rt, request_id, question, history, [Source.from_dict(s) for s in sources]))


async def generate(
    rt: LLMRuntime, request_id: str, question: str, history: list[Message], sources: list[Source]
) -> None:
    key = answer_key(request_id)
    s = rt.settings

    async def emit(event: dict[str, Any]) -> None:
        await rt.redis.xadd(key, {"event": json.dumps(event)})

    try:
        prompt = build_prompt(
            question, sources, rt.llm.tokenizer, s.llm_context_tokens, s.llm_max_tokens, history
        )
        await emit(
            {
                "type": "sources",
                "numbers": [x.number for x in prompt.sources],
                "prompt_tokens": prompt.prompt_tokens,
            }
        )
        async with asyncio.timeout(s.llm_timeout_s):
            usage = await _relay(rt, request_id, prompt.messages, emit)
        outcome = "cancelled" if usage["cancelled"] else "loop" if usage["looped"] else "completed"
        LLM_ANSWERS.labels(outcome).inc()
        await emit({"type": "done", **usage})
    except TritonRagError as exc:
        LLM_ANSWERS.labels("error").inc()
        await emit({"type": "error", **exc.body()})
    except TimeoutError:
        LLM_ANSWERS.labels("timeout").inc()
        error = TritonRagError(
            ErrorCode.UPSTREAM_TIMEOUT, f"the answer took longer than {s.llm_timeout_s:g}s"
        )
        await emit({"type": "error", **error.body()})
    finally:
        await rt.redis.expire(key, EVENTS_TTL_S)


async def _relay(
    rt: LLMRuntime, request_id: str, messages: list[Message], emit: Any
) -> dict[str, Any]:
    s = rt.settings
    start = time.perf_counter()
    first: float | None = None
    completion = 0
    prompt_tokens: int | None = None
    cancelled = looped = False
    said = ""
    sampling = Sampling(s.llm_max_tokens, s.llm_temperature, repeat_penalty=s.llm_repeat_penalty)
    stream = rt.llm.stream(messages, sampling)
    with tracer.start_as_current_span(f"llm {rt.llm.name}", kind=SpanKind.CLIENT) as span:
        try:
            async for delta in stream:
                if await rt.redis.exists(cancel_key(request_id)):
                    cancelled = True
                    break
                if delta.text:
                    first = first or time.perf_counter()
                    cut = loop_start(said + delta.text)
                    text = delta.text if cut is None else (said + delta.text)[len(said) : cut]
                    if text:
                        await emit({"type": "token", "text": text})
                    said += text
                    if cut is not None:  # the answer repeats itself: keep what came before
                        looped = True
                        break
                if delta.completion_tokens is not None:
                    completion, prompt_tokens = delta.completion_tokens, delta.prompt_tokens
        finally:
            await stream.aclose()  # cancels the generation upstream when we stop early
        span.set_attribute("llm.completion_tokens", completion)
    end = time.perf_counter()
    if first is not None:
        LLM_FIRST_TOKEN_SECONDS.observe(first - start)
        if completion > 1 and end > first:
            LLM_TOKENS_PER_SECOND.observe((completion - 1) / (end - first))
    LLM_TOKENS.labels("prompt").inc(prompt_tokens or 0)
    LLM_TOKENS.labels("completion").inc(completion)
    return {
        "cancelled": cancelled,
        "looped": looped,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion or None,
        "llm_first_token_ms": None if first is None else round(1000 * (first - start), 2),
        "llm_total_ms": round(1000 * (time.perf_counter() - start), 2),
    }
