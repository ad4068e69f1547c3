"""The committed Grafana JSON is what orchestrator/cli/dashboards.py generates, and every panel
is complete; `top` formats what Prometheus answers."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli.dashboards import DASHBOARDS, DASHBOARDS_DIR, DATASOURCE_UID, render
from orchestrator.cli.top import fmt, legend


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d.uid)
def test_committed_json_is_what_the_code_generates(dashboard: object) -> None:
    path = DASHBOARDS_DIR / f"{dashboard.uid}.json"  # type: ignore[attr-defined]
    assert path.read_text() == render(dashboard), f"run `tritonrag dashboards`: {path} is stale"  # type: ignore[arg-type]


def test_every_panel_has_a_unit_a_description_and_the_provisioned_datasource() -> None:
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path
        for panel in board["panels"]:
            where = f"{path.name}: {panel['title']}"
            assert panel["fieldConfig"]["defaults"]["unit"], where
            assert len(panel["description"]) > 10, where
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, where
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target["expr"] and target["datasource"]["uid"] == DATASOURCE_UID, where
    assert {p.stem for p in DASHBOARDS_DIR.glob("*.json")} == {d.uid for d in DASHBOARDS}


def test_top_formats_values_by_unit() -> None:
    assert fmt(12.345, "reqps") == "12.3/s"
    assert fmt(0.0123, "s") == "12.3 ms" and fmt(2.5, "s") == "2.50 s"
    assert fmt(0.5, "percentunit") == "50%"
    assert fmt(0.0, "bool") == "NO" and fmt(1.0, "bool") == "yes"
    assert fmt(None, "s") == "no data"
    assert fmt(3.0, "short") == "3" and fmt(2.5, "none") == "2.50"


def test_top_fills_legends_from_labels() -> None:
    assert legend("{{model}} v{{version}}", {"model": "embed", "version": "1"}) == "embed v1"
    assert legend("", {}) == "all"
    assert legend("", {"lane": "query"}) == "lane=query"
