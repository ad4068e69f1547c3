"""The whole embedded stack (redis-server, tritonserver, a Celery worker, the API) on free
127.0.0.1 ports, started once with the same code as `tritonrag up`. It never skips."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.cli import launcher as embedded
from orchestrator.cli.tritonserver import free_port
from orchestrator.settings import PORT_FIELDS, Settings


def stack_settings(runtime_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "runtime_dir": runtime_dir,
        **{port: free_port() for port in PORT_FIELDS},
        "worker_concurrency": 4,
        "chunk_tokens": 64,
        "chunk_overlap": 8,
    }
    return Settings(**(values | overrides))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    yield from serve(stack_settings(tmp_path_factory.mktemp("stack")))


@pytest.fixture(scope="session")
def api(stack: Settings) -> Iterator[httpx.Client]:
    yield from client(stack)


def serve(settings: Settings) -> Iterator[Settings]:
    """The stack up for as long as the caller holds it; every part must still run at the end."""
    try:
        embedded.up(settings, print)
        yield settings
        assert all(s["pid"] for s in embedded.status(settings).values()), "a part died"
    finally:
        embedded.down(settings, print)


def client(settings: Settings) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=60) as http:
        yield http


def wait_job(api: httpx.Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["state"] in ("indexed", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished after {timeout_s}s")


def upload(
    api: httpx.Client, collection: str, files: list[tuple[str, bytes]], **data: Any
) -> httpx.Response:
    return api.post(
        f"/v1/collections/{collection}/documents",
        files=[("files", (name, body)) for name, body in files],
        data=data,
    )


def search(
    api: httpx.Client, collection: str, query: str, top_k: int = 5, **filters: Any
) -> list[dict[str, Any]]:
    body = {"query": query, "top_k": top_k, "filters": filters}
    response = api.post(f"/v1/collections/{collection}/search", json=body)
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()["data"]
    return hits
