"""Job state, document records and uploaded bytes in Redis: the one place both the
orchestrator and the workers read and write them. Keys live under `tritonrag:`."""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from orchestrator.errors import ErrorCode, TritonRagError

PREFIX = "tritonrag:"
BLOB_TTL_S = 7 * 24 * 3600
JOB_TTL_S = 30 * 24 * 3600
OPEN_JOBS = f"{PREFIX}open-jobs"  # unfinished job ids by creation time (workers/sweep.py)


class JobState(StrEnum):
    QUEUED = "queued"
    PARSING = "parsing"
    EMBEDDING = "embedding"
    INDEXING = "indexing"
    INDEXED = "indexed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobState.INDEXED, JobState.FAILED)


COUNTERS = ("chunks_total", "chunks_reused", "chunks_embedded", "chunks_removed")


def scoped(tenant: str, collection: str) -> str:
    """The store-level collection name: tenants never share one."""
    return f"{tenant}__{collection}"


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def query_cache_key(model: str, digest: str) -> str:
    return f"{PREFIX}qcache:{model}:{digest}"


def collections_key(tenant: str) -> str:
    return f"{PREFIX}collections:{tenant}"


def answer_key(request_id: str) -> str:
    """Redis stream the llm lane writes an answer's events to."""
    return f"{PREFIX}answer:{request_id}"


def cancel_key(request_id: str) -> str:
    """Set by the API when the client went away: the llm lane stops generating."""
    return f"{PREFIX}cancel:{request_id}"


def live_key(collection: str) -> str:
    """Which physical collection and embedding model a (scoped) collection reads and writes
    now; absent: the collection's own name and the served model (pipeline/rebuild.py)."""
    return f"{PREFIX}live:{collection}"


def rebuild_key(collection: str) -> str:
    """A re-index into a new physical collection: its state and progress."""
    return f"{PREFIX}rebuild:{collection}"


def answer_cache_key(digest: str) -> str:
    return f"{PREFIX}acache:{digest}"


def answer_index_key(collection: str, document_id: str) -> str:
    """The cached answers that rest on one document of a (scoped) collection."""
    return f"{PREFIX}acache-doc:{collection}:{document_id}"


# The pseudo document under which a collection's "not covered" answers are indexed.
UNCOVERED = "\x00uncovered"


def jittered(ttl_s: int, spread: float = 0.1) -> int:
    """`ttl_s` give or take `spread`, so entries written together do not expire together."""
    return max(1, round(ttl_s * random.uniform(1 - spread, 1 + spread)))


@dataclass(frozen=True)
class Version:
    """A document as a re-index sees it (JobStore.versions)."""

    version: str
    physical: str  # where its last finished job wrote it ("" before that, or unknown)
    finished: bool


@dataclass(frozen=True)
class Live:
    """Where a collection's points are now: the physical collection and the embedding model
    (a Triton model name) that made them."""

    physical: str
    model: str


class JobStore:
    """Typed access to the Redis keys; every method is one or two round trips."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    @classmethod
    def from_url(cls, url: str) -> JobStore:
        return cls(redis.Redis.from_url(url, socket_timeout=10, health_check_interval=30))

    # --- uploads ---
    def create_job(
        self, tenant: str, collection: str, document: dict[str, Any], data: bytes
    ) -> str:
        """Store the bytes, the queued job and the document record pointing at it."""
        job_id = uuid.uuid4().hex
        now = time.time()
        job = {
            "id": job_id,
            "state": JobState.QUEUED.value,
            "tenant": tenant,
            "collection": collection,
            "document_id": document["document_id"],
            "filename": document["filename"],
            "content_type": document["content_type"],
            "bytes": len(data),
            "created_at": now,
            "updated_at": now,
            "deliveries": 0,
            **dict.fromkeys(COUNTERS, 0),
        }
        record = {**document, "job_id": job_id, "state": JobState.QUEUED.value, "updated_at": now}
        pipe = self.redis.pipeline()
        pipe.set(f"{PREFIX}blob:{job_id}", data, ex=BLOB_TTL_S)
        pipe.hset(job_key(job_id), mapping={k: _enc(v) for k, v in job.items()})
        pipe.expire(job_key(job_id), JOB_TTL_S)
        pipe.hset(self._docs(tenant, collection), document["document_id"], json.dumps(record))
        pipe.sadd(collections_key(tenant), collection)
        pipe.zadd(OPEN_JOBS, {job_id: now})
        pipe.execute()
        return job_id

    def blob(self, job_id: str) -> bytes | None:
        value = self.redis.get(f"{PREFIX}blob:{job_id}")
        return bytes(value) if value is not None else None  # type: ignore[arg-type]

    def drop_blob(self, job_id: str) -> None:
        self.redis.delete(f"{PREFIX}blob:{job_id}")

    # --- jobs ---
    def job(self, job_id: str) -> dict[str, Any] | None:
        raw: dict[bytes, bytes] = self.redis.hgetall(job_key(job_id))  # type: ignore[assignment]
        if not raw:
            return None
        return {k.decode(): _dec(k.decode(), v.decode()) for k, v in raw.items()}

    def update_job(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        if fields.get("state") in (JobState.INDEXED, JobState.FAILED):
            fields["finished_at"] = fields["updated_at"]
        if "state" in fields and fields["state"] != JobState.QUEUED and "started_at" not in fields:
            self.redis.hsetnx(job_key(job_id), "started_at", fields["updated_at"])
        self.redis.hset(job_key(job_id), mapping={k: _enc(v) for k, v in fields.items()})
        if "finished_at" in fields:
            self.redis.zrem(OPEN_JOBS, job_id)

    def stale_jobs(self, before: float) -> list[str]:
        """Unfinished jobs not updated since `before`, oldest first."""
        raw: list[bytes] = self.redis.zrangebyscore(OPEN_JOBS, 0, before)  # type: ignore[assignment]
        ids = [i.decode() for i in raw]
        pipe = self.redis.pipeline()
        for job_id in ids:
            pipe.hmget(job_key(job_id), "state", "updated_at")
        stale, closed = [], []
        for job_id, (state, updated) in zip(ids, pipe.execute(), strict=True):
            if state is None or JobState(state.decode()).terminal:
                closed.append(job_id)  # expired, or finished while we looked
            elif float(updated) < before:
                stale.append(job_id)
        if closed:
            self.redis.zrem(OPEN_JOBS, *closed)
        return stale

    def add_count(self, job_id: str, counter: str, n: int) -> None:
        self.redis.hincrby(job_key(job_id), counter, n)
        self.redis.hset(job_key(job_id), "updated_at", time.time())

    def deliveries(self, job_id: str) -> int:
        return int(self.redis.hget(job_key(job_id), "deliveries") or 0)

    def count_delivery(self, job_id: str) -> int:
        return int(self.redis.hincrby(job_key(job_id), "deliveries", 1))

    # --- documents ---
    def _docs(self, tenant: str, collection: str) -> str:
        return f"{PREFIX}docs:{tenant}:{collection}"

    def document(self, tenant: str, collection: str, document_id: str) -> dict[str, Any] | None:
        raw = self.redis.hget(self._docs(tenant, collection), document_id)
        return json.loads(raw) if raw else None

    def update_document(
        self, tenant: str, collection: str, document_id: str, job_id: str, **fields: Any
    ) -> bool:
        """Update the record only while it still belongs to `job_id` (not replaced/deleted)."""
        key = self._docs(tenant, collection)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.hget(key, document_id)
                    record = json.loads(raw) if raw else None
                    if record is None or record["job_id"] != job_id:
                        pipe.unwatch()
                        return False
                    record.update(fields, updated_at=time.time())
                    pipe.multi()
                    pipe.hset(key, document_id, json.dumps(record))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def documents(
        self, tenant: str, collection: str, offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of document records ordered by id, and the total count."""
        key = self._docs(tenant, collection)
        ids = sorted(k.decode() for k in self.redis.hkeys(key))  # type: ignore[union-attr]
        page = ids[offset : offset + limit]
        raws = self.redis.hmget(key, page) if page else []
        return [json.loads(r) for r in raws if r], len(ids)

    def remove_document(self, tenant: str, collection: str, document_id: str) -> bool:
        return bool(self.redis.hdel(self._docs(tenant, collection), document_id))

    def collections(self, tenant: str) -> list[str]:
        members = self.redis.smembers(collections_key(tenant))
        return sorted(m.decode() for m in members)  # type: ignore[union-attr]

    def remove_collection(self, tenant: str, collection: str) -> bool:
        name = scoped(tenant, collection)
        pipe = self.redis.pipeline()
        pipe.delete(self._docs(tenant, collection), live_key(name), rebuild_key(name))
        pipe.srem(collections_key(tenant), collection)
        return bool(pipe.execute()[1])

    def versions(self, tenant: str, collection: str) -> dict[str, Version]:
        """Each document's version (the job that last touched it, and its state), where that
        job wrote it, and whether it is finished. Documents being deleted are left out."""
        raws = self.redis.hgetall(self._docs(tenant, collection))
        records = (json.loads(r) for r in raws.values())
        return {
            r["document_id"]: Version(
                f"{r['job_id']}:{r['state']}",
                r.get("physical", ""),
                JobState(r["state"]).terminal,
            )
            for r in records
            if not r.get("deleting")
        }

    def mark_deleting(self, tenant: str, collection: str, document_id: str, on: bool) -> None:
        """Before its chunks are deleted (and back, if that failed): a re-index
        (pipeline/rebuild.py) stops copying it."""

        def change(pipe: Any) -> Callable[[Any], None] | None:
            raw = pipe.hget(key, document_id)
            if not raw:
                return None
            record = json.loads(raw) | {"deleting": on}
            return lambda p: p.hset(key, document_id, json.dumps(record))

        key = self._docs(tenant, collection)
        self._atomically(key, change)

    def _atomically(self, key: str, change: Callable[[Any], Callable[[Any], Any] | None]) -> bool:
        """Read `key` (under WATCH) with `change`, which returns the write to make, or None
        for none; retried until no one wrote `key` in between. True: written."""
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    write = change(pipe)
                    if write is None:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    write(pipe)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    # --- where a collection lives (pipeline/rebuild.py) ---
    def where(self, collection: str, served: str) -> Live:
        """The collection's live record; without one, its own name and the `served` model."""
        return live_of(self.redis.get(live_key(collection)), collection, served)

    def physicals(self, collection: str, served: str) -> list[str]:
        """Every physical collection that may hold the collection's points: the live one, and a
        re-index's new or old one."""
        live = self.where(collection, served).physical
        record = self.rebuild(collection)  # {} when there is none: one round trip either way
        others = [record.get("physical"), record.get("source")]
        return [live, *sorted({str(p) for p in others if p and p != live})]

    def next_generation(self, collection: str) -> int:
        return int(self.redis.incr(f"{PREFIX}generation:{collection}"))

    def swap_live(self, collection: str, physical: str, model: str) -> bool:
        """Make `physical` (by `model`) the live collection, if the re-index that built it is
        still the collection's (not dropped, not taken over); marks it swapped."""

        def change(pipe: Any) -> Callable[[Any], None] | None:
            if pipe.hget(key, "physical") != physical.encode():
                return None

            def write(p: Any) -> None:
                p.set(live_key(collection), json.dumps({"physical": physical, "model": model}))
                now = time.time()
                p.hset(key, mapping={"state": "swapped", "swapped_at": now, "updated_at": now})

            return write

        key = rebuild_key(collection)
        return self._atomically(key, change)

    def rebuild(self, collection: str) -> dict[str, Any]:
        raw = self.redis.hgetall(rebuild_key(collection))
        return {k.decode(): _dec(k.decode(), v.decode()) for k, v in raw.items()}  # type: ignore[union-attr]

    def update_rebuild(self, collection: str, physical: str, **fields: Any) -> bool:
        """Update the re-index into `physical`, if it is still the collection's (False: it was
        dropped or taken over)."""
        mapping: dict[Any, Any] = {k: _enc(v) for k, v in fields.items()}

        def change(pipe: Any) -> Callable[[Any], None] | None:
            if pipe.hget(key, "physical") != physical.encode():
                return None
            return lambda p: p.hset(key, mapping=mapping | {"updated_at": time.time()})

        key = rebuild_key(collection)
        return self._atomically(key, change)

    def claim_rebuild(self, collection: str, fields: dict[str, Any], stale: float) -> bool:
        """Record a new re-index unless one is running or waits to drop the collection it
        replaced (one not updated since `stale` is not: its worker died); True: this caller
        starts it."""
        mapping: dict[Any, Any] = {k: _enc(v) for k, v in fields.items()}

        def change(pipe: Any) -> Callable[[Any], None] | None:
            state, updated = pipe.hmget(key, ["state", "updated_at"])
            if state in (b"running", b"swapped") and float(updated or 0) > stale:
                return None

            def write(p: Any) -> None:
                p.delete(key)
                p.hset(key, mapping=mapping | {"updated_at": time.time()})

            return write

        key = rebuild_key(collection)
        return self._atomically(key, change)

    def forget_answers(self, collection: str, document_id: str | None = None) -> int:
        """Drop cached answers resting on the document (or on any document of the collection)."""
        if document_id is not None:
            # A new or changed document may cover what the collection did not.
            indexes = [answer_index_key(collection, d) for d in (document_id, UNCOVERED)]
        else:
            pattern = answer_index_key(re.sub(r"([*?\[\]\\])", r"\\\1", collection), "*")
            indexes = [k.decode() for k in self.redis.scan_iter(match=pattern, count=1000)]
        dropped = 0
        for index in indexes:
            keys = list(self.redis.smembers(index))
            dropped += int(self.redis.delete(*keys, index)) if keys else 0
        return dropped

    def queue_length(self, queue: str) -> int:
        return int(self.redis.llen(queue))


_NUMERIC = {"bytes", "deliveries", "documents_total", "documents_copied", *COUNTERS}
_FLOATS = {"created_at", "updated_at", "started_at", "finished_at", "swapped_at"}


def live_of(raw: Any, collection: str, served: str) -> Live:
    if not raw:
        return Live(collection, served)
    record = json.loads(raw)
    return Live(record["physical"], record["model"])


def _enc(value: Any) -> str:
    return value.value if isinstance(value, StrEnum) else str(value)


def _dec(key: str, value: str) -> Any:
    if key in _NUMERIC:
        return int(value)
    if key in _FLOATS:
        return float(value)
    return value


def require(value: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if value is None:
        raise TritonRagError(ErrorCode.NOT_FOUND, f"{what} not found")
    return value


def async_client(url: str, socket_timeout: float) -> aioredis.Redis:
    """redis.asyncio client whose pool survives a Redis restart: a connection that outlived
    it fails on its next use and is retried on a fresh one (redis.asyncio retries nothing by
    default; found by tests/reliability, a search after the restart never answered)."""
    retry = Retry(
        ExponentialBackoff(cap=0.5, base=0.05), 2, supported_errors=(redis.ConnectionError,)
    )
    return aioredis.Redis.from_url(url, socket_timeout=socket_timeout, retry=retry)
