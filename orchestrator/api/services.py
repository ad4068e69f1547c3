"""The clients the orchestrator opens once (in the lifespan) and shares across requests."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from celery import Celery

from orchestrator import lanes, timing
from orchestrator.api.batcher import SearchBatcher
from orchestrator.clients.model_guard import ModelGuard
from orchestrator.clients.triton import Priority, TritonEmbedder
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.jobs import (
    JobStore,
    Live,
    async_client,
    collections_key,
    jittered,
    live_key,
    live_of,
    query_cache_key,
    scoped,
)
from orchestrator.metrics import CACHE
from orchestrator.settings import Settings

log = logging.getLogger("tritonrag.services")


@dataclass(frozen=True)
class Services:
    settings: Settings
    jobs: JobStore
    redis: aioredis.Redis
    celery: Celery
    embedder: TritonEmbedder
    guard: ModelGuard | None = None  # None: no local Triton watched (tests, the guard off)
    searches: SearchBatcher = field(init=False)
    _writes: set[asyncio.Future[Any]] = field(default_factory=set, init=False)  # cache writes
    # Generations this process leads at once (max_answers); followers of a flight need none.
    generations: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        async def call(queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
            timeout = self.settings.search_timeout_s
            if self.settings.search_transport == "celery":
                answers: list[dict[str, Any]] = await self.call(
                    lanes.SEARCH, queries, timeout_s=timeout
                )
                return answers
            request_id = uuid.uuid4().hex
            sent = time.perf_counter()
            message = lanes.search_request(request_id, queries, timeout)
            await self.redis.lpush(lanes.SEARCH_REQUESTS, message)
            answers = await self._reply(lanes.SEARCH, request_id, sent, timeout)
            return answers

        batcher = SearchBatcher(
            call,
            max_in_flight=self.settings.search_batches_in_flight,
            default_mode=self.settings.search_mode,
            model=self.settings.embed_model,
        )
        object.__setattr__(self, "searches", batcher)
        object.__setattr__(self, "generations", asyncio.Semaphore(self.settings.max_answers))

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[Services]:
        celery = lanes.create_celery(settings)
        client = async_client(settings.broker_url, socket_timeout=30)
        jobs = JobStore.from_url(settings.broker_url)
        try:
            async with (
                TritonEmbedder.connect(settings) as embedder,
                ModelGuard.watching(settings, client) as guard,
            ):
                embedder.guard = guard
                yield cls(settings, jobs, client, celery, embedder, guard)
        finally:
            await client.aclose()
            jobs.redis.close()
            celery.close()

    async def call(self, task: str, *args: Any, timeout_s: float, queue: str | None = None) -> Any:
        """Run `task` on its lane (or `queue`) and wait for the worker's reply (RPC over a
        Redis list)."""
        request_id = uuid.uuid4().hex
        sent = time.perf_counter()
        await asyncio.to_thread(
            self.celery.send_task,
            task,
            args=(request_id, *args),
            queue=queue or lanes.ROUTES[task],
            expires=timeout_s,
        )
        return await self._reply(task, request_id, sent, timeout_s)

    async def _reply(self, task: str, request_id: str, sent: float, timeout_s: float) -> Any:
        message = await lanes.wait_reply(self.redis, task, request_id, timeout_s)
        timing.add_queue(time.perf_counter() - sent - message.get("work_s", 0.0))
        return lanes.result(message)

    async def require_collection(self, tenant: str, collection: str) -> None:
        """404 for a collection the tenant never uploaded to (or dropped)."""
        _exists(await self.redis.sismember(collections_key(tenant), collection), collection)

    async def search_vector(
        self, tenant: str, collection: str, text: str
    ) -> tuple[list[float], Live]:
        """A search's query embedding, by the model the collection lives with, and where it
        lives; 404 if the tenant has no such collection. The check, the live record and the
        cache lookup share one Redis round trip."""
        return await self._query(scoped(tenant, collection), text, (tenant, collection))

    async def embed_query(self, name: str, text: str) -> tuple[list[float], Live]:
        """The same for a (scoped) collection known to exist."""
        return await self._query(name, text)

    async def _query(
        self, name: str, text: str, check: tuple[str, str] | None = None
    ) -> tuple[list[float], Live]:
        served, caching = self.settings.embed_model, bool(self.settings.query_cache_ttl_s)
        key = self._query_key(served, text)
        async with self.redis.pipeline(transaction=False) as pipe:
            if check is not None:
                pipe.sismember(collections_key(check[0]), check[1])
            pipe.get(live_key(name))
            if caching:  # by the served model: the collection's, unless a re-index moved it
                pipe.get(key)
            replies = await pipe.execute()
        if check is not None:
            _exists(replies.pop(0), check[1])
        live = live_of(replies[0], name, served)
        cached = replies[1] if caching else None
        if live.model != served:
            key = self._query_key(live.model, text)
            cached = await self.redis.get(key) if caching else None
        return await self._query_row(key, text, cached, live.model), live

    def _query_key(self, model: str, text: str) -> str:
        digest = hashlib.sha256(text.encode()).hexdigest()
        return query_cache_key(model, digest)

    async def _query_row(self, key: str, text: str, cached: Any, model: str) -> list[float]:
        ttl = self.settings.query_cache_ttl_s
        if ttl and isinstance(cached, bytes):
            CACHE.labels("query_embedding", "hit").inc()
            cached_row: list[float] = np.frombuffer(cached, np.float32).tolist()
            return cached_row
        if ttl:
            CACHE.labels("query_embedding", "miss").inc()
        result = await self.embedder.embed([text], model, priority=Priority.QUERY)
        row = np.ascontiguousarray(result.embeddings[0], dtype=np.float32)
        if ttl:  # off the search's path: a lost write only costs a later embedding
            write = asyncio.ensure_future(self.redis.set(key, row.tobytes(), ex=jittered(ttl)))
            self._writes.add(write)
            write.add_done_callback(self._written)
        vector: list[float] = row.tolist()
        return vector

    def _written(self, write: asyncio.Future[Any]) -> None:
        self._writes.discard(write)
        if not write.cancelled() and write.exception() is not None:
            log.warning("query embedding not cached: %s", write.exception())


def _exists(member: Any, collection: str) -> None:
    if not member:
        raise TritonRagError(ErrorCode.NOT_FOUND, f"collection {collection!r} not found")
