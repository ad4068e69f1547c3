"""The embedded Prometheus: the project's prometheus/prometheus.yml and rules, with the
addresses of this stack's parts, its data in the runtime folder."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import yaml

from orchestrator.settings import ROOT, Settings

CONFIG = ROOT / "prometheus" / "prometheus.yml"
RULES = ROOT / "prometheus" / "rules"


def binary() -> str | None:
    """Debian's `prometheus` (setup installs it); None: the stack runs without monitoring."""
    return shutil.which("prometheus")


def targets(settings: Settings) -> dict[str, list[str]]:
    """Scrape job -> this stack's addresses (the same jobs as docker-compose's)."""
    return {
        "tritonrag-api": [f"127.0.0.1:{settings.port}"],
        "tritonrag-worker": [
            f"127.0.0.1:{settings.worker_metrics_port}",
            f"127.0.0.1:{settings.llm_worker_metrics_port}",
        ],
        "triton": [f"127.0.0.1:{settings.triton_metrics_port}"],
    }


def write_config(settings: Settings) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    local = targets(settings)
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": local[job["job_name"]]}]
    config["rule_files"] = [str(RULES / "*.yml")]
    path = settings.runtime_dir / "prometheus" / "prometheus.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def command(settings: Settings, executable: str) -> list[str]:
    home = settings.runtime_dir / "prometheus"
    return [
        executable,
        f"--config.file={write_config(settings)}",
        f"--storage.tsdb.path={home / 'data'}",
        "--storage.tsdb.retention.time=15d",
        f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
    ]


def url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.prometheus_port}"


def ready(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"{url(settings)}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
