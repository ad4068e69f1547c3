"""The answer cache, its negative entries and single flight (orchestrator/api/answer_cache.py)
against a real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from orchestrator.api import answer_cache
from orchestrator.jobs import UNCOVERED, JobStore, answer_index_key, jittered
from orchestrator.settings import Settings

COLLECTION = "acme__handbook"


def _record(*documents: str) -> dict[str, Any]:
    sources = [{"document_id": d, "text": "..."} for d in documents]
    answer = "An answer [1]." if documents else "The documents do not cover this."
    return {"answer": answer, "citations": [], "sources": sources}


async def _with_redis(redis_url: str, body: Any) -> Any:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        return await body(client)
    finally:
        await client.aclose()


def test_identical_questions_follow_the_first_and_the_next_after_it_lands_leads(
    redis_url: str,
) -> None:
    async def body(client: aioredis.Redis) -> None:
        key = answer_cache.cache_key(Settings(), COLLECTION, "How often are keys rotated?", [])
        assert await answer_cache.follow(client, key, 60) is None  # nothing in flight
        flights = await asyncio.gather(
            *(answer_cache.join(client, key, f"request-{i}", 60) for i in range(20))
        )
        leaders = [f for f in flights if f.leader]
        assert len(leaders) == 1
        assert {f.request_id for f in flights} == {leaders[0].request_id}  # one stream for all
        assert await answer_cache.followed(client, key)
        await answer_cache.land(client, key)
        assert not await answer_cache.followed(client, key)
        again = await answer_cache.join(client, key, "request-later", 60)
        assert again.leader and again.request_id == "request-later"

    asyncio.run(_with_redis(redis_url, body))


def test_the_key_ignores_white_space_and_changes_with_what_shapes_the_answer() -> None:
    s = Settings()
    key = answer_cache.cache_key(s, COLLECTION, "How  often\nare keys rotated?", [[], 5])
    assert key == answer_cache.cache_key(s, COLLECTION, "How often are keys rotated?", [[], 5])
    assert key != answer_cache.cache_key(s, COLLECTION, "How often are keys rotated?", [[], 6])
    hotter = s.model_copy(update={"llm_temperature": 0.7})
    assert key != answer_cache.cache_key(hotter, COLLECTION, "How often are keys rotated?", [[], 5])


def test_answers_expire_with_jitter_and_uncovered_ones_soon(redis_url: str) -> None:
    async def body(client: aioredis.Redis) -> None:
        s = Settings()
        ttls = []
        for i in range(20):
            key = answer_cache.cache_key(s, COLLECTION, f"question {i}", [])
            await answer_cache.store(client, s, COLLECTION, key, _record("keys.md"))
            ttls.append(await client.ttl(key))
        low, high = 0.9 * s.answer_cache_ttl_s, 1.1 * s.answer_cache_ttl_s
        assert all(low - 1 <= t <= high for t in ttls) and len(set(ttls)) > 1, ttls
        uncovered = answer_cache.cache_key(s, COLLECTION, "boiling point of tungsten?", [])
        await answer_cache.store(client, s, COLLECTION, uncovered, _record())
        assert 0 < await client.ttl(uncovered) <= 1.1 * s.answer_uncovered_ttl_s
        assert await client.sismember(answer_index_key(COLLECTION, UNCOVERED), uncovered)

    asyncio.run(_with_redis(redis_url, body))


def test_indexing_a_document_forgets_its_answers_and_the_collections_uncovered_ones(
    redis_url: str, jobs: JobStore
) -> None:
    async def body(client: aioredis.Redis) -> list[str]:
        s = Settings()
        keys = {}
        for name, record in {
            "keys": _record("keys.md"),
            "backups": _record("backups.txt"),
            "uncovered": _record(),
        }.items():
            keys[name] = answer_cache.cache_key(s, COLLECTION, name, [])
            await answer_cache.store(client, s, COLLECTION, keys[name], record)
        jobs.forget_answers(COLLECTION, "keys.md")  # what a worker does when keys.md is indexed
        return [name for name, key in keys.items() if await client.exists(key)]

    assert asyncio.run(_with_redis(redis_url, body)) == ["backups"]


def test_jitter_stays_within_its_spread() -> None:
    values = {jittered(1000) for _ in range(200)}
    assert min(values) >= 900 and max(values) <= 1100 and len(values) > 20
    assert jittered(1) == 1
