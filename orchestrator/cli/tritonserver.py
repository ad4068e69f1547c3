"""Start, wait for and stop the `tritonserver` binary shipped in the nvidia-pytriton wheel."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from export.repository import published
from orchestrator import tracing
from orchestrator.settings import Settings


class TritonStartError(RuntimeError):
    """Triton exited or did not become ready; the message carries the log tail."""


def pytriton_home() -> Path:
    import pytriton

    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def prepare_backends(runtime_dir: Path) -> Path:
    """A backend directory whose python backend has the stub for this Python next to it.

    The wheel keeps one stub per Python version apart from the backend; Triton looks for it
    inside the backend folder. Symlinks keep the wheel untouched.
    """
    home = pytriton_home()
    python = runtime_dir / "backends" / "python"
    python.mkdir(parents=True, exist_ok=True)
    stub = home / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = [*(home / "backends" / "python").iterdir(), stub / "triton_python_backend_stub"]
    for source in sources:
        if source.name == "__pycache__":
            continue
        link = python / source.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return runtime_dir / "backends"


def command(settings: Settings, models: list[str]) -> list[str]:
    """The tritonserver command line for `settings`, loading `models` explicitly."""
    home = pytriton_home()
    args = [
        str(home / "bin" / "tritonserver"),
        f"--model-repository={settings.model_repository}",
        f"--backend-directory={prepare_backends(settings.runtime_dir)}",
        f"--cache-directory={home / 'caches'}",
        f"--http-address={settings.triton_host}",
        f"--http-port={settings.triton_http_port}",
        f"--grpc-address={settings.triton_host}",
        f"--grpc-port={settings.triton_grpc_port}",
        f"--metrics-address={settings.triton_host}",
        f"--metrics-port={settings.triton_metrics_port}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--allow-cpu-metrics=true",
        "--model-control-mode=explicit",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--log-verbose=0",
    ]
    args += [f"--load-model={m}" for m in models]
    if settings.otlp_endpoint:  # Triton's own spans join the caller's trace (gRPC metadata)
        args += [
            "--trace-config=mode=opentelemetry",
            "--trace-config=level=TIMESTAMPS",
            "--trace-config=rate=1",
            f"--trace-config=opentelemetry,url={tracing.traces_url(settings)}",
            "--trace-config=opentelemetry,resource=service.name=triton",
        ]
    if settings.triton_cache_mb > 0:
        args.append(f"--cache-config=local,size={settings.triton_cache_mb * 2**20}")
    return args


def startup_models(settings: Settings) -> list[str]:
    """What Triton loads at start: by default only the served models (each embedding variant
    costs ~570 MB resident in its two stubs); the rest load on first use."""
    models = published(settings.model_repository)
    if settings.triton_load_all:
        return models
    served = {settings.embed_model}
    if settings.llm_backend == "triton":
        served.add(settings.llm_model)
    return [m for m in models if m in served]


def environment() -> dict[str, str]:
    """The stub imports numpy, onnxruntime and tokenizers: this venv's bin/ goes first."""
    env = dict(os.environ)
    libs = pytriton_home().parent.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_ready(settings: Settings, timeout_s: float = 2.0) -> bool:
    url = f"http://{settings.triton_http_url}/v2/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class TritonProcess:
    """One running tritonserver; a context manager that stops it on exit."""

    settings: Settings
    process: subprocess.Popen[bytes]
    log_file: Path

    @classmethod
    def start(cls, settings: Settings) -> TritonProcess:
        models = startup_models(settings)
        if not models:
            raise TritonStartError(
                f"no exported model in {settings.model_repository}: run `tritonrag export`"
            )
        settings.runtime_dir.mkdir(parents=True, exist_ok=True)
        log_file = settings.runtime_dir / "triton.log"
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                command(settings, models),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment(),
            )
        return cls(settings, process, log_file)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.triton_ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonStartError(
                    f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if is_ready(self.settings):
                return
            time.sleep(0.25)
        self.stop()
        waited = self.settings.triton_ready_timeout_s
        raise TritonStartError(f"tritonserver not ready after {waited}s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after `grace_s`; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> TritonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
