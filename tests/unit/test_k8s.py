"""deploy/k8s, offline: each overlay renders with `kubectl kustomize` without a warning, every
core object passes kubernetes-validate in strict mode, the KEDA and prometheus-operator
objects pass their vendored CRD schemas, every metric an autoscaler reads exists, and what
the manifests copy (images, settings, dashboards, alert rules) matches its source.

Nothing here skips: a missing kubectl (scripts/system-deps.sh) or kubernetes-validate
(the dev extra) fails the test."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from starlette.types import Receive, Scope, Send

from orchestrator import metrics as _library_metrics  # noqa: F401  (registers tritonrag_*)
from orchestrator.api.admission import Admission
from orchestrator.api.metrics import Metrics
from orchestrator.cli import prometheus
from orchestrator.cli.dashboards import DASHBOARDS
from orchestrator.lanes import LANES
from orchestrator.settings import ROOT, Settings

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
KUBERNETES_VERSION = "1.32.0"  # Debian's kubectl package
SCHEMAS = K8S / "schemas"
CUSTOM = {  # (apiVersion, kind) -> vendored JSON schema (deploy/k8s/schemas/README.md)
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "keda.sh/scaledobject_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS
    / "monitoring.coreos.com/servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): SCHEMAS
    / "monitoring.coreos.com/podmonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): SCHEMAS
    / "monitoring.coreos.com/prometheusrule_v1.json",
}
METRIC = re.compile(r"\b(?:tritonrag|nv)_[a-z0-9_]+\b")
Doc = dict[str, Any]


def _tool(name: str, where: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert path, f"{name} is missing: {where}"
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT)


@cache
def render(overlay: str) -> tuple[Doc, ...]:
    kubectl = _tool("kubectl", "run scripts/system-deps.sh (Debian's kubectl package)")
    run = _run(kubectl, "kustomize", str(K8S / "overlays" / overlay))
    assert run.returncode == 0, run.stderr
    assert run.stderr == "", f"kustomize warned: {run.stderr}"
    return tuple(d for d in yaml.safe_load_all(run.stdout) if d)


def kind(docs: Iterable[Doc], wanted: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == wanted]


def named(docs: Iterable[Doc], wanted: str, name: str) -> Doc:
    return next(d for d in kind(docs, wanted) if d["metadata"]["name"] == name)


def is_custom(doc: Doc) -> bool:
    return (doc["apiVersion"], doc["kind"]) in CUSTOM


def validate_core(docs: list[Doc], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate --strict; a warning (an unknown kind, say) turns into a failure."""
    validator = _tool("kubernetes-validate", "pip install the dev extra (kubernetes-validate)")
    path = tmp_path / "core.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    run = _run(validator, "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(path))
    if run.returncode == 0 and ("WARN" in run.stdout or "ERROR" in run.stdout):
        run.returncode = 1
    return run


def validate_custom(docs: list[Doc], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema of each custom resource against its CRD's vendored schema."""
    checker = _tool("check-jsonschema", "pip install the dev extra (check-jsonschema)")
    outcome = subprocess.CompletedProcess[str]([], 0, "", "")
    for (api_version, kind_), schema in CUSTOM.items():
        mine = [d for d in docs if (d["apiVersion"], d["kind"]) == (api_version, kind_)]
        files = []
        for n, doc in enumerate(mine):
            # The catalog's schemas leave the top level open: keep it closed here.
            extra = set(doc) - set(json.loads(schema.read_text())["properties"])
            assert not extra, f"{kind_} {doc['metadata']['name']}: unknown fields {extra}"
            files.append(tmp_path / f"{kind_}-{n}.json")
            files[-1].write_text(json.dumps(doc))
        if files:
            run = _run(checker, "--schemafile", str(schema), *map(str, files))
            if run.returncode != 0:
                outcome = run
    return outcome


def _exposed(registry: CollectorRegistry) -> set[str]:
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("_count", "_sum", "_created"),
        "gauge": ("",),
    }
    return {f.name + s for f in registry.collect() for s in suffixes.get(f.type, ("",))}


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("never called")


@cache
def known_metrics() -> frozenset[str]:
    """tritonrag_* as the project's registries expose them, and Triton's nv_* that the
    dashboards and alert rules query (tests/integration/test_observability.py finds every
    dashboard panel with data and every rule evaluating against a live Triton)."""
    api = Metrics()
    Admission(_no_app, [], api)  # adds tritonrag_lane_in_flight to the API's registry
    names = _exposed(REGISTRY) | _exposed(api.registry)
    rules = yaml.safe_load((prometheus.RULES / "tritonrag.yml").read_text())["groups"]
    exprs = [r["expr"] for g in rules for r in g["rules"]]
    exprs += [q.expr for d in DASHBOARDS for p in d.panels for q in p.queries]
    names |= {m for e in exprs for m in METRIC.findall(e) if m.startswith("nv_")}
    return frozenset(names)


def unknown_metrics(promql: str) -> set[str]:
    return set(METRIC.findall(promql)) - known_metrics()


def autoscaler_queries(docs: Iterable[Doc]) -> list[str]:
    """The HPAs' Pods/Object/External metric names and the KEDA Prometheus queries."""
    found = []
    for hpa in kind(docs, "HorizontalPodAutoscaler"):
        for metric in hpa["spec"].get("metrics", []):
            if metric["type"] != "Resource":
                found.append(metric[metric["type"].lower()]["metric"]["name"])
    for scaled in kind(docs, "ScaledObject"):
        found += [t["metadata"]["query"] for t in scaled["spec"]["triggers"]]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_core_object_passes_strict_validation(overlay: str, tmp_path: Path) -> None:
    core = [d for d in render(overlay) if not is_custom(d)]
    run = validate_core(core, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert {"Deployment", "StatefulSet", "HorizontalPodAutoscaler", "NetworkPolicy"} <= {
        d["kind"] for d in core
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_pass_their_crd_schemas(overlay: str, tmp_path: Path) -> None:
    custom = [d for d in render(overlay) if is_custom(d)]
    assert {d["kind"] for d in custom} == {k for _, k in CUSTOM}
    run = validate_custom(custom, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_misspelled_field_fails_validation(tmp_path: Path) -> None:
    docs = render("cpu")
    api = copy.deepcopy(named(docs, "Deployment", "tritonrag-api"))
    container = api["spec"]["template"]["spec"]["containers"][0]
    container["readynessProbe"] = container.pop("readinessProbe")
    run = validate_core([api], tmp_path)
    assert run.returncode != 0 and "readynessProbe" in run.stdout, run.stdout
    scaled = copy.deepcopy(named(docs, "ScaledObject", "worker-ingest"))
    scaled["spec"]["scaleTargetRf"] = scaled["spec"].pop("scaleTargetRef")
    assert validate_custom([scaled], tmp_path).returncode != 0
    # A kind kubernetes-validate has no schema for is a warning there: a failure here.
    odd = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    assert validate_core([odd], tmp_path).returncode != 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_read_only_metrics_the_project_exports(overlay: str) -> None:
    queries = autoscaler_queries(render(overlay))
    assert len(queries) == 1 + 1 + 2 * len(LANES)  # API in-flight, Triton, depth + age per lane
    for query in queries:
        assert METRIC.search(query), query
        assert unknown_metrics(query) == set(), query
    assert unknown_metrics("max(tritonrag_lane_dept{lane='ingest'})") == {"tritonrag_lane_dept"}
    assert unknown_metrics("rate(nv_inference_queue_duration_ms[1m])") != set()


def test_each_lane_has_a_worker_scaled_on_its_backlog() -> None:
    settings = Settings()
    docs = render("cpu")
    grace = {
        "ingest": settings.parse_timeout_s + settings.outage_wait_s,
        "llm": settings.llm_first_token_timeout_s + settings.llm_timeout_s,
        "query": 60,  # searches expire after search_timeout_s; deletes and drops take longer
    }
    for lane in LANES:
        pod = named(docs, "Deployment", f"worker-{lane}")["spec"]["template"]["spec"]
        command = pod["containers"][0]["command"]
        assert command[:5] == ["celery", "-A", "workers.tasks", "worker", "-Q"], command
        assert command[5] == lane
        assert pod["terminationGracePeriodSeconds"] == grace[lane]
        triggers = named(docs, "ScaledObject", f"worker-{lane}")["spec"]["triggers"]
        queries = [t["metadata"]["query"] for t in triggers]
        assert any("tritonrag_lane_depth" in q and f'lane="{lane}"' in q for q in queries)
        assert any("tritonrag_lane_oldest_age_seconds" in q for q in queries)
        assert named(docs, "PodDisruptionBudget", f"worker-{lane}")


def test_probes_and_the_overlays_differences() -> None:
    for overlay in OVERLAYS:
        docs = render(overlay)
        api = named(docs, "Deployment", "tritonrag-api")["spec"]["template"]["spec"]
        assert api["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert api["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/health"
        triton = named(docs, "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]
        assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        repository = settings_env(docs)["TRITONRAG_MODEL_REPOSITORY"]
        assert repository == f"/model_repository/{overlay}"
        gpus = triton["resources"]["limits"].get("nvidia.com/gpu")
        assert (gpus == 1) == (overlay == "gpu")
    hpa = named(render("cpu"), "HorizontalPodAutoscaler", "tritonrag-api")
    assert hpa["apiVersion"] == "autoscaling/v2"


def settings_env(docs: Iterable[Doc]) -> dict[str, str]:
    cm = next(
        d for d in kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("tritonrag-settings")
    )
    data: dict[str, str] = cm["data"]
    return data


def test_images_and_settings_match_compose_and_the_settings_class() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    docs = render("gpu")
    pods = [
        d["spec"]["template"]["spec"] for d in docs if d["kind"] in {"Deployment", "StatefulSet"}
    ]
    images = {c["image"].split(":")[0]: c["image"] for p in pods for c in p["containers"]}
    for service in ("triton", "redis"):
        image = compose[service]["image"]
        assert images[image.split(":")[0]] == image
    qdrant = yaml.safe_load((K8S / "qdrant-values.yaml").read_text())
    assert compose["qdrant"]["image"].endswith(":" + qdrant["image"]["tag"])
    assert qdrant["replicaCount"] == 3 and qdrant["config"]["cluster"]["enabled"] is True
    # Every variable is TRITONRAG_<a Settings field>, the prefix pydantic-settings reads.
    prefix = Settings.model_config["env_prefix"]
    env = settings_env(docs)
    names = set(env) | {k for d in kind(docs, "Secret") for k in d.get("stringData", {})}
    for name in names:
        assert name.startswith(prefix) and name[len(prefix) :].lower() in Settings.model_fields
    # Compose's values, the model repository aside (mounted at another path here).
    for key, value in compose["api"]["environment"].items():
        if key == "TRITONRAG_TOKENIZER_DIR":
            assert env[key] == env["TRITONRAG_MODEL_REPOSITORY"] + "/tokenize/1"
        elif key != "TRITONRAG_MODEL_REPOSITORY":
            assert env[key] == value, key


def test_dashboards_and_rules_come_from_their_sources() -> None:
    run = _run(sys.executable, str(K8S / "sync.py"), "--check")
    assert run.returncode == 0, run.stdout + run.stderr
    docs = render("cpu")
    rule = named(docs, "PrometheusRule", "tritonrag")
    assert rule["spec"] == yaml.safe_load((prometheus.RULES / "tritonrag.yml").read_text())
    boards = named(docs, "ConfigMap", "tritonrag-dashboards")
    assert boards["metadata"]["labels"]["grafana_dashboard"] == "1"
    sources = {p.name: p.read_text() for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    assert boards["data"] == sources
