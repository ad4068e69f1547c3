"""Answering a question, as a stream of events shared by /ask and /v1/chat/completions.

retrieve (query lane) -> relevant hits -> none: the no-sources answer, no LLM call -> evidence
sentences -> answer_mode quote: the best of them, no LLM call; else the llm lane generates
(workers/answer.py) -> tokens relayed from a Redis stream -> each sentence checked against the
sources (pipeline/grounding.py; auto: a quote instead unless all are supported) -> citations ->
cache.
Identical questions in flight at once share one generation (api/answer_cache.py). An error
before the first token raises TritonRagError (a 5xx for JSON callers); the caller going away
(the generator closed early) tells the llm lane to stop, unless others relay the same answer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import anyio

from orchestrator import timing
from orchestrator.api import answer_cache, passages
from orchestrator.api.answer_cache import Flight
from orchestrator.api.passages import Event, Evidence, Question
from orchestrator.api.services import Services
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.jobs import answer_key, cancel_key
from orchestrator.lanes import ANSWER, LLM
from orchestrator.metrics import ANSWERS_REFUSED, CACHE
from orchestrator.pipeline import generate

XREAD_BLOCK_S = 5.0


async def answer_events(services: Services, q: Question) -> AsyncGenerator[Event, None]:
    """`token`* then `grounding`, on an auto fallback `answer`, then `citations` and `done`;
    see the module docstring for errors."""
    start = time.perf_counter()
    mode = q.answer_mode or services.settings.answer_mode
    key = _cache_key(services, q, mode)
    cached = await services.redis.get(key) if services.settings.answer_cache_ttl_s else None
    if services.settings.answer_cache_ttl_s:
        CACHE.labels("answer", "hit" if cached else "miss").inc()
    if cached:
        record = json.loads(cached)
        for event in _replayed(record):
            yield event
        yield _done(record, start, start, start, cached=True)
        return
    found = await passages.retrieve(services, q, mode)
    retrieved = time.perf_counter()
    if not found.sources or mode == "quote":
        record = passages.without_llm(services, found)
        for event in _replayed(record):
            yield event
        yield _done(record, start, retrieved, retrieved)
        await answer_cache.store(services.redis, services.settings, q.store_name, key, record)
        return
    flight = await _flight(services, key)
    if not flight.leader:
        CACHE.labels("answer", "shared").inc()
        async for event in _answer(services, q, key, found, flight, (start, retrieved)):
            yield event
        return
    try:
        async with services.generations:  # free: checked in _flight (a race may wait a turn)
            async for event in _answer(services, q, key, found, flight, (start, retrieved)):
                yield event
    finally:
        with anyio.CancelScope(shield=True):
            await answer_cache.land(services.redis, key)


def _replayed(record: Event) -> list[Event]:
    """A finished answer (cached, or made without the LLM) as the events a live one sends: its
    text as one token, so every stream reader shows it, then the closing events."""
    text = record["answer"] if record.get("generated") is None else record["generated"]
    return [{"type": "token", "text": text}, *_closing(record, text)]


def _closing(record: Event, generated: str | None) -> list[Event]:
    """The events after the tokens: the grounding, the quote that replaces the generated text
    (auto fallback), the citations."""
    events: list[Event] = [
        {
            "type": "grounding",
            "grounding": record["grounding"],
            "supported": record["supported"],
        }
    ]
    if record.get("generated") is not None and generated != record["answer"]:
        keys = ("answer", "answer_mode", "generated")
        events.append({"type": "answer"} | {k: record[k] for k in keys})
    events.append(
        {"type": "citations", "citations": record["citations"], "sources": record["sources"]}
    )
    return events


async def _flight(services: Services, key: str) -> Flight:
    """Follow the same question's generation if one is in flight; else lead one, or refuse
    (429) when max_answers generations already run here."""
    ttl = _flight_ttl(services)
    if not services.generations.locked():
        return await answer_cache.join(services.redis, key, uuid.uuid4().hex, ttl)
    flight = await answer_cache.follow(services.redis, key, ttl)
    if flight is None:
        ANSWERS_REFUSED.inc()
        limit = services.settings.max_answers
        raise TritonRagError(
            ErrorCode.OVERLOADED, f"{limit} answers are being generated; retry shortly", 1
        )
    return flight


async def _answer(
    services: Services,
    q: Question,
    key: str,
    found: Evidence,
    flight: Flight,
    times: tuple[float, float],
) -> AsyncGenerator[Event, None]:
    """The generated answer's events: the leader's own, or relayed from the leader."""
    start, retrieved = times
    text: list[str] = []
    usage: Event = {}
    used = found.sources
    first: float | None = None
    async with aclosing(_generated(services, q, key, found.sources, flight)) as events:
        async for event in events:
            if event["type"] == "sources":
                used = [x for x in found.sources if x.number in set(event["numbers"])]
            elif event["type"] == "token":
                first = first or time.perf_counter()
                text.append(event["text"])
                yield event
            elif event["type"] == "done":
                usage = event
                timing.add_inference((event.get("llm_total_ms") or 0) / 1000)
    answer = "".join(text).strip()
    record = await passages.grounded(services, q, answer, used, found)
    record["usage"] = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens")}
    for event in _closing(record, answer):
        yield event
    yield _done(record, start, retrieved, first or time.perf_counter(), llm=usage)
    if flight.leader and not usage.get("cancelled"):
        await answer_cache.store(services.redis, services.settings, q.store_name, key, record)


def _flight_ttl(services: Services) -> int:
    s = services.settings
    return int(s.llm_first_token_timeout_s + s.llm_timeout_s) + 60


async def _generated(
    services: Services, q: Question, key: str, sources: list[generate.Source], flight: Flight
) -> AsyncGenerator[Event, None]:
    """The leader sends the answer task to the llm lane; every caller relays its events from
    the start of the stream until `done`."""
    s = services.settings
    if services.guard is not None and s.llm_backend == "triton":
        services.guard.check(s.llm_model)  # its stub died: 503 now, not a wait for a timeout
    request_id = flight.request_id
    sent = time.perf_counter()
    if flight.leader:
        await asyncio.to_thread(
            services.celery.send_task,
            ANSWER,
            args=(request_id, q.question, q.history, [x.as_dict() for x in sources]),
            queue=LLM,
            expires=s.llm_first_token_timeout_s,
        )
    stream, last = answer_key(request_id), "0-0"
    deadline = time.monotonic() + s.llm_first_token_timeout_s
    started = finished = False
    try:
        while not finished:
            wait_s = deadline - time.monotonic()
            if wait_s <= 0:
                raise _timeout(started, s.llm_first_token_timeout_s)
            # Short blocks: a read never outlasts the Redis client's socket timeout.
            block_ms = int(min(wait_s, XREAD_BLOCK_S) * 1000) + 1
            reply: Any = await services.redis.xread({stream: last}, block=block_ms)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    event = json.loads(fields[b"event"])
                    if event["type"] == "error":
                        error = event["error"]
                        raise TritonRagError(ErrorCode(error["type"]), error["message"], 5)
                    if not started:  # the llm lane took it: the wait before is queue time
                        timing.add_queue(time.perf_counter() - sent)
                    started = True
                    if event["type"] == "token":  # from now on only the whole answer is bounded
                        deadline = time.monotonic() + s.llm_timeout_s
                    finished = event["type"] == "done"
                    yield event
    finally:
        if not finished and flight.leader:  # error, timeout or the client went away
            with anyio.CancelScope(shield=True):  # runs even while the request is cancelled
                if not await answer_cache.followed(services.redis, key):  # stop generating
                    await services.redis.set(cancel_key(request_id), 1, ex=_flight_ttl(services))


def _timeout(started: bool, waited_s: float) -> TritonRagError:
    if not started:
        return TritonRagError(
            ErrorCode.NOT_READY, f"no llm worker took the question within {waited_s:g}s", 5
        )
    return TritonRagError(
        ErrorCode.UPSTREAM_TIMEOUT, f"no answer from the LLM within {waited_s:g}s"
    )


def _done(
    record: Event, start: float, retrieved: float, first: float, cached: bool = False, **extra: Any
) -> Event:
    now = time.perf_counter()
    llm = extra.get("llm") or {}
    return {
        "type": "done",
        "answer": record["answer"],
        "covered": record.get("covered", True),
        "cached": cached,
        "answer_mode": record.get("answer_mode"),
        "supported": record.get("supported"),
        "generated": record.get("generated"),
        "usage": record.get("usage") or {"prompt_tokens": 0, "completion_tokens": 0},
        "timings": {
            "retrieve_ms": round(1000 * (retrieved - start), 2),
            "first_token_ms": round(1000 * (first - start), 2),
            "total_ms": round(1000 * (now - start), 2),
            "llm_first_token_ms": llm.get("llm_first_token_ms"),
        },
    }


def _cache_key(services: Services, q: Question, answer_mode: str) -> str:
    s = services.settings
    rest = [q.history, q.top_k, sorted(q.filters.items()), q.mode or s.search_mode, answer_mode]
    rest += [s.answer_quote_sentences]
    return answer_cache.cache_key(services.settings, q.store_name, q.question, rest)
