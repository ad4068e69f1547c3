"""`tritonrag up | status | down` against the real binary, on ports of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.settings import Settings
from orchestrator.tritonserver import free_port, is_ready

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "tritonrag"
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=240)


def test_up_is_not_ready_before_loading_then_ready_then_down(tmp_path: Path) -> None:
    ports = {"HTTP": free_port(), "GRPC": free_port(), "METRICS": free_port()}
    env = dict(os.environ, TRITONRAG_RUNTIME_DIR=str(tmp_path))
    env |= {f"TRITONRAG_TRITON_{k}_PORT": str(v) for k, v in ports.items()}
    settings = Settings(
        runtime_dir=tmp_path,
        triton_http_port=ports["HTTP"],
        triton_grpc_port=ports["GRPC"],
        triton_metrics_port=ports["METRICS"],
    )
    assert not is_ready(settings)
    try:
        up = _cli(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert is_ready(settings)
        again = _cli(env, "up")
        assert "already running" in again.stdout
        assert "ready True" in _cli(env, "status").stdout
    finally:
        down = _cli(env, "down")
    assert down.returncode == 0 and "stopped Triton" in down.stdout
    assert not is_ready(settings)
    assert "nothing to stop" in _cli(env, "down").stdout


def test_server_is_not_ready_until_its_models_are_loaded(tmp_path: Path) -> None:
    from orchestrator.tritonserver import TritonProcess

    settings = Settings(
        runtime_dir=tmp_path,
        triton_http_port=free_port(),
        triton_grpc_port=free_port(),
        triton_metrics_port=free_port(),
    )
    with TritonProcess.start(settings) as server:
        seen_unready_while_running = not is_ready(settings) and server.process.poll() is None
        server.wait_ready()
        assert seen_unready_while_running
        assert is_ready(settings)
    assert server.process.returncode == 0
    assert not is_ready(settings)
