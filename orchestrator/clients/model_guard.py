"""Notice a Triton python-backend stub that died, and load its model again.

Triton 2.51 keeps a python-backend model READY after one of its stub processes dies (a fault
in native code, the OOM killer): its health and readiness endpoints stay green and every
request the dead instance takes fails with "Stub process ... is not healthy" until someone
reloads the model. The guard compares the stubs a loaded model should have (its instance
groups) with the stub processes alive under the local tritonserver, says which models are
down (readiness, fail-fast 503s), and reloads them through Triton's model-control API
(unload, then load). A Redis lock lets one process heal a model when several watch it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psutil
import redis.asyncio as aioredis
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from orchestrator.errors import ErrorCode, TritonRagError
from orchestrator.jobs import PREFIX
from orchestrator.metrics import MODEL_RELOADS, MODEL_UP
from orchestrator.settings import Settings

log = logging.getLogger("tritonrag.guard")
STUB = "triton_python_backend_stub"
STUB_NAME_ARG = 8  # argv: stub, model path, shm region, sizes x2, parent pid, lib, ipc, NAME
RELOAD_TIMEOUT_S = 120.0
LOCK_MS = int(RELOAD_TIMEOUT_S * 1000)


def triton_pid(grpc_port: int) -> int | None:
    """The tritonserver on this host that serves gRPC on `grpc_port`, if any."""
    flag = f"--grpc-port={grpc_port}"
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "tritonserver" and flag in cmdline:
            return int(proc.pid)
    return None


def live_stubs(pid: int) -> dict[str, int]:
    """Instance name -> pid of the python-backend stubs running under tritonserver `pid` (a
    killed stub stays a zombie until Triton reaps it: it is not alive)."""
    stubs: dict[str, int] = {}
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return stubs
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            argv = child.cmdline()
        except psutil.Error:
            continue
        if len(argv) > STUB_NAME_ARG and argv[0].endswith(STUB):
            stubs[argv[STUB_NAME_ARG]] = int(child.pid)
    return stubs


def stop_stub(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def instance_names(config: dict[str, Any]) -> set[str]:
    """The stubs a loaded python-backend model runs: `<group name>_<index>` per instance."""
    if config.get("backend") != "python":
        return set()
    return {
        f"{group['name']}_{i}"
        for group in config.get("instance_group", [])
        for i in range(int(group.get("count", 1)))
    }


@dataclass
class Outage:
    dead: tuple[str, ...]
    since: float  # time.monotonic()
    reloads: int = 0  # failed attempts
    next_try: float = 0.0  # time.monotonic()

    def describe(self, model: str) -> str:
        ago = time.monotonic() - self.since
        return (
            f"model {model!r} lost its stub process {', '.join(self.dead)} {ago:.0f}s ago; "
            f"reloading (attempt {self.reloads + 1})"
        )


class ModelGuard:
    """Watches the stubs of the models a local Triton serves; reloads a model whose stub died."""

    def __init__(
        self,
        client: grpcclient.InferenceServerClient,
        settings: Settings,
        redis: aioredis.Redis | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._redis = redis
        self._pid: int | None = None
        self._expected: dict[str, set[str]] = {}
        self.outages: dict[str, Outage] = {}

    @classmethod
    @asynccontextmanager
    async def watching(
        cls, settings: Settings, redis: aioredis.Redis | None = None
    ) -> AsyncIterator[ModelGuard | None]:
        """A guard checking in the background while the context is open (None when off)."""
        if settings.model_guard_interval_s <= 0:
            yield None
            return
        client = grpcclient.InferenceServerClient(settings.triton_grpc_url)
        guard = cls(client, settings, redis)
        task = asyncio.create_task(guard.run(), name="model-guard")
        try:
            yield guard
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.close()

    def problem(self, model: str) -> str | None:
        """Why `model` cannot answer now, or None."""
        outage = self.outages.get(model)
        return outage.describe(model) if outage else None

    def check(self, model: str) -> None:
        """Fail fast (503, Retry-After) while `model` is down."""
        if (why := self.problem(model)) is not None:
            raise TritonRagError(ErrorCode.NOT_READY, why, retry_after_s=5)

    async def run(self) -> None:
        """Check every `model_guard_interval_s` until cancelled."""
        while True:
            try:
                await self.check_once()
            except (InferenceServerException, psutil.Error, OSError) as exc:
                log.debug("model guard: check failed: %s", exc)  # Triton restarting
            except Exception:  # Redis away, a bug: the guard must outlive one failed check
                log.exception("model guard: check failed")
            await asyncio.sleep(self._settings.model_guard_interval_s)

    async def check_once(self) -> dict[str, set[str]]:
        """Find models with dead stubs and heal them; returns what it found dead."""
        pid = self._locate()
        if pid is None:
            return {}
        alive = set(live_stubs(pid))
        ready = await self._ready_models()
        dead: dict[str, set[str]] = {}
        for model in ready:
            missing = await self._instances(model) - alive
            MODEL_UP.labels(model).set(0 if missing else 1)
            if missing:
                dead[model] = missing
        for model in [m for m in self.outages if m in ready and m not in dead]:
            del self.outages[model]  # another process reloaded it
        # A reload that failed left the model unloaded: try again, backing off.
        for model, outage in self.outages.items():
            if model not in ready and time.monotonic() >= outage.next_try:
                dead.setdefault(model, set(outage.dead))
        for model, missing in dead.items():
            await self._heal(model, missing)
        return dead

    def _locate(self) -> int | None:
        if self._pid is None or not psutil.pid_exists(self._pid):
            self._pid = triton_pid(self._settings.triton_grpc_port)
            self._expected.clear()
        return self._pid

    async def _ready_models(self) -> list[str]:
        index = await self._client.get_model_repository_index(as_json=True)
        return [m["name"] for m in index.get("models", []) if m.get("state") == "READY"]

    async def _instances(self, model: str) -> set[str]:
        if model not in self._expected:
            response = await self._client.get_model_config(model, as_json=True)
            self._expected[model] = instance_names(response["config"])
        return self._expected[model]

    async def _heal(self, model: str, missing: set[str]) -> None:
        outage = self.outages.get(model)
        if outage is None:
            outage = self.outages[model] = Outage(tuple(sorted(missing)), time.monotonic())
            log.error("%s", outage.describe(model))
        if not await self._lock(model):
            return  # another process heals it; readiness says down until the stubs are back
        try:
            await self._reload(model)
        except (InferenceServerException, TimeoutError) as exc:
            outage.reloads += 1
            outage.next_try = time.monotonic() + min(30.0, 2.0**outage.reloads)
            MODEL_RELOADS.labels(model, "failed").inc()
            log.error("model %r: reload %d failed: %s", model, outage.reloads, exc)
            return
        finally:
            await self._unlock(model)
        self._expected.pop(model, None)
        del self.outages[model]
        MODEL_RELOADS.labels(model, "healed").inc()
        MODEL_UP.labels(model).set(1)
        took = time.monotonic() - outage.since
        log.warning("model %r: reloaded %.1fs after its stub died", model, took)

    async def _reload(self, model: str) -> None:
        """Stop the model's surviving stubs, unload it, load it again.

        Triton 2.51 never finishes unloading a model once requests reached its dead stub
        (their responses are never released: the model stays UNLOADING), and its healthy
        stubs would then live on beside the new ones, ~300 MB each. So they are stopped
        first, and the new version is loaded as soon as the old one is no longer ready.
        """
        names = await self._instances(model)
        if self._pid is not None:
            for name, pid in live_stubs(self._pid).items():
                if name in names:
                    stop_stub(pid)
        await self._client.unload_model(model)
        async with asyncio.timeout(RELOAD_TIMEOUT_S):
            while await self._client.is_model_ready(model):
                await asyncio.sleep(0.1)
            await self._client.load_model(model)
            if not await self._client.is_model_ready(model):
                raise TimeoutError(f"{model} is not ready after its load")

    def _lock_key(self, model: str) -> str:
        return f"{PREFIX}heal:{model}"

    async def _lock(self, model: str) -> bool:
        if self._redis is None:
            return True
        return bool(await self._redis.set(self._lock_key(model), "1", nx=True, px=LOCK_MS))

    async def _unlock(self, model: str) -> None:
        if self._redis is not None:
            await self._redis.delete(self._lock_key(model))
