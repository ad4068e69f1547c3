"""`tritonrag ingest`: walk paths, upload in groups, follow the jobs with a progress bar."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

SUFFIXES = {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx"}
GROUP_FILES = 32
GROUP_BYTES = 8 * 2**20
POLL_S = 0.5


def collect(paths: list[Path]) -> Iterator[tuple[Path, str]]:
    """(file, document id): ids are paths relative to the folder given, or the file name."""
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in SUFFIXES:
                    yield file, file.relative_to(path).as_posix()
        elif path.is_file():
            yield path, path.name
        else:
            raise FileNotFoundError(path)


def _groups(files: list[tuple[Path, str]]) -> Iterator[list[tuple[Path, str]]]:
    group: list[tuple[Path, str]] = []
    size = 0
    for item in files:
        n = item[0].stat().st_size
        if group and (len(group) >= GROUP_FILES or size + n > GROUP_BYTES):
            yield group
            group, size = [], 0
        group.append(item)
        size += n
    if group:
        yield group


def _post(client: httpx.Client, collection: str, group: list[tuple[Path, str]]) -> httpx.Response:
    files = [("files", (path.name, path.read_bytes())) for path, _ in group]
    data = {"document_id": [doc_id for _, doc_id in group]}
    while True:
        response = client.post(f"/v1/collections/{collection}/documents", files=files, data=data)
        if response.status_code not in (429, 503):
            return response
        time.sleep(float(response.headers.get("retry-after", "2")))


def ingest_paths(
    base_url: str, api_key: str | None, collection: str, paths: list[Path], console: Console
) -> int:
    """Upload and wait; returns the number of documents that did not index."""
    files = list(collect(paths))
    if not files:
        console.print("no supported files (txt, md, html, pdf, docx)")
        return 0
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    jobs: dict[str, str] = {}
    rejected: list[str] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with (
        httpx.Client(base_url=base_url, headers=headers, timeout=120) as client,
        Progress(*columns, console=console) as progress,
    ):
        uploading = progress.add_task("uploading", total=len(files))
        for group in _groups(files):
            response = _post(client, collection, group)
            if response.status_code != 202:
                rejected += [
                    f"{doc_id}: {response.status_code} {response.text}" for _, doc_id in group
                ]
            else:
                jobs |= {d["job_id"]: d["document_id"] for d in response.json()["documents"]}
            progress.advance(uploading, len(group))
        indexing = progress.add_task("indexing", total=len(jobs))
        failures = _follow(client, jobs, progress, indexing)
    for line in rejected + failures:
        console.print(f"[red]{line}[/red]")
    done = len(jobs) - len(failures)
    console.print(f"{done} indexed, {len(failures)} failed, {len(rejected)} rejected")
    return len(failures) + len(rejected)


def _follow(
    client: httpx.Client, jobs: dict[str, str], progress: Progress, task: TaskID
) -> list[str]:
    """Poll jobs oldest first, stopping a round at the first unfinished one: a 1,000-file
    ingest costs a few requests per round, not a thousand."""
    pending, failures = list(jobs), []
    while pending:
        for job_id in list(pending):
            response = client.get(f"/v1/jobs/{job_id}")
            job = response.json() if response.status_code == 200 else {"state": "failed"}
            if job["state"] not in ("indexed", "failed"):
                break
            pending.remove(job_id)
            progress.advance(task)
            if job["state"] == "failed":
                failures.append(f"{jobs[job_id]}: {job.get('reason', response.text)}")
        if pending:
            time.sleep(POLL_S)
    return failures
