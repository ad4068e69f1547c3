"""Liveness, readiness of each dependency (with its latency), Prometheus metrics."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from orchestrator.api.deps import ServicesDep
from orchestrator.api.metrics import Metrics
from orchestrator.api.services import Services
from orchestrator.errors import TritonRagError
from orchestrator.lanes import LANES, LLM, PING, QUERY, SEARCH_REQUESTS, SENT_AT, lane_keys

router = APIRouter(tags=["health"])
READY_TIMEOUT_S = 3.0


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def _probe(check: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        ok = bool(await check())
        error = None if ok else "not ready"
    except (TritonRagError, OSError, ConnectionError) as exc:
        ok, error = False, str(exc)
    except Exception as exc:
        ok, error = False, f"{type(exc).__name__}: {exc}"
    result: dict[str, Any] = {
        "ready": ok,
        "latency_ms": round(1000 * (time.perf_counter() - start), 2),
    }
    if error:
        result["error"] = error
    return result


@router.get("/ready")
async def ready(services: ServicesDep) -> JSONResponse:
    checks = {
        "redis": await _probe(services.redis.ping),
        "triton": await _probe(lambda: embed_ready(services)),
        "worker": await _probe(lambda: services.call(PING, timeout_s=READY_TIMEOUT_S)),
    }
    ok = all(c["ready"] for c in checks.values())
    # Answers need these too; search and ingest do not, so they are reported, not required.
    checks["llm"] = await _probe(lambda: llm_ready(services))
    checks["llm_worker"] = await _probe(
        lambda: services.call(PING, timeout_s=READY_TIMEOUT_S, queue=LLM)
    )
    headers = None if ok else {"Retry-After": "2"}
    return JSONResponse(
        {"ready": ok, "dependencies": checks}, status_code=200 if ok else 503, headers=headers
    )


async def embed_ready(services: Services) -> bool:
    """Triton has the model loaded and (where the guard watches) its stubs are alive."""
    if services.guard is not None:
        services.guard.check(services.settings.embed_model)
    return await services.embedder.ready()


async def llm_ready(services: Services) -> bool:
    settings = services.settings
    if settings.llm_backend == "triton":
        if services.guard is not None:
            services.guard.check(settings.llm_model)
        return await services.embedder.ready(settings.llm_model)
    from orchestrator.clients.llm import openai_ready

    return await openai_ready(settings)


@router.get(
    "/metrics",
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """This app's HTTP metrics, what its clients recorded, and the lanes' backlog."""
    own: Metrics = request.app.state.metrics
    checks: dict[str, Callable[[], Awaitable[Any]]] = {
        "redis": services.redis.ping,
        "triton": lambda: embed_ready(services),
        "llm": lambda: llm_ready(services),
    }
    for name, check in checks.items():
        own.dependency_ready.labels(name).set(1 if (await _probe(check))["ready"] else 0)
    with contextlib.suppress(redis.exceptions.RedisError, OSError):
        await _lanes(services, own)  # Redis away: the rest is still worth scraping
    body = generate_latest(own.registry) + generate_latest(REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _lanes(services: Services, metrics: Metrics) -> None:
    now = time.time()
    for lane in LANES:
        # Direct searches (workers/search_lane.py) wait on the query lane too.
        keys = lane_keys(lane) + ([SEARCH_REQUESTS] if lane == QUERY else [])
        async with services.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.llen(key)
                pipe.lindex(key, -1)  # kombu pushes left and pops right: the oldest
            replies = await pipe.execute()
        depth = sum(int(n) for n in replies[0::2])
        sent = [_sent_at(raw) for raw in replies[1::2] if raw]
        oldest = min((t for t in sent if t is not None), default=None)
        metrics.lane_depth.labels(lane).set(depth)
        metrics.lane_age.labels(lane).set(max(0.0, now - oldest) if oldest else 0.0)
    metrics.unacked.set(await services.redis.hlen("unacked"))


def _sent_at(raw: bytes) -> float | None:
    try:
        value = json.loads(raw)["headers"].get(SENT_AT)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None
