"""`tritonrag up | status | ingest | search | down` as a user runs them, on ports of its own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.cli import launcher as embedded
from orchestrator.cli.tritonserver import free_port, is_ready
from orchestrator.settings import Settings
from tests import samples
from tests.integration.conftest import stack_settings

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "tritonrag"
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=400)


def _folder(root: Path, n: int) -> Path:
    docs = root / "docs"
    (docs / "nested" / "deeper").mkdir(parents=True)
    for i in range(n):
        sub = docs if i % 3 == 0 else docs / "nested" if i % 3 == 1 else docs / "nested" / "deeper"
        (sub / f"note-{i:03d}.txt").write_text(f"Note {i}: the meeting about topic {i} went well.")
    (docs / "orbit.md").write_text("# Orbits\n\nSatellites stay in orbit by falling around Earth.")
    (docs / "manual.pdf").write_bytes(samples.pdf("Press the red button to reset the device."))
    (docs / "ignored.bin").write_bytes(b"\x00\x01")  # not a supported suffix: not uploaded
    return docs


def test_stack_lifecycle_ingest_and_search(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "runtime")
    env = embedded.settings_env(settings)
    unrelated = subprocess.Popen(["sleep", "300"])
    try:
        up = _cli(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        names = [p.name for p in embedded.parts(settings)]
        assert names == ["redis", "triton", "worker", "llm-worker", "api", "prometheus"]
        for part in names:
            assert f"{part}: started" in up.stdout
        assert "metrics: http://127.0.0.1:" in up.stdout
        again = _cli(env, "up")
        assert again.stdout.count("already running") == len(names), again.stdout

        worker = next(p for p in embedded.parts(settings) if p.name == "worker")
        pid = embedded.running_pid(worker, settings)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        revived = _cli(env, "up")
        assert "worker: started" in revived.stdout
        assert revived.stdout.count("already") == len(names) - 1

        docs = _folder(tmp_path, 60)
        ingest = _cli(env, "ingest", str(docs), "--collection", "notes")
        assert ingest.returncode == 0, ingest.stdout + ingest.stderr
        assert "62 indexed, 0 failed, 0 rejected" in ingest.stdout
        found = _cli(env, "search", "how do satellites stay up", "-c", "notes", "-k", "3")
        assert found.returncode == 0 and "orbit.md" in found.stdout
        found = _cli(env, "search", "reset the device", "-c", "notes", "-k", "1")
        assert "manual.pdf" in found.stdout and "(hybrid)" in found.stdout
        assert "api" in _cli(env, "status").stdout

        # A collection indexed before sparse vectors existed: it answers dense until
        # `tritonrag reindex` gives it BM25 vectors.
        os.kill(embedded.running_pid(worker, settings) or 0, signal.SIGKILL)
        # The shard's lock goes with the process, not with the signal (CI: WAL WouldBlock).
        deadline = time.monotonic() + 30
        while embedded.running_pid(worker, settings) is not None:
            assert time.monotonic() < deadline, "the killed worker is still running"
            time.sleep(0.1)
        _dense_only(settings.vectors_dir / "default__notes")
        assert "worker: started" in _cli(env, "up").stdout
        found = _cli(env, "search", "reset the device", "-c", "notes", "-k", "1")
        assert "manual.pdf" in found.stdout and "(dense)" in found.stdout
        refused = _cli(env, "search", "red button", "-c", "notes", "--mode", "sparse")
        assert refused.returncode == 1 and "tritonrag reindex" in " ".join(refused.stdout.split())
        done = _cli(env, "reindex", "notes")
        assert "notes: 62 points by embed, with BM25" in done.stdout, done.stdout + done.stderr
        found = _cli(env, "search", "red button", "-c", "notes", "-k", "1", "--mode", "sparse")
        assert "manual.pdf" in found.stdout and "(sparse)" in found.stdout
        # Into another embedding model: every chunk embedded again, swapped in when done.
        moved = _cli(env, "reindex", "notes", "--model", "embed_fp32")
        assert "notes: 62 points by embed_fp32, with BM25" in moved.stdout, moved.stdout
        found = _cli(env, "search", "reset the device", "-c", "notes", "-k", "1")
        assert "manual.pdf" in found.stdout and "(hybrid)" in found.stdout

        # A pid file that points at someone else's process is not ours to stop.
        api = next(p for p in embedded.parts(settings) if p.name == "api")
        real_api_pid = api.pid_file(settings).read_text()
        api.pid_file(settings).write_text(str(unrelated.pid))
        down = _cli(env, "down")
        assert unrelated.poll() is None, "down killed a process it did not start"
        assert down.returncode == 0
        assert all(
            f"{p}: stopped" in down.stdout
            for p in ("prometheus", "llm-worker", "worker", "triton", "redis")
        )
        os.kill(int(real_api_pid), signal.SIGTERM)  # the api we orphaned on purpose
    finally:
        _cli(env, "down")
        unrelated.kill()
    assert not is_ready(settings)
    assert "nothing to stop" in _cli(env, "down").stdout


def _dense_only(shard: Path) -> None:
    """Rewrite an edge shard as one made before sparse vectors existed (its owner stopped)."""
    import json

    import qdrant_edge as qe

    from orchestrator.clients import edge
    from orchestrator.clients.vectors import dense_part

    old = qe.EdgeShard.load(str(shard))
    dim = json.loads((shard / "edge_config.json").read_text())["vectors"][""]["size"]
    config = qe.EdgeConfig(vectors=edge._vector_params(dim, "none"), wal_enabled=True)
    new = qe.EdgeShard.create(str(shard) + ".dense", config)
    records, _ = old.scroll(qe.ScrollRequest(limit=10_000, with_payload=True, with_vector=True))
    new.update(
        qe.UpdateOperation.upsert_points(
            [qe.Point(r.id, dense_part(r.vector), r.payload) for r in records]
        )
    )
    old.close()
    new.close()
    shutil.rmtree(shard)
    Path(str(shard) + ".dense").rename(shard)


def test_server_is_not_ready_until_its_models_are_loaded(tmp_path: Path) -> None:
    from orchestrator.cli.tritonserver import TritonProcess

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
