"""Answering a question, as a stream of events shared by /ask and /v1/chat/completions.

retrieve (query lane) -> relevant hits -> none: the no-sources answer, no LLM call -> the llm
lane generates (workers/answer.py) -> tokens relayed from a Redis stream -> citations -> cache.
An error before the first token raises TritonRagError (a 5xx for JSON callers); the caller
going away (the generator closed early) tells the llm lane to stop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio

from orchestrator import timing
from orchestrator.api.services import Services
from orchestrator.clients.chat_template import Message
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.jobs import (
    answer_cache_key,
    answer_index_key,
    answer_key,
    cancel_key,
    scoped,
)
from orchestrator.lanes import ANSWER, LLM
from orchestrator.metrics import CACHE
from orchestrator.pipeline import generate

XREAD_BLOCK_S = 5.0
CACHE_VERSION = 2  # bump when the prompt changes: cached answers of the old prompt are ignored
Event = dict[str, Any]


@dataclass(frozen=True)
class Question:
    tenant: str
    collection: str
    question: str
    top_k: int
    filters: dict[str, Any] = field(default_factory=dict)
    history: list[Message] = field(default_factory=list)

    @property
    def store_name(self) -> str:
        return scoped(self.tenant, self.collection)


async def check_question(services: Services, q: Question) -> None:
    """Bad input and unknown collections fail before anything runs."""
    s = services.settings
    if not q.question.strip():
        raise TritonRagError(ErrorCode.EMPTY_INPUT, "the question is blank")
    if len(q.question) > s.max_question_chars:
        raise TritonRagError(
            ErrorCode.TOO_LARGE,
            f"the question has {len(q.question)} characters; the limit is {s.max_question_chars}",
        )
    await services.require_collection(q.tenant, q.collection)


async def answer_events(services: Services, q: Question) -> AsyncGenerator[Event, None]:
    """`token`* then `citations` then `done`; see the module docstring for errors."""
    start = time.perf_counter()
    key = _cache_key(services, q)
    cached = await services.redis.get(key) if services.settings.answer_cache_ttl_s else None
    if services.settings.answer_cache_ttl_s:
        CACHE.labels("answer", "hit" if cached else "miss").inc()
    if cached:
        record = json.loads(cached)
        yield {"type": "token", "text": record["answer"]}
        yield {"type": "citations", "citations": record["citations"], "sources": record["sources"]}
        yield _done(record, start, start, start, cached=True)
        return
    vector = await services.embed_query(q.question)
    hits = await services.searches.search(q.store_name, vector, q.top_k, q.filters)
    retrieved = time.perf_counter()
    sources = generate.relevant(hits, services.settings.answer_min_score)
    if not sources:
        record = {"answer": generate.NO_SOURCES_ANSWER, "citations": [], "sources": []}
        yield {"type": "token", "text": record["answer"]}
        yield {"type": "citations", "citations": [], "sources": []}
        yield _done(record | {"covered": False}, start, retrieved, retrieved)
        return
    text: list[str] = []
    usage: Event = {}
    used = sources
    first: float | None = None
    async with aclosing(_generated(services, q, sources)) as events:
        async for event in events:
            if event["type"] == "sources":
                used = [x for x in sources if x.number in set(event["numbers"])]
            elif event["type"] == "token":
                first = first or time.perf_counter()
                text.append(event["text"])
                yield event
            elif event["type"] == "done":
                usage = event
                timing.add_inference((event.get("llm_total_ms") or 0) / 1000)
    answer = "".join(text).strip()
    record = {
        "answer": answer,
        "citations": generate.citations(answer, used),
        "sources": [generate.citation(x) | {"text": x.text} for x in used],
        "usage": {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens")},
    }
    yield {"type": "citations", "citations": record["citations"], "sources": record["sources"]}
    yield _done(record, start, retrieved, first or time.perf_counter(), llm=usage)
    if not usage.get("cancelled"):
        await _store(services, q, key, record)


async def _generated(
    services: Services, q: Question, sources: list[generate.Source]
) -> AsyncGenerator[Event, None]:
    """Send the answer task to the llm lane and relay its events until `done`."""
    s = services.settings
    if services.guard is not None and s.llm_backend == "triton":
        services.guard.check(s.llm_model)  # its stub died: 503 now, not a wait for a timeout
    request_id = uuid.uuid4().hex
    sent = time.perf_counter()
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
        if not finished:  # error, timeout or the client went away: stop generating
            with anyio.CancelScope(shield=True):  # runs even while the request is cancelled
                await services.redis.set(cancel_key(request_id), 1, ex=int(s.llm_timeout_s) + 60)


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
        "usage": record.get("usage") or {"prompt_tokens": 0, "completion_tokens": 0},
        "timings": {
            "retrieve_ms": round(1000 * (retrieved - start), 2),
            "first_token_ms": round(1000 * (first - start), 2),
            "total_ms": round(1000 * (now - start), 2),
            "llm_first_token_ms": llm.get("llm_first_token_ms"),
        },
    }


def _cache_key(services: Services, q: Question) -> str:
    s = services.settings
    material = [
        CACHE_VERSION,
        q.store_name,
        " ".join(q.question.split()),
        q.history,
        q.top_k,
        sorted(q.filters.items()),
        s.llm_backend,
        s.llm_model,
        s.llm_max_tokens,
        s.llm_temperature,
        s.answer_min_score,
    ]
    digest = hashlib.sha256(json.dumps(material, default=str).encode()).hexdigest()
    return answer_cache_key(digest)


async def _store(services: Services, q: Question, key: str, record: Event) -> None:
    """Cache the answer and index it under every document it was given, for invalidation."""
    ttl = services.settings.answer_cache_ttl_s
    if not ttl:
        return
    pipe = services.redis.pipeline()
    pipe.set(key, json.dumps(record), ex=ttl)
    for document_id in {x["document_id"] for x in record["sources"]}:
        index = answer_index_key(q.store_name, document_id)
        pipe.sadd(index, key)
        pipe.expire(index, ttl)
    await pipe.execute()
