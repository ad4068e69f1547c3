"""A stack of its own with the shipped defaults (only ports and folder chosen), faults done
to it from outside, and a record of what each case did.

RELIABILITY_SCALE=full (`make reliability`) runs the issue's sizes; the default is the
bounded form `make test` runs. RELIABILITY_RESULTS=DIR writes reliability.json/.md there.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.cli import launcher as embedded
from orchestrator.cli.tritonserver import free_port
from orchestrator.clients.edge import EdgeVectors
from orchestrator.jobs import scoped
from orchestrator.pipeline.chunk import Chunker
from orchestrator.settings import PORT_FIELDS, Settings
from perf.common import save_results
from tests.integration.conftest import client, serve


@dataclass(frozen=True)
class Scale:
    name: str
    documents: int
    kills: int


SCALES = {"ci": Scale("ci", 60, 2), "full": Scale("full", 300, 5)}


@pytest.fixture(scope="session")
def scale() -> Scale:
    return SCALES[os.environ.get("RELIABILITY_SCALE", "ci")]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    values: dict[str, Any] = {p: free_port() for p in PORT_FIELDS}
    yield from serve(Settings(runtime_dir=tmp_path_factory.mktemp("reliability"), **values))


@pytest.fixture(scope="session")
def api(stack: Settings) -> Iterator[httpx.Client]:
    yield from client(stack)


@pytest.fixture(scope="session")
def record(scale: Scale) -> Iterator[Callable[..., None]]:
    rows: list[dict[str, Any]] = []
    yield lambda **row: rows.append({"scale": scale.name, **row})
    for row in rows:
        print(json.dumps(row))
    if out := os.environ.get("RELIABILITY_RESULTS"):
        write_results(Path(out), rows)


def write_results(out: Path, rows: list[dict[str, Any]]) -> None:
    lines = [
        "| case | done | lost | errors seen | latency | recovery |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['case']} | {r['done']} | {r['lost']} | {r['errors']} | {r['latency']} "
            f"| {r['recovery']} |"
            for r in rows
        ),
    ]
    save_results("reliability", rows, "\n".join(lines) + "\n", out)


def part(settings: Settings, name: str) -> embedded.Part:
    return next(p for p in embedded.parts(settings) if p.name == name)


def corpus(n: int, tag: str) -> list[tuple[str, bytes]]:
    """`n` distinct text documents of 2-4 KB (a few chunks each)."""
    docs = []
    for i in range(n):
        sentences = " ".join(
            f"In {tag} record {i}, entry {j} tells how station {i * 7 + j} measured "
            f"{(i * 31 + j * 17) % 997} units of rain on day {j}."
            for j in range(20 + i % 20)
        )
        docs.append((f"{tag}-{i:04d}.txt", sentences.encode()))
    return docs


def upload_all(api: httpx.Client, collection: str, docs: list[tuple[str, bytes]]) -> list[str]:
    """Job ids, uploaded 50 files a request."""
    jobs = []
    for start in range(0, len(docs), 50):
        files = [("files", doc) for doc in docs[start : start + 50]]
        response = api.post(f"/v1/collections/{collection}/documents", files=files)
        assert response.status_code == 202, response.text
        jobs += [d["job_id"] for d in response.json()["documents"]]
    return jobs


def states(api: httpx.Client, collection: str) -> dict[str, dict[str, Any]]:
    """document id -> its record, from the API."""
    out: dict[str, dict[str, Any]] = {}
    while True:
        page = api.get(
            f"/v1/collections/{collection}/documents", params={"offset": len(out), "limit": 1000}
        )
        page.raise_for_status()
        data = page.json()["data"]
        out |= {d["document_id"]: d for d in data}
        if not data or len(out) >= page.json()["total"]:
            return out


def wait_terminal(api: httpx.Client, collection: str, n: int, timeout_s: float) -> float:
    """Seconds until all `n` documents are indexed or failed."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        docs = states(api, collection).values()
        if len(docs) == n and all(d["state"] in ("indexed", "failed") for d in docs):
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"{collection}: not all {n} documents finished in {timeout_s} s")


def not_indexed(api: httpx.Client, collection: str) -> dict[str, str | None]:
    """document id -> failure reason (None while unfinished) of each document not indexed."""
    return {
        d: r.get("reason") for d, r in states(api, collection).items() if r["state"] != "indexed"
    }


def count_indexed(api: httpx.Client, collection: str) -> int:
    return sum(d["state"] == "indexed" for d in states(api, collection).values())


def store_check(
    settings: Settings, collection: str, docs: list[tuple[str, bytes]]
) -> dict[str, int]:
    """Stop the worker, read the shard, compare every document's points with the ids its
    chunks give; bring the worker back. Returns missing/extra/stray counts (all must be 0)."""
    embedded.down_part(part(settings, "worker"), settings)
    try:
        return store_diff(settings, collection, docs)
    finally:
        embedded.up(settings, print)


def store_diff(
    settings: Settings, collection: str, docs: list[tuple[str, bytes]]
) -> dict[str, int]:
    """The shard (its owner stopped) against the ids the documents' chunks give."""
    chunker = Chunker.from_model_dir(
        settings.chunking_model_dir, settings.chunk_tokens, settings.chunk_overlap
    )
    name = scoped("default", collection)
    store = EdgeVectors(settings.vectors_dir)
    try:
        missing = extra = owned = 0
        for filename, body in docs:
            chunks = chunker.split(body.decode())
            expected = {c.point_id(name, filename, settings.embed_model) for c in chunks}
            stored = store.document_ids(name, filename)
            missing += len(expected - stored)
            extra += len(stored - expected)
            owned += len(stored)
        # Points of no document (an id is unique in the store, so this is the only way to
        # be duplicated).
        return {"missing": missing, "extra": extra, "stray": store.count(name) - owned}
    finally:
        store.close()
