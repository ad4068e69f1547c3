"""`tritonrag top`: the dashboards' key panels in the terminal, from the running Prometheus.

There is no Grafana in the package registries, so the embedded stack cannot run one; this
reads the very expressions the Grafana dashboards use (orchestrator/cli/dashboards.py, panels
marked `top`) through Prometheus' HTTP API, over a short window so it moves with the load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
from rich.table import Table

from orchestrator.cli.dashboards import DASHBOARDS, RATE, Panel

WINDOW = "30s"  # six scrapes: recent enough to follow the load, enough to be stable
_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class Row:
    panel: str
    series: str
    value: float | None  # None: no data (nothing happened in the window)
    unit: str


def legend(template: str, labels: dict[str, str]) -> str:
    if not template:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "all"
    return _LABEL.sub(lambda m: labels.get(m.group(1), ""), template).strip()


def snapshot(client: httpx.Client, panels: list[Panel]) -> list[Row]:
    """One instant query per panel query; one row per series that is not zero while others
    are (an idle model's 0/s is noise on a terminal), or one 'no data' row."""
    rows: list[Row] = []
    for panel in panels:
        mine: list[Row] = []
        for query in panel.queries:
            expr = query.expr.replace(RATE, WINDOW)
            response = client.get("/api/v1/query", params={"query": expr})
            response.raise_for_status()
            for series in response.json()["data"]["result"]:
                value = float(series["value"][1])
                if value == value:  # not NaN (a ratio of nothing over nothing)
                    name = legend(query.legend, series["metric"])
                    mine.append(Row(panel.title, name, value, panel.unit))
        busy = [r for r in mine if r.value]
        rows += busy or mine[:1] or [Row(panel.title, "-", None, panel.unit)]
    return rows


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "no data"
    if unit in ("reqps", "ops"):
        return f"{value:,.1f}/s"
    if unit == "s":
        return f"{value * 1000:,.1f} ms" if value < 1 else f"{value:,.2f} s"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "percentunit":
        return f"{value:.0%}"
    if unit == "bool":
        return "yes" if value >= 1 else "NO"
    return f"{value:,.2f}" if value % 1 else f"{value:,.0f}"


def top_panels() -> list[tuple[str, list[Panel]]]:
    return [(d.title, [p for p in d.panels if p.top]) for d in DASHBOARDS]


def render(client: httpx.Client) -> Table:
    """The four dashboards' tables, two side by side."""
    tables = []
    for title, panels in top_panels():
        table = Table(title=title, title_justify="left", expand=True)
        table.add_column("panel", ratio=3)
        table.add_column("series", ratio=3, no_wrap=True, overflow="ellipsis")
        table.add_column("now", justify="right", ratio=2, no_wrap=True)
        last = ""
        for row in snapshot(client, panels):
            table.add_row(
                row.panel if row.panel != last else "", row.series, fmt(row.value, row.unit)
            )
            last = row.panel
        tables.append(table)
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1)
    grid.add_column(ratio=1)
    for left, right in zip(tables[0::2], tables[1::2], strict=False):
        grid.add_row(left, right)
    return grid
