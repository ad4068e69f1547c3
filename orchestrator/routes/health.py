"""Liveness, readiness of each dependency (with its latency), Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator.deps import ServicesDep
from orchestrator.errors import TritonRagError
from orchestrator.services import Services
from workers.celery_app import LLM, PING

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
        "triton": await _probe(services.embedder.ready),
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


async def llm_ready(services: Services) -> bool:
    settings = services.settings
    if settings.llm_backend == "triton":
        return await services.embedder.ready(settings.llm_model)
    from orchestrator.clients.llm import openai_ready

    return await openai_ready(settings)


@router.get(
    "/metrics",
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
