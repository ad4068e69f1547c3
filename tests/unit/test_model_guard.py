"""The model guard (orchestrator/clients/model_guard.py): stub processes found and lost for
real, and its decisions against a fake of the Triton client calls it makes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any, cast

import psutil
import pytest
import redis.asyncio as aioredis
import tritonclient.grpc.aio as grpcclient

from orchestrator.clients import model_guard
from orchestrator.clients.model_guard import ModelGuard, instance_names, live_stubs
from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.jobs import PREFIX
from orchestrator.metrics import MODEL_RELOADS
from orchestrator.settings import Settings

LOCK = f"{PREFIX}heal:embed"


def _fake_stub(name: str) -> subprocess.Popen[bytes]:
    """A child whose command line reads like a python-backend stub's: the instance name is
    the 9th argument."""
    script = "import time; time.sleep(60)"
    fillers = "shm 1 2 pid lib"  # argv: stub, -c, script, 5 more, then the name
    argv0 = f"/opt/backends/python/{model_guard.STUB}"
    command = f"exec -a {argv0} {sys.executable} -c '{script}' {fillers} {name} dir"
    return subprocess.Popen(["bash", "-c", command])


def test_live_stubs_lists_running_stubs_by_instance_name_and_not_a_killed_one() -> None:
    stubs = [_fake_stub("embed_0_0"), _fake_stub("embed_0_1")]
    try:
        deadline = time.monotonic() + 10
        while set(live_stubs(os.getpid())) != {"embed_0_0", "embed_0_1"}:
            assert time.monotonic() < deadline, live_stubs(os.getpid())
            time.sleep(0.05)
        os.kill(stubs[1].pid, signal.SIGSEGV)
        while psutil.Process(stubs[1].pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.05)  # not reaped: what Triton leaves until it unloads the model
        assert live_stubs(os.getpid()) == {"embed_0_0": stubs[0].pid}
    finally:
        for stub in stubs:
            stub.kill()
            stub.wait()


def test_instance_names_follow_the_instance_groups_of_python_models_only() -> None:
    groups = [{"name": "embed_0", "count": 2}, {"name": "fast", "count": 1}]
    assert instance_names({"backend": "python", "instance_group": groups}) == {
        "embed_0_0",
        "embed_0_1",
        "fast_0",
    }
    assert instance_names({"backend": "onnxruntime", "instance_group": groups}) == set()


class FakeTriton:
    """The model-control calls the guard makes, as tritonclient.grpc.aio answers them."""

    def __init__(self, fail_loads: int = 0) -> None:
        self.ready = {"embed": True, "llm": True}
        self.calls: list[str] = []
        self.fail_loads = fail_loads

    async def get_model_repository_index(self, as_json: bool) -> dict[str, Any]:
        states = {m: "READY" if r else "UNAVAILABLE" for m, r in self.ready.items()}
        return {"models": [{"name": m, "state": s} for m, s in states.items()]}

    async def get_model_config(self, model: str, as_json: bool) -> dict[str, Any]:
        count = 2 if model == "embed" else 1
        group = {"name": f"{model}_0", "count": count}
        return {"config": {"backend": "python", "instance_group": [group]}}

    async def unload_model(self, model: str) -> None:
        self.calls.append(f"unload {model}")
        self.ready[model] = False

    async def is_model_ready(self, model: str) -> bool:
        return self.ready[model]

    async def load_model(self, model: str) -> None:
        self.calls.append(f"load {model}")
        if self.fail_loads:
            self.fail_loads -= 1
            from tritonclient.utils import InferenceServerException

            raise InferenceServerException("failed to load 'llm': stub died")
        self.ready[model] = True


def _pids(alive: set[str]) -> dict[str, int]:
    """Made-up pids (the guard's kills are recorded, never sent)."""
    return {name: 4_000_000 + i for i, name in enumerate(sorted(alive))}


def _guard(
    triton: FakeTriton, alive: set[str], monkeypatch: pytest.MonkeyPatch, redis: Any = None
) -> ModelGuard:
    monkeypatch.setattr(model_guard, "triton_pid", lambda port: os.getpid())
    monkeypatch.setattr(model_guard, "live_stubs", lambda pid: _pids(alive))
    monkeypatch.setattr(model_guard, "stop_stub", lambda pid: triton.calls.append(f"kill {pid}"))
    client = cast(grpcclient.InferenceServerClient, triton)
    return ModelGuard(client, Settings(), redis)


def _count(model: str, outcome: str) -> float:
    return float(MODEL_RELOADS.labels(model, outcome)._value.get())


async def test_a_model_with_a_dead_stub_is_unloaded_and_loaded_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    triton = FakeTriton()
    alive = {"embed_0_0", "embed_0_1", "llm_0_0"}
    guard = _guard(triton, alive - {"llm_0_0"}, monkeypatch)
    healed = _count("llm", "healed")
    assert await guard.check_once() == {"llm": {"llm_0_0"}}
    assert triton.calls == ["unload llm", "load llm"]
    assert guard.outages == {} and guard.problem("llm") is None
    assert _count("llm", "healed") == healed + 1
    monkeypatch.setattr(model_guard, "live_stubs", lambda pid: _pids(alive))
    assert await guard.check_once() == {}
    assert triton.calls == ["unload llm", "load llm"]  # nothing more to do


async def test_a_failed_reload_keeps_the_model_down_fails_fast_and_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    triton = FakeTriton(fail_loads=1)
    guard = _guard(triton, {"embed_0_0", "embed_0_1"}, monkeypatch)
    failed = _count("llm", "failed")
    await guard.check_once()
    assert _count("llm", "failed") == failed + 1
    assert "lost its stub process llm_0_0" in (guard.problem("llm") or "")
    with pytest.raises(TritonRagError) as refused:
        guard.check("llm")
    assert refused.value.code is ErrorCode.NOT_READY and refused.value.retry_after_s
    guard.check("embed")  # the other model answers
    guard.outages["llm"].next_try = 0  # its backoff over
    await guard.check_once()
    assert triton.calls == ["unload llm", "load llm", "unload llm", "load llm"]
    assert guard.problem("llm") is None and triton.ready["llm"]


async def test_one_process_reloads_a_model_when_several_watch_it(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.flushdb()
        triton = FakeTriton()
        alive = {"embed_0_0", "llm_0_0"}  # embed_0_1 died
        first, second = (_guard(triton, alive, monkeypatch, client) for _ in range(2))
        await client.set(LOCK, "1")  # the first holds the lock
        await second.check_once()
        assert triton.calls == [] and second.problem("embed") is not None
        await client.delete(LOCK)
        await first.check_once()
        # embed_0_0 (the survivor) is stopped before the unload
        assert triton.calls == ["kill 4000000", "unload embed", "load embed"]
        assert await client.exists(LOCK) == 0
        alive.add("embed_0_1")  # the reload started it again
        await second.check_once()
        assert second.problem("embed") is None and len(triton.calls) == 3
    finally:
        await client.aclose()


async def test_the_guard_runs_in_the_background_and_stops_with_its_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks: list[float] = []

    async def counted(self: ModelGuard) -> dict[str, set[str]]:
        checks.append(time.monotonic())
        return {}

    monkeypatch.setattr(ModelGuard, "check_once", counted)
    async with ModelGuard.watching(Settings(model_guard_interval_s=0.05)) as guard:
        assert guard is not None
        await asyncio.sleep(0.3)
    seen = len(checks)
    await asyncio.sleep(0.15)
    assert seen >= 3 and len(checks) == seen  # it checked, and stopped with the context
    async with ModelGuard.watching(Settings(model_guard_interval_s=0)) as off:
        assert off is None


async def test_the_guard_outlives_a_check_that_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    async def failing(self: ModelGuard) -> dict[str, set[str]]:
        calls.append(1)
        raise RuntimeError("Redis went away")

    monkeypatch.setattr(ModelGuard, "check_once", failing)
    async with ModelGuard.watching(Settings(model_guard_interval_s=0.02)):
        await asyncio.sleep(0.2)
    assert len(calls) >= 3  # it kept checking after the first failure
