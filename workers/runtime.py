"""What a worker process opens once: Redis job store, vector store, Triton, chunker."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine
from functools import cached_property
from typing import Any, TypeVar

from orchestrator.clients.triton import TritonEmbedder
from orchestrator.clients.vectors import Matrix, VectorStore
from orchestrator.jobs import JobStore
from orchestrator.pipeline.chunk import Chunker
from orchestrator.pipeline.index import IndexContext
from orchestrator.pipeline.isolate import ParseLimits
from orchestrator.settings import Settings

T = TypeVar("T")


class BackgroundLoop:
    """One asyncio loop in a daemon thread: async clients (grpc.aio, redis.asyncio) used from
    Celery's worker threads."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop in the caller's context (its trace goes along)."""
        caller = contextvars.copy_context()

        async def in_caller_context() -> T:
            return await asyncio.get_running_loop().create_task(coro, context=caller)

        return asyncio.run_coroutine_threadsafe(in_caller_context(), self._loop).result()


class SyncEmbedder:
    """TritonEmbedder (grpc.aio) driven from worker threads through one background loop."""

    def __init__(self, settings: Settings) -> None:
        self._loop = BackgroundLoop()
        self._client: TritonEmbedder = self._loop.run(self._open(settings))
        self.variant = ""  # set by each call: the variant that answered

    async def _open(self, settings: Settings) -> TritonEmbedder:
        import tritonclient.grpc.aio as grpcclient

        return TritonEmbedder(grpcclient.InferenceServerClient(settings.triton_grpc_url), settings)

    def __call__(self, texts: list[str], model: str | None = None) -> Matrix:
        result = self._loop.run(self._client.embed(texts, model))
        self.variant = result.variant
        return result.embeddings


class WorkerRuntime:
    """Opened lazily on the first task, once per process (threads share it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def jobs(self) -> JobStore:
        return JobStore.from_url(self.settings.broker_url)

    @cached_property
    def store(self) -> VectorStore:
        return open_store(self.settings)

    @cached_property
    def index(self) -> IndexContext:
        s = self.settings
        return IndexContext(
            store=self.store,
            jobs=self.jobs,
            embed=SyncEmbedder(s),
            chunker=Chunker.from_model_dir(s.chunking_model_dir, s.chunk_tokens, s.chunk_overlap),
            batch=s.embed_batch,
            attempts=s.task_retries,
            parse=ParseLimits(s.parse_timeout_s, s.parse_memory_mb),
            outage_s=s.outage_wait_s,
            model=s.embed_model,
        )


_lock = threading.Lock()
_runtime: WorkerRuntime | None = None


def runtime() -> WorkerRuntime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = WorkerRuntime(Settings())
            # Touch everything under the lock: cached_property is not thread-safe.
            _ = _runtime.index
        return _runtime


def close() -> None:
    global _runtime
    with _lock:
        if _runtime is not None and "store" in _runtime.__dict__:
            _runtime.store.close()
        _runtime = None


def open_store(settings: Settings) -> VectorStore:
    """The server adapter when TRITONRAG_QDRANT_URL is set, else the embedded edge shards."""
    if settings.qdrant_url:
        from qdrant_client import QdrantClient

        from orchestrator.clients.qdrant import Layout, ServerVectors

        if settings.qdrant_url.startswith(":memory:"):
            return ServerVectors(QdrantClient(location=":memory:"), settings.embed_model)
        client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
        layout = Layout(
            settings.qdrant_shard_number,
            settings.qdrant_replication_factor,
            settings.qdrant_write_consistency_factor,
            settings.qdrant_write_ordering,
        )
        return ServerVectors(
            client,
            settings.embed_model,
            settings.vector_quantization,
            settings.search_hnsw_ef,
            settings.search_fusion,
            layout,
        )
    from orchestrator.clients.edge import EdgeVectors  # loads the engine: only where it runs

    return EdgeVectors(
        settings.vectors_dir,
        settings.edge_index_threshold,
        settings.vector_quantization,
        settings.search_hnsw_ef,
        settings.search_fusion,
    )
