"""The environment `tritonrag up` gives each process it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import launcher as stack
from orchestrator.settings import Settings


def _envs(runtime: Path) -> dict[str, dict[str, str]]:
    return {part.name: part.env for part in stack.parts(Settings(runtime_dir=runtime))}


def test_the_workers_run_with_two_malloc_arenas(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    envs = _envs(tmp_path)
    assert envs["worker"]["MALLOC_ARENA_MAX"] == "2"
    assert envs["llm-worker"]["MALLOC_ARENA_MAX"] == "2"
    assert "MALLOC_ARENA_MAX" not in envs["api"]


def test_the_users_own_malloc_setting_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert _envs(tmp_path)["worker"]["MALLOC_ARENA_MAX"] == "8"
