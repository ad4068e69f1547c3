"""docker-compose.yml against the Compose specification's JSON schema (vendored by
check-jsonschema), every image pinned, every service with a healthcheck."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from orchestrator.settings import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def test_compose_file_follows_the_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    run = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_service_is_pinned_and_has_a_healthcheck() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert {"prometheus", "grafana", "worker-llm"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, name
        image = service.get("image")
        if image is None:
            assert service.get("build"), name
        else:
            tag = image.rsplit(":", 1)[-1]
            assert ":" in image and tag != "latest" and any(c.isdigit() for c in tag), name


def test_grafana_gets_the_provisioning_and_the_dashboards() -> None:
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/tritonrag.yml").read_text())
    assert mounts["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
