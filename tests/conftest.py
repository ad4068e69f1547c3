"""Shared fixtures: a real tritonserver on free 127.0.0.1 ports, started once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.settings import Settings
from orchestrator.tritonserver import free_port


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
    from orchestrator.tritonserver import TritonProcess

    with TritonProcess.start(settings) as server:
        server.wait_ready()
        yield settings
        assert server.process.poll() is None, "tritonserver died during the tests"
