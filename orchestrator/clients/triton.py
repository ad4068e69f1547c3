"""Async gRPC client for the Triton embedding models: one channel, ordered batching, errors
mapped to the project's vocabulary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import tritonclient.grpc.aio as grpcclient
from opentelemetry.trace import SpanKind
from tritonclient.utils import InferenceServerException

from orchestrator import timing
from orchestrator.clients.model_guard import ModelGuard
from orchestrator.clients.vectors import Matrix
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.metrics import TRITON_SECONDS
from orchestrator.settings import Settings
from orchestrator.tracing import grpc_headers, tracer


class Priority(IntEnum):
    """Triton priority levels (1 is served first); see the models' config.pbtxt."""

    QUERY = 1
    BULK = 2


@dataclass(frozen=True)
class Embeddings:
    """Embeddings in input order, tokens each text used, and which variant computed them."""

    embeddings: Matrix
    token_counts: list[int]
    variant: str


class TritonEmbedder:
    """Embeds texts with a Triton model over one reused gRPC channel."""

    def __init__(self, client: grpcclient.InferenceServerClient, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._batch_limits: dict[str, int] = {}
        # Models seen ready: asking Triton before every request cost a gRPC round trip each.
        # A model unloaded since then is noticed by its failed inference (see `embed`).
        self._loaded: set[str] = set()
        self._loading = asyncio.Lock()
        # Set by the API: a model whose stub died fails fast (503) until it is reloaded.
        self.guard: ModelGuard | None = None

    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: Settings) -> AsyncIterator[TritonEmbedder]:
        client = grpcclient.InferenceServerClient(settings.triton_grpc_url)
        try:
            yield cls(client, settings)
        finally:
            await client.close()

    async def ready(self, model: str | None = None) -> bool:
        try:
            return bool(await self._client.is_model_ready(model or self._settings.embed_model))
        except InferenceServerException:
            return False

    async def ensure_loaded(self, model: str) -> bool:
        """Ready, or loaded now when Triton's repository has it (by default only the served
        model loads at start; the other variants load on first use)."""
        if model in self._loaded:
            return True
        async with self._loading:
            if await self.ready(model):
                self._loaded.add(model)
                return True
            try:
                index = await self._client.get_model_repository_index(as_json=True)
            except InferenceServerException:
                return False
            if model not in {m.get("name") for m in index.get("models", [])}:
                return False
            try:
                await self._client.load_model(model)
            except InferenceServerException as exc:
                raise map_error(exc, model) from exc
            if not await self.ready(model):
                return False
            self._loaded.add(model)
        return True

    async def embed(
        self,
        texts: list[str],
        model: str | None = None,
        priority: Priority = Priority.BULK,
        timeout_s: float | None = None,
    ) -> Embeddings:
        """Embed `texts` in order; lists longer than the model's batch limit are split."""
        self._validate(texts)
        name = model or self._settings.embed_model
        if self.guard is not None:
            self.guard.check(name)
        limit = await self._max_batch_size(name)
        chunks = [texts[i : i + limit] for i in range(0, len(texts), limit)]
        timeout = timeout_s or self._settings.embed_timeout_s
        start = time.perf_counter()
        with tracer.start_as_current_span(
            f"triton {name}", kind=SpanKind.CLIENT, attributes={"triton.texts": len(texts)}
        ):
            try:
                parts = await self._infer_all(name, chunks, priority, timeout)
            except ModelUnloaded as gone:
                # Unloaded since we last used it (by an operator, or a restarted Triton that
                # loads only the served model): load it again, once, as on first use.
                if not await self.ensure_loaded(name):
                    raise gone from None
                parts = await self._infer_all(name, chunks, priority, timeout)
        timing.add_inference(time.perf_counter() - start)
        return Embeddings(
            embeddings=np.concatenate([p.embeddings for p in parts]),
            token_counts=[n for p in parts for n in p.token_counts],
            variant=parts[0].variant,
        )

    async def _infer_all(
        self, model: str, chunks: list[list[str]], priority: Priority, timeout: float
    ) -> list[Embeddings]:
        return await asyncio.gather(*(self._infer(model, c, priority, timeout) for c in chunks))

    def _validate(self, texts: list[str]) -> None:
        if not texts:
            raise TritonRagError(ErrorCode.EMPTY_INPUT, "no text to embed")
        for i, text in enumerate(texts):
            if not text:
                raise TritonRagError(ErrorCode.EMPTY_INPUT, f"input[{i}] is an empty string")
            if len(text) > self._settings.embed_max_chars:
                raise TritonRagError(
                    ErrorCode.TOO_LARGE,
                    f"input[{i}] has {len(text)} characters; the limit is "
                    f"{self._settings.embed_max_chars}",
                )

    async def _max_batch_size(self, model: str) -> int:
        if model not in self._batch_limits:
            await self.ensure_loaded(model)  # if it cannot, the config call below says why
            try:
                response = await self._client.get_model_config(model, as_json=True)
            except InferenceServerException as exc:
                raise map_error(exc, model) from exc
            self._batch_limits[model] = max(1, int(response["config"].get("max_batch_size", 1)))
        return self._batch_limits[model]

    async def _infer(
        self, model: str, texts: list[str], priority: Priority, timeout: float
    ) -> Embeddings:
        data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        tensor = grpcclient.InferInput("text", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        outputs = [
            grpcclient.InferRequestedOutput(n) for n in ("embedding", "token_count", "variant")
        ]
        start = time.perf_counter()
        try:
            result = await self._client.infer(
                model,
                [tensor],
                outputs=outputs,
                priority=int(priority),
                client_timeout=timeout,
                headers=grpc_headers(),
            )
        except InferenceServerException as exc:
            error = map_error(exc, model)
            if isinstance(error, ModelUnloaded):
                self._loaded.discard(model)
            raise error from exc
        finally:
            TRITON_SECONDS.labels(model, priority.name.lower()).observe(time.perf_counter() - start)
        counts = result.as_numpy("token_count")
        variant = result.as_numpy("variant")
        assert counts is not None and variant is not None
        return Embeddings(
            embeddings=np.asarray(result.as_numpy("embedding"), dtype=np.float32),
            token_counts=[int(n) for n in counts.reshape(-1)],
            variant=bytes(variant.reshape(-1)[0]).decode(),
        )


class ModelUnloaded(TritonRagError):
    """Triton does not know the model (not in its repository, or not loaded now)."""


def map_error(exc: InferenceServerException, model: str) -> TritonRagError:
    """Triton's gRPC status + message -> the project's error code."""
    status = str(exc.status() or "")
    message = str(exc.message() or exc)
    lowered = message.lower()
    if "DEADLINE_EXCEEDED" in status or "deadline exceeded" in lowered:
        return TritonRagError(
            ErrorCode.UPSTREAM_TIMEOUT, f"Triton did not answer in time: {message}"
        )
    if "queue" in lowered and (
        "maximum" in lowered or "exceeds" in lowered or "timeout" in lowered
    ):
        return TritonRagError(
            ErrorCode.OVERLOADED, f"Triton is overloaded: {message}", retry_after_s=1
        )
    if "INVALID_ARGUMENT" in status:
        code = ErrorCode.EMPTY_INPUT if "is empty" in lowered else ErrorCode.INVALID_INPUT
        return TritonRagError(code, message)
    if "NOT_FOUND" in status or "unknown model" in lowered:
        return ModelUnloaded(ErrorCode.NOT_READY, f"model {model!r} is not loaded: {message}", 5)
    if "RESOURCE_EXHAUSTED" in status:
        return TritonRagError(ErrorCode.TOO_LARGE, f"request too large for Triton: {message}")
    return TritonRagError(
        ErrorCode.NOT_READY, f"Triton failed ({status}): {message}", retry_after_s=2
    )
