"""Prometheus config and alert rules, checked by promtool (setup installs Debian's
prometheus package: it must be there)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from orchestrator.cli import prometheus
from orchestrator.settings import ROOT, Settings


def promtool(*args: str, cwd: Path = ROOT) -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: run scripts/system-deps.sh (make setup does)"
    run = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout + run.stderr


def test_alert_rules_are_valid_and_their_unit_tests_pass() -> None:
    assert "SUCCESS: 8 rules found" in promtool(
        "check", "rules", str(prometheus.RULES / "tritonrag.yml")
    )
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml", cwd=prometheus.CONFIG.parent)


def test_the_compose_config_is_valid() -> None:
    assert "SUCCESS" in promtool("check", "config", str(prometheus.CONFIG))


def test_the_embedded_config_scrapes_this_stacks_ports(tmp_path: Path) -> None:
    settings = Settings(runtime_dir=tmp_path, port=18080, worker_metrics_port=19101)
    path = prometheus.write_config(settings)
    assert "SUCCESS" in promtool("check", "config", str(path))
    jobs = {j["job_name"]: j for j in yaml.safe_load(path.read_text())["scrape_configs"]}
    assert jobs["tritonrag-api"]["static_configs"][0]["targets"] == ["127.0.0.1:18080"]
    assert "127.0.0.1:19101" in jobs["tritonrag-worker"]["static_configs"][0]["targets"]
    assert set(jobs) == {"tritonrag-api", "tritonrag-worker", "triton"}
    command = prometheus.command(settings, "prometheus")
    assert f"--web.listen-address=127.0.0.1:{settings.prometheus_port}" in command
    assert f"--storage.tsdb.path={tmp_path / 'prometheus' / 'data'}" in command
