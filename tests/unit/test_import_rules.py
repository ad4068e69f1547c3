"""The houses and their arrows (docs/architecture.md), read from every module's imports.

shared domain (orchestrator/*.py, clients/, pipeline/): nothing from the API, the CLI,
workers, export, a web framework or the CLI libraries; the API and workers: only the shared
domain (never each other); export: the shared domain and the model code; model code: nothing
of ours. The CLI is the top and may import everything. No package imports itself in a circle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ("fastapi", "starlette", "sse_starlette", "uvicorn")
CLI_LIBS = ("typer", "rich")


def house(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "orchestrator":
        return parts[1] if len(parts) > 1 and parts[1] in ("api", "cli") else "shared"
    if parts[0] == "model_repository":
        return "model"
    return parts[0]  # workers, export


# What each house may not import (prefixes of module names).
FORBIDDEN = {
    "shared": ("orchestrator.api", "orchestrator.cli", "workers", "export", *WEB, *CLI_LIBS),
    "api": ("orchestrator.cli", "workers", "export", "model_repository", *CLI_LIBS),
    "workers": ("orchestrator.api", "orchestrator.cli", "export", "model_repository", *WEB),
    "export": ("orchestrator.api", "orchestrator.cli", "workers", *WEB),
    "model": ("orchestrator", "workers", "export"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module in ("orchestrator", "workers", "export"):
                # `from orchestrator import lanes` imports orchestrator.lanes
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def product_files() -> list[Path]:
    roots = ("orchestrator", "workers", "export", "model_repository/backend")
    return sorted(p for r in roots for p in (ROOT / r).rglob("*.py"))


def violations(files: list[Path]) -> list[str]:
    found = []
    for path in files:
        mine = house(module_name(path))
        for target in sorted(imports(path)):
            for banned in FORBIDDEN.get(mine, ()):
                if target == banned or target.startswith(banned + "."):  # whole segments
                    found.append(f"{path.relative_to(ROOT)} ({mine}) imports {target}")
    return found


def test_every_import_points_down_to_an_allowed_house() -> None:
    assert violations(product_files()) == []


def test_a_forbidden_import_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The rule fails when the API's contract is bypassed: shared code importing the workers.
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    bad = tmp_path / "orchestrator" / "clients" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from workers.celery_app import app\nimport fastapi\n")
    assert violations([bad]) == [
        "orchestrator/clients/bad.py (shared) imports fastapi",
        "orchestrator/clients/bad.py (shared) imports workers.celery_app",
    ]


def test_packages_import_each_other_in_no_circle() -> None:
    """Between packages (orchestrator.clients, orchestrator.pipeline, workers, ...): a graph
    with no cycle, so every one can be read and tested from the bottom up."""
    graph: dict[str, set[str]] = {}
    ours = ("orchestrator", "workers", "export", "model_repository")
    for path in product_files():
        source = package(module_name(path))
        targets = {package(t) for t in imports(path) if t.split(".")[0] in ours}
        graph.setdefault(source, set()).update(t for t in targets if t != source)
    assert find_cycle(graph) is None


def package(module: str) -> str:
    """orchestrator.api, .cli, .clients, .pipeline; the shared top-level modules together as
    `orchestrator`; workers, export and model_repository whole."""
    parts = module.split(".")
    if (
        parts[0] == "orchestrator"
        and len(parts) > 1
        and (ROOT / "orchestrator" / parts[1]).is_dir()
    ):
        return ".".join(parts[:2])
    return parts[0]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*trail, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*trail, node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None
