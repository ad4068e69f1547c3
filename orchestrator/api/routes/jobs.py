"""Job state, as JSON and as a server-sent event stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from orchestrator.api.deps import ServicesDep, TenantDep
from orchestrator.api.schemas import ERROR_RESPONSES, Job
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.jobs import JobState, JobStore

router = APIRouter(prefix="/v1", tags=["jobs"], responses=ERROR_RESPONSES)
POLL_S = 0.25
STREAM_LIMIT_S = 3600.0


def _view(raw: dict[str, Any]) -> Job:
    job = Job(**raw)
    todo = job.chunks_total - job.chunks_reused
    if job.started_at and job.chunks_embedded:
        elapsed = (job.finished_at or time.time()) - job.started_at
        job.chunks_per_s = round(job.chunks_embedded / max(elapsed, 1e-3), 2)
        if not JobState(job.state).terminal:
            job.eta_s = round(max(todo - job.chunks_embedded, 0) / job.chunks_per_s, 1)
    if JobState(job.state) is JobState.INDEXED:
        job.eta_s = 0.0
    return job


async def _load(jobs: JobStore, job_id: str, tenant: str) -> Job:
    raw = await asyncio.to_thread(jobs.job, job_id)
    if raw is None or raw.get("tenant") != tenant:
        raise TritonRagError(ErrorCode.NOT_FOUND, f"job {job_id!r} not found")
    return _view(raw)


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, services: ServicesDep, tenant: TenantDep) -> Job:
    return await _load(services.jobs, job_id, tenant)


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, services: ServicesDep, tenant: TenantDep) -> EventSourceResponse:
    """`job` events whenever the state or counts change; ends at indexed/failed."""
    first = await _load(services.jobs, job_id, tenant)

    async def stream() -> AsyncIterator[dict[str, str]]:
        job, last, deadline = first, "", time.monotonic() + STREAM_LIMIT_S
        while True:
            body = job.model_dump_json(exclude={"chunks_per_s", "eta_s", "updated_at"})
            if body != last:
                last = body
                yield {"event": "job", "data": job.model_dump_json()}
            if JobState(job.state).terminal or time.monotonic() > deadline:
                return
            await asyncio.sleep(POLL_S)
            job = await _load(services.jobs, job_id, tenant)

    return EventSourceResponse(stream(), ping=15)
