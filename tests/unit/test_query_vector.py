"""A search's query embedding (orchestrator/api/services.py) against a real redis-server: the
collection check, the query-embedding cache and its write off the request's path."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast
from urllib.parse import urlparse

import numpy as np
import pytest
import redis.asyncio as aioredis

from orchestrator.api.services import Services
from orchestrator.clients.triton import Embeddings, Priority, TritonEmbedder
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.jobs import JobStore, collections_key, live_key
from orchestrator.lanes import create_celery
from orchestrator.settings import Settings


class CountingEmbedder:
    """TritonEmbedder's `embed`, answering a vector derived from the text's length."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], Priority]] = []
        self.models: list[str | None] = []

    async def embed(
        self, texts: list[str], model: str | None = None, priority: Priority = Priority.BULK
    ) -> Embeddings:
        self.calls.append((texts, priority))
        self.models.append(model)
        width = 2.0 if model == "embed_other" else 1.0
        rows = np.array([[len(t), width, 0.5] for t in texts], dtype=np.float32)
        return Embeddings(rows, [len(t) for t in texts], "fp32")


async def _with_services(redis_url: str, ttl: int, body: Any) -> Any:
    settings = Settings(redis_port=urlparse(redis_url).port, query_cache_ttl_s=ttl)
    client = aioredis.Redis.from_url(settings.broker_url)
    await client.flushdb()
    await client.sadd(collections_key("acme"), "docs")
    embedder = CountingEmbedder()
    services = Services(
        settings,
        JobStore.from_url(settings.broker_url),
        client,
        create_celery(settings),
        cast(TritonEmbedder, embedder),
    )
    try:
        return await body(services, embedder, client)
    finally:
        await client.aclose()
        services.jobs.redis.close()


def test_a_new_text_is_embedded_at_query_priority_once_then_served_from_the_cache(
    redis_url: str,
) -> None:
    async def body(services: Services, embedder: CountingEmbedder, client: Any) -> None:
        first, live = await services.search_vector("acme", "docs", "where are the keys?")
        assert first == [19.0, 1.0, 0.5]
        assert (live.physical, live.model) == ("acme__docs", "embed")
        assert embedder.calls == [(["where are the keys?"], Priority.QUERY)]
        for _ in range(100):  # the cache write runs after the vector is returned
            if not services._writes:
                break
            await asyncio.sleep(0.01)
        assert (await services.search_vector("acme", "docs", "where are the keys?"))[0] == first
        assert (await services.embed_query("acme__docs", "where are the keys?"))[0] == first
        assert len(embedder.calls) == 1  # both answered from Redis
        assert (await services.search_vector("acme", "docs", "other"))[0] == [5.0, 1.0, 0.5]
        assert len(embedder.calls) == 2

    asyncio.run(_with_services(redis_url, 60, body))


def test_a_collection_moved_to_another_model_is_searched_by_that_model(redis_url: str) -> None:
    async def body(services: Services, embedder: CountingEmbedder, client: Any) -> None:
        before, _ = await services.search_vector("acme", "docs", "keys")
        moved = {"physical": "acme__docs@2", "model": "embed_other"}
        services.jobs.redis.set(live_key("acme__docs"), json.dumps(moved))
        after, live = await services.search_vector("acme", "docs", "keys")
        assert (live.physical, live.model) == ("acme__docs@2", "embed_other")
        assert before == [4.0, 1.0, 0.5] and after == [4.0, 2.0, 0.5]  # not the cached one
        assert embedder.models == ["embed", "embed_other"]

    asyncio.run(_with_services(redis_url, 60, body))


def test_an_unknown_collection_is_not_found_before_anything_is_embedded(redis_url: str) -> None:
    async def body(services: Services, embedder: CountingEmbedder, client: Any) -> None:
        for tenant, collection in (("acme", "nope"), ("other", "docs")):
            with pytest.raises(TritonRagError) as caught:
                await services.search_vector(tenant, collection, "where are the keys?")
            assert caught.value.code == ErrorCode.NOT_FOUND
        assert embedder.calls == []

    asyncio.run(_with_services(redis_url, 60, body))


def test_with_the_cache_off_every_search_is_embedded_and_nothing_is_written(
    redis_url: str,
) -> None:
    async def body(services: Services, embedder: CountingEmbedder, client: Any) -> None:
        for _ in range(2):
            assert (await services.search_vector("acme", "docs", "keys"))[0] == [4.0, 1.0, 0.5]
        assert len(embedder.calls) == 2 and not services._writes
        assert await client.dbsize() == 1  # only the tenant's collection set

    asyncio.run(_with_services(redis_url, 0, body))
