"""Hot questions cost one generation: the answer cache, its negative entries and single flight.

- A generated answer is cached (`answer_cache_ttl_s`, with jitter so answers cached together
  do not expire together) and indexed under every document it rests on, for invalidation.
- A question the collection does not cover is remembered briefly (`answer_uncovered_ttl_s`)
  so repeats neither search nor prompt again; indexing any document of the collection
  forgets it (jobs.forget_answers).
- Identical questions in flight at once share one generation: the first caller (the leader)
  claims the question's flight key with its request id; the others relay the leader's event
  stream from its start, so every caller streams the same tokens.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from orchestrator.jobs import PREFIX, UNCOVERED, answer_cache_key, answer_index_key, jittered
from orchestrator.settings import Settings

CACHE_VERSION = 4  # bump when the prompt or the record changes: old entries are ignored


def cache_key(settings: Settings, store_name: str, question: str, rest: list[Any]) -> str:
    """The answer's key: the question (white space folded), everything that shapes the
    prompt and the settings that shape the answer."""
    material = [
        CACHE_VERSION,
        store_name,
        " ".join(question.split()),
        *rest,
        settings.llm_backend,
        settings.llm_model,
        settings.llm_max_tokens,
        settings.llm_temperature,
        settings.llm_repeat_penalty,
        settings.answer_auto_min_supported,
        settings.answer_min_score,
        settings.answer_evidence_sentences,
    ]
    digest = hashlib.sha256(json.dumps(material, default=str).encode()).hexdigest()
    return answer_cache_key(digest)


async def store(
    client: aioredis.Redis, settings: Settings, store_name: str, key: str, record: dict[str, Any]
) -> None:
    """Cache the answer and index it under every document it was given (a covered answer),
    or under the collection's uncovered index (a negative entry)."""
    covered = bool(record["sources"])
    ttl = settings.answer_cache_ttl_s if covered else settings.answer_uncovered_ttl_s
    if not settings.answer_cache_ttl_s or not ttl:
        return
    ttl = jittered(ttl)
    documents = {x["document_id"] for x in record["sources"]} if covered else {UNCOVERED}
    pipe = client.pipeline()
    pipe.set(key, json.dumps(record), ex=ttl)
    for document_id in documents:
        index = answer_index_key(store_name, document_id)
        pipe.sadd(index, key)
        pipe.expire(index, ttl)
    await pipe.execute()


def flight_key(key: str) -> str:
    return f"{PREFIX}aflight:{key.rsplit(':', 1)[-1]}"


def followers_key(key: str) -> str:
    return f"{flight_key(key)}:followers"


@dataclass(frozen=True)
class Flight:
    request_id: str  # whose event stream this caller relays
    leader: bool  # this caller sends the generation (and caches it)


async def join(client: aioredis.Redis, key: str, request_id: str, ttl_s: int) -> Flight:
    """Lead the generation of `key`, or follow the one already in flight."""
    for _ in range(2):  # the leader may finish between our claim and our read
        if await client.set(flight_key(key), request_id, nx=True, ex=ttl_s):
            return Flight(request_id, leader=True)
        if (flight := await follow(client, key, ttl_s)) is not None:
            return flight
    return Flight(request_id, leader=True)  # unreachable in practice; generating is safe


async def follow(client: aioredis.Redis, key: str, ttl_s: int) -> Flight | None:
    """Relay the generation of `key` in flight, if there is one."""
    leader = await client.get(flight_key(key))
    if leader is None:
        return None
    pipe = client.pipeline()
    pipe.incr(followers_key(key))
    pipe.expire(followers_key(key), ttl_s)
    await pipe.execute()
    name = leader.decode() if isinstance(leader, bytes) else str(leader)
    return Flight(name, leader=False)


async def followed(client: aioredis.Redis, key: str) -> bool:
    """Someone relays this flight: the leader must not cancel it when its own caller leaves."""
    return int(await client.get(followers_key(key)) or 0) > 0


async def land(client: aioredis.Redis, key: str) -> None:
    """The leader is done (answer cached or failed): the next identical question starts anew."""
    await client.delete(flight_key(key), followers_key(key))
