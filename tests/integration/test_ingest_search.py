"""Upload -> indexed -> found; replace; delete; bad documents; all through the real stack."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_repository.backend.encoder import Variant
from orchestrator.cli import launcher as embedded
from orchestrator.settings import Settings
from tests import samples
from tests.integration.conftest import search, upload, wait_job

pytestmark = pytest.mark.integration
WORKER_BUDGET_MB = 1024  # the store-owning worker, all told (README: "Memory")

DOCS = {
    "volcano.txt": b"Volcanic eruptions eject molten lava, ash and gases from the Earth's mantle.",
    "pasta.md": b"# Cooking\n\nBoil the spaghetti in salted water for nine minutes, then drain.",
    "tides.html": samples.html("Tides", "The moon's gravity pulls the oceans and causes tides."),
    "chess.pdf": samples.pdf("The knight moves in an L shape on the chess board."),
    "bees.docx": samples.docx("Honey bees communicate the location of flowers by dancing."),
}
QUERIES = {
    "volcano.txt": "what comes out of a volcano",
    "pasta.md": "how long should I boil noodles",
    "tides.html": "why does the sea level rise and fall",
    "chess.pdf": "how does a horse piece move in chess",
    "bees.docx": "how do insects tell each other where food is",
}


def test_every_type_is_indexed_and_found(api: httpx.Client) -> None:
    response = upload(api, "kinds", list(DOCS.items()), metadata=json.dumps({"set": "kinds"}))
    assert response.status_code == 202, response.text
    accepted = response.json()["documents"]
    assert [d["document_id"] for d in accepted] == list(DOCS)
    for doc in accepted:
        job = wait_job(api, doc["job_id"])
        assert job["state"] == "indexed", job
        assert job["chunks_total"] == job["chunks_embedded"] == 1
    for name, query in QUERIES.items():
        hits = search(api, "kinds", query, top_k=3)
        assert hits[0]["document_id"] == name, (query, hits)
        assert hits[0]["metadata"] == {"set": "kinds"}
    assert "script text" not in json.dumps(search(api, "kinds", "secret script", top_k=5))
    only = search(api, "kinds", "chess", top_k=5, document_id="bees.docx")
    assert {h["document_id"] for h in only} == {"bees.docx"}
    assert search(api, "kinds", "chess", top_k=5, set="other") == []

    listed = api.get("/v1/collections/kinds/documents", params={"limit": 2}).json()
    assert listed["total"] == 5 and len(listed["data"]) == 2
    assert api.get("/v1/collections/kinds/documents/chess.pdf").json()["state"] == "indexed"


LONG = "\n\n".join(
    f"Section {i}. " + " ".join(f"The archive entry {i}-{j} describes item {j}." for j in range(6))
    for i in range(10)
)


CODES = {  # meaning alike, one exact term each: only the words tell them apart
    f"runbook-{code}.txt": f"Alarm {code} means a disk on the storage node is failing; replace "
    "the disk and run the rebuild before the next backup window."
    for code in ("QX-7731", "ZR-2048", "KL-5190", "WB-3302")
}


def test_sparse_and_hybrid_find_the_exact_term(api: httpx.Client) -> None:
    response = upload(api, "terms", [(n, t.encode()) for n, t in CODES.items()])
    for doc in response.json()["documents"]:
        assert wait_job(api, doc["job_id"])["state"] == "indexed"
    question = "What should I do about alarm KL-5190?"
    url = "/v1/collections/terms/search"
    found = {}
    for mode in ("dense", "sparse", "hybrid", None):
        body = {"query": question, "top_k": 4} | ({"mode": mode} if mode else {})
        answer = api.post(url, json=body).raise_for_status().json()
        assert answer["mode"] == (mode or "hybrid")  # the shipped default
        found[mode] = [h["document_id"] for h in answer["data"]]
        assert all(0 < h["similarity"] <= 1.0001 for h in answer["data"])
    assert found["sparse"][0] == found["hybrid"][0] == found[None][0] == "runbook-KL-5190.txt"
    assert sorted(found["dense"]) == sorted(CODES)  # dense sees four near-identical notes
    state = api.post("/v1/collections/terms/reindex").raise_for_status().json()
    served = Variant.load(Settings().model_repository / "embed" / "1").variant
    model = {"name": Settings().embed_model, "dim": 384, "distance": "cosine", "variants": [served]}
    assert state == {
        "collection": "terms",
        "started": False,
        "reindexing": False,
        "sparse": True,
        "points": 4,
        "model": model,  # recorded by the first write, from the variant Triton answered with
        "rebuild": None,
    }
    info = api.get("/v1/collections/terms").raise_for_status().json()
    assert info == {k: v for k, v in state.items() if k != "started"}
    assert api.post("/v1/collections/nowhere/reindex").status_code == 404
    assert api.get("/v1/collections/nowhere").status_code == 404


def test_replace_re_embeds_only_changed_chunks(api: httpx.Client) -> None:
    first = upload(api, "replace", [("notes.txt", LONG.encode())]).json()["documents"][0]
    job = wait_job(api, first["job_id"])
    assert job["state"] == "indexed" and job["chunks_total"] > 4
    total = job["chunks_total"]

    same = upload(api, "replace", [("notes.txt", LONG.encode())]).json()["documents"][0]
    job = wait_job(api, same["job_id"])
    assert (job["chunks_embedded"], job["chunks_reused"], job["chunks_removed"]) == (0, total, 0)

    edited = LONG.rsplit("\n\n", 3)[0] + "\n\nA final remark about zebras crossing the river."
    changed = upload(api, "replace", [("notes.txt", edited.encode())]).json()["documents"][0]
    job = wait_job(api, changed["job_id"])
    assert job["state"] == "indexed"
    assert 0 < job["chunks_embedded"] < job["chunks_total"] and job["chunks_removed"] > 0
    hits = search(api, "replace", "zebras crossing a river", top_k=100, document_id="notes.txt")
    assert len(hits) == job["chunks_total"]
    assert "zebras" in hits[0]["text"]
    assert not any("entry 9-" in h["text"] for h in hits)  # the removed tail is gone


def test_delete_document_and_collection(api: httpx.Client) -> None:
    docs = [("a.txt", b"Alpine glaciers are retreating."), ("b.txt", b"Desert dunes move.")]
    for doc in upload(api, "deletes", docs).json()["documents"]:
        assert wait_job(api, doc["job_id"])["state"] == "indexed"
    response = api.delete("/v1/collections/deletes/documents/a.txt")
    assert response.status_code == 200
    assert {h["document_id"] for h in search(api, "deletes", "glaciers", top_k=10)} == {"b.txt"}
    assert api.get("/v1/collections/deletes/documents/a.txt").status_code == 404
    assert api.delete("/v1/collections/deletes/documents/a.txt").status_code == 404
    assert api.delete("/v1/collections/deletes").status_code == 200
    gone = api.post("/v1/collections/deletes/search", json={"query": "dunes"})
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found"
    assert api.get("/v1/collections/deletes/documents").json()["total"] == 0
    assert api.delete("/v1/collections/deletes").status_code == 404


def test_corrupt_empty_and_textless_documents_fail_and_the_worker_lives_on(
    api: httpx.Client,
) -> None:
    bad = [
        ("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage, no xref"),
        ("cut.pdf", samples.pdf("truncated")[:180]),
        ("empty.txt", b""),
        ("blank.md", b"   \n\n \t"),
    ]
    response = upload(api, "bad", bad)
    assert response.status_code == 202, response.text
    for doc in response.json()["documents"]:
        job = wait_job(api, doc["job_id"])
        assert job["state"] == "failed" and job["reason"], job
        assert job["deliveries"] == 1  # failed once, not redelivered in a loop
    ok = upload(api, "bad", [("fine.txt", b"The worker still indexes this.")]).json()
    assert wait_job(api, ok["documents"][0]["job_id"])["state"] == "indexed"


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def test_bombs_fail_with_a_reason_and_the_worker_stays_small(
    api: httpx.Client, stack: Settings
) -> None:
    """The defaults hold hostile files: each ends `failed` with why, in seconds, while the
    worker that owns the store never grows (parsing runs in its own capped process)."""
    worker = next(p for p in embedded.parts(stack) if p.name == "worker")
    pid = embedded.running_pid(worker, stack)
    assert pid is not None
    bombs = [
        ("bomb.docx", samples.docx_bomb(1000), "inflates"),  # 1 GB of XML in ~2.4 MB
        ("bomb.pdf", samples.pdf_bomb(1024), "Limit reached"),
        ("deep.html", samples.nested_html(1_000_000), "deeper than 256"),
    ]
    started = time.monotonic()
    response = upload(api, "bombs", [(name, data) for name, data, _ in bombs])
    assert response.status_code == 202, response.text
    for doc, (_, _, reason) in zip(response.json()["documents"], bombs, strict=True):
        job = wait_job(api, doc["job_id"])
        assert job["state"] == "failed" and reason in job["reason"], job
    assert time.monotonic() - started < 60
    assert embedded.running_pid(worker, stack) == pid
    assert _peak_rss_mb(pid) < WORKER_BUDGET_MB


@pytest.mark.parametrize(
    ("files", "status"),
    [
        ([("fake.pdf", b"plain text pretending")], 415),
        ([("tool.exe", b"MZ\x90\x00binary")], 415),
        ([("x.png", b"\x89PNG\r\n\x1a\n\x00\x00")], 415),
        ([("ok.txt", b"fine"), ("evil.docx", b"PK\x03\x04 not a zip")], 415),
        ([], 400),
    ],
)
def test_upload_rejections(api: httpx.Client, files: list[tuple[str, bytes]], status: int) -> None:
    response = (
        upload(api, "rejects", files)
        if files
        else api.post("/v1/collections/rejects/documents", data={"x": "1"})
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == status
    # nothing from a rejected request was queued, not even its valid files
    assert api.get("/v1/collections/rejects/documents").json()["total"] == 0


def test_filenames_are_never_paths(api: httpx.Client) -> None:
    response = upload(api, "paths", [("../../etc/passwd.txt", b"root:x:0:0")])
    assert response.status_code == 202
    assert response.json()["documents"][0]["document_id"] == "passwd.txt"


def test_too_large_is_413_before_the_body_is_read(api: httpx.Client, stack: Settings) -> None:
    limit = int(stack.max_upload_mb * 2**20)
    response = upload(api, "big", [("big.txt", b"a" * (limit + 1))])
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"query": ""}, 422),
        ({"query": "   "}, 422),
        ({"query": "\x1f\u3000"}, 422),
        ({"query": "x", "top_k": 0}, 422),
        ({"query": "x", "top_k": 100000}, 422),
        ({"query": "x", "filters": {"a": {"nested": 1}}}, 422),
        ({"top_k": 3}, 422),
        ({"query": "x", "mode": "bm42"}, 422),
    ],
)
def test_search_rejections(api: httpx.Client, body: dict[str, object], status: int) -> None:
    response = api.post("/v1/collections/kinds/search", json=body)
    assert response.status_code == status, response.text


def test_bad_collection_names_are_422(api: httpx.Client) -> None:
    assert api.get("/v1/collections/..%2Fetc/documents").status_code in (404, 422)
    assert api.post("/v1/collections/a%20b/search", json={"query": "x"}).status_code == 422


def test_job_events_stream_to_the_end(api: httpx.Client) -> None:
    doc = upload(api, "events", [("e.txt", LONG.encode())]).json()["documents"][0]
    states = []
    with api.stream("GET", f"/v1/jobs/{doc['job_id']}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                states.append(json.loads(line[5:])["state"])
    assert states[-1] == "indexed" and len(states) >= 2
    assert api.get("/v1/jobs/nope").status_code == 404


def test_chunked_upload_over_the_limit_is_413_while_streaming(
    api: httpx.Client, stack: Settings
) -> None:
    limit = int(stack.max_upload_mb * 2**20)

    def body() -> Iterator[bytes]:  # no Content-Length: the limit is enforced as bytes arrive
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n\r\n'
        for _ in range(limit // 2**16 + 2):
            yield b"a" * 2**16
        yield b"\r\n--b--\r\n"

    response = api.post(
        "/v1/collections/big/documents",
        content=body(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413
    assert api.get("/v1/collections/big/documents").json()["total"] == 0


def test_an_unknown_route_answers_in_the_one_error_body(api: httpx.Client) -> None:
    response = api.get("/v1/no-such-route")
    assert response.status_code == 404
    assert response.json()["error"] == {"message": "Not Found", "type": "not_found", "code": 404}
    assert api.put("/v1/embeddings").json()["error"]["code"] == 405


def test_reindex_into_another_model_while_searches_and_uploads_go_on(
    api: httpx.Client, stack: Settings
) -> None:
    """`embed_fp32` is another Triton model than the served `embed`: the collection's vectors
    are all made again by it, and the swap happens under a running search loop."""
    for doc in upload(api, "moves", list(DOCS.items())).json()["documents"]:
        assert wait_job(api, doc["job_id"])["state"] == "indexed"
    stop = threading.Event()
    failures: list[str] = []
    pages: list[str] = []

    def searching() -> None:
        with httpx.Client(base_url=str(api.base_url), timeout=30) as own:
            while not stop.is_set():
                body = {"query": QUERIES["chess.pdf"], "top_k": 2}
                response = own.post("/v1/collections/moves/search", json=body)
                hits = response.json().get("data") if response.status_code == 200 else None
                if not hits:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
                else:
                    pages.append(hits[0]["document_id"])

    loop = threading.Thread(target=searching)
    loop.start()
    try:
        refused = api.post("/v1/collections/moves/reindex", json={"model": "no_such_model"})
        assert refused.status_code == 404 and "no_such_model" in refused.text
        started = api.post("/v1/collections/moves/reindex", json={"model": "embed_fp32"})
        assert started.status_code == 202, started.text
        assert started.json()["started"] and started.json()["reindexing"]
        again = api.post("/v1/collections/moves/reindex", json={"model": "embed_fp32"}).json()
        assert not again["started"]  # one at a time
        _wait_rebuild(api, "moves", ("swapped", "done"))
        late = upload(api, "moves", [("late.txt", b"Comets grow bright tails near the sun.")])
        assert wait_job(api, late.json()["documents"][0]["job_id"])["state"] == "indexed"
        # The old collection stays for the grace period (shipped default), then goes.
        info = _wait_rebuild(api, "moves", ("done",), stack.reindex_grace_s + 60)
    finally:
        stop.set()
        loop.join(timeout=60)
    assert not failures, failures[:5]
    assert len(pages) >= 20 and set(pages) == {"chess.pdf"}
    assert info["model"]["name"] == "embed_fp32" and info["points"] == len(DOCS) + 1
    assert info["rebuild"]["documents_copied"] >= len(DOCS)
    hits = search(api, "moves", "what makes a comet's tail", top_k=1)
    assert hits[0]["document_id"] == "late.txt"
    old = stack.vectors_dir / "default__moves"
    assert not old.exists() and (stack.vectors_dir / "default__moves@2").exists()


def _wait_rebuild(
    api: httpx.Client, collection: str, states: tuple[str, ...], timeout_s: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info: dict[str, Any] = api.get(f"/v1/collections/{collection}").raise_for_status().json()
        progress = info.get("rebuild") or {}
        assert progress.get("state") != "failed", progress
        if progress.get("state") in states:
            return info
        time.sleep(0.5)
    raise AssertionError(f"re-index of {collection} not {states} after {timeout_s}s")
