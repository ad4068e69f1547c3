"""What the stack promises beyond the happy path: redelivery after a killed worker, the
OpenAI-compatible endpoint, readiness, metrics, tenancy, backpressure and a dead Redis."""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
import tritonclient.http
from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.cli import launcher as embedded
from orchestrator.cli.tritonserver import free_port
from orchestrator.clients.edge import EdgeVectors
from orchestrator.jobs import JobStore, scoped
from orchestrator.pipeline.chunk import Chunker
from orchestrator.settings import Settings
from tests.integration.conftest import search, upload, wait_job
from workers.liveness import ALIVE_TTL_S

pytestmark = pytest.mark.integration

BIG = "\n\n".join(
    f"Chapter {i}. " + " ".join(f"Record {i}.{j} notes the weather on day {j}." for j in range(40))
    for i in range(25)
)


def _worker(settings: Settings) -> embedded.Part:
    return next(p for p in embedded.parts(settings) if p.name == "worker")


def _expected_ids(settings: Settings, collection: str, document_id: str, text: str) -> set[str]:
    chunker = Chunker.from_model_dir(
        settings.chunking_model_dir, settings.chunk_tokens, settings.chunk_overlap
    )
    chunks = chunker.split(text)
    return {c.point_id(collection, document_id, settings.embed_model) for c in chunks}


def test_killed_worker_task_is_redelivered_without_loss_or_duplicates(
    api: httpx.Client, stack: Settings
) -> None:
    doc = upload(api, "crash", [("big.txt", BIG.encode())]).json()["documents"][0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{doc['job_id']}").json()
        if job["chunks_embedded"] > 0:
            break
        time.sleep(0.05)
    assert 0 < job["chunks_embedded"] < job["chunks_total"], job
    pid = embedded.running_pid(_worker(stack), stack)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # mid-document, message unacked

    started: list[str] = []
    embedded.up(stack, started.append)  # `tritonrag up` brings back only what is missing
    assert [line.split(":")[0] for line in started if "started" in line] == ["worker"]

    # With the shipped settings (the broker's visibility timeout is days), the new worker sees
    # the dead one's heartbeat expire and puts its task back: it resumes within a minute.
    up_at = time.monotonic()
    while api.get(f"/v1/jobs/{doc['job_id']}").json()["deliveries"] < 2:
        assert time.monotonic() - up_at < 60, "the dead worker's task did not come back"
        time.sleep(0.2)
    assert time.monotonic() - up_at < ALIVE_TTL_S + 15
    job = wait_job(api, doc["job_id"], timeout_s=120)
    assert job["state"] == "indexed", job
    assert job["deliveries"] == 2
    assert job["chunks_reused"] > 0  # what the dead worker stored was kept, not redone

    # Stop the worker (it owns the shard), read the shard directly, then bring it back.
    embedded.down_part(_worker(stack), stack)
    store = EdgeVectors(stack.vectors_dir)
    try:
        name = scoped("default", "crash")
        stored = store.document_ids(name, "big.txt")
        assert stored == _expected_ids(stack, name, "big.txt", BIG)
        assert store.count(name) == len(stored) == job["chunks_total"]
    finally:
        store.close()
        embedded.up(stack, print)


def _pushes(settings: Settings) -> int:
    stats = JobStore.from_url(settings.broker_url).redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("lpush", "rpush"))


def test_waiting_ingest_work_stays_in_the_queue(api: httpx.Client, stack: Settings) -> None:
    """More documents than ingest slots: the extra ones wait in Redis, not cycling through
    the worker (that once made ~10 requeues per second per idle thread, each a traceback)."""
    log = stack.runtime_dir / "logs" / "worker.log"
    log_before = log.stat().st_size
    pushes_before = _pushes(stack)
    files = [(f"wait{i}.txt", (f"Document {i}. " + BIG[:6000]).encode()) for i in range(12)]
    docs = upload(api, "waiting", files).json()["documents"]
    jobs = [wait_job(api, d["job_id"], timeout_s=300) for d in docs]
    assert [j["state"] for j in jobs] == ["indexed"] * len(files)
    assert all(j["deliveries"] == 1 for j in jobs)
    # One push per upload, plus at most one quiet requeue each for a task that raced the
    # pause; a spinning lane makes hundreds.
    assert _pushes(stack) - pushes_before <= 2 * len(files)
    with log.open("rb") as handle:
        handle.seek(log_before)
        tail = handle.read().decode(errors="replace")
    assert "Traceback" not in tail and "rejected" not in tail, tail[-2000:]


def test_openai_client_embeddings(api: httpx.Client, stack: Settings) -> None:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{stack.port}/v1", api_key="unused")
    result = client.embeddings.create(
        input=["a cat sat", "a kitten sat", "stock prices"], model="embed"
    )
    rows = np.array([d.embedding for d in result.data])
    assert rows.shape == (3, 384) and [d.index for d in result.data] == [0, 1, 2]
    assert np.allclose(np.linalg.norm(rows, axis=1), 1, atol=1e-3)
    assert rows[0] @ rows[1] > rows[0] @ rows[2]
    assert result.usage.prompt_tokens == result.usage.total_tokens > 6
    encoded = client.embeddings.create(input="a cat sat", model="embed", encoding_format="base64")
    raw = base64.b64decode(str(encoded.data[0].embedding))
    assert np.allclose(np.frombuffer(raw, dtype=np.float32), rows[0], atol=1e-5)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(input="", model="embed")
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(input="x", model="no-such-model")
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(input="x", model="embed", dimensions=12)


def test_the_stack_loads_only_served_models_and_a_variant_on_first_use(
    api: httpx.Client, stack: Settings
) -> None:
    triton = tritonclient.http.InferenceServerClient(stack.triton_http_url)
    assert triton.is_model_ready("embed")
    if triton.is_model_ready("embed_fp32"):  # another test of this stack used it: unload it
        triton.unload_model("embed_fp32")
        deadline = time.monotonic() + 60
        while triton.is_model_ready("embed_fp32"):
            assert time.monotonic() < deadline, "embed_fp32 did not unload"
            time.sleep(0.2)
    body = {"input": "loaded when first asked for", "model": "embed_fp32"}
    response = api.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "embed_fp32" and triton.is_model_ready("embed_fp32")


def test_health_ready_and_metrics(api: httpx.Client) -> None:
    assert api.get("/health").json() == {"status": "ok"}
    ready = api.get("/ready").json()
    assert ready["ready"] is True
    assert set(ready["dependencies"]) == {"redis", "triton", "worker", "llm", "llm_worker"}
    assert ready["dependencies"]["llm"]["ready"] and ready["dependencies"]["llm_worker"]["ready"]
    assert all(d["latency_ms"] >= 0 for d in ready["dependencies"].values())
    text = api.get("/metrics").text
    assert 'tritonrag_http_requests_total{method="GET",route="/health",status="200"}' in text
    assert "tritonrag_http_request_seconds_bucket" in text


@pytest.fixture
def client_for(stack: Settings) -> Iterator[object]:
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        client = TestClient(create_app(stack.model_copy(update=overrides)))
        client.__enter__()  # runs the lifespan: real Redis, real Triton
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _wait_indexed(app: TestClient, job_id: str, headers: dict[str, str]) -> None:
    for _ in range(600):
        if app.get(f"/v1/jobs/{job_id}", headers=headers).json()["state"] == "indexed":
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not indexed")


def test_tenants_see_only_their_collections(client_for: object) -> None:
    app = client_for(api_keys={"key-a": "alpha", "key-b": "beta"})  # type: ignore[operator]
    a, b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    files = a_files = [("files", ("t.txt", b"Alpha team roadmap: ship the tokenizer in March."))]
    assert app.post("/v1/collections/shared/documents", files=files).status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert app.post("/v1/collections/shared/documents", files=files, headers=bad).status_code == 401
    response = app.post("/v1/collections/shared/documents", files=files, headers=a)
    assert response.status_code == 202
    job_id = response.json()["documents"][0]["job_id"]
    _wait_indexed(app, job_id, a)
    query = {"query": "roadmap tokenizer", "top_k": 5}
    assert app.post("/v1/collections/shared/search", json=query, headers=a).json()["data"]
    assert app.post("/v1/collections/shared/search", json=query, headers=b).status_code == 404
    assert app.get("/v1/collections/shared/documents", headers=b).json()["total"] == 0
    assert app.get(f"/v1/jobs/{job_id}", headers=b).status_code == 404
    assert app.get("/v1/collections", headers=a).json()["data"] == ["shared"]

    # Tenant B's own "shared": 1,000 probes (A's words among them) never reach A's chunk.
    files = [("files", ("b.txt", b"Beta team notes: the cafeteria moved to the second floor."))]
    uploaded = app.post("/v1/collections/shared/documents", files=files, headers=b).json()
    _wait_indexed(app, uploaded["documents"][0]["job_id"], b)
    words = [w for _, (_, body) in files + a_files for w in body.decode().split()]
    seen: set[str] = set()
    for i in range(1000):
        probe = " ".join(words[(i * k) % len(words)] for k in (1, 3, 7)) + f" {i}"
        body = {"query": probe, "top_k": 10}
        response = app.post("/v1/collections/shared/search", json=body, headers=b)
        while response.status_code == 429:  # the per-key rate limit: wait as told
            time.sleep(int(response.headers["retry-after"]))
            response = app.post("/v1/collections/shared/search", json=body, headers=b)
        seen.update(hit["document_id"] for hit in response.json()["data"])
    assert seen == {"b.txt"}


def test_a_key_over_its_rate_limit_gets_429_and_others_do_not(client_for: object) -> None:
    app = client_for(api_keys={"key-c": "gamma", "key-d": "delta"})  # type: ignore[operator]
    c, d = {"Authorization": "Bearer key-c"}, {"Authorization": "Bearer key-d"}
    limit = int(Settings().rate_limit.split("/")[0])
    start = time.monotonic()
    responses = [app.get("/v1/collections", headers=c) for _ in range(3 * limit)]
    elapsed = time.monotonic() - start
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 429} and statuses.index(429) >= limit // 2, statuses
    # A sliding window: a slow loop spans several windows, each lets about `limit` through.
    assert statuses.count(200) <= limit * (elapsed + 1) * 1.1, (statuses.count(200), elapsed)
    refused = responses[statuses.index(429)]
    assert refused.json()["error"]["type"] == "overloaded"
    wait = int(refused.headers["retry-after"])
    assert 1 <= wait <= 2
    assert app.get("/v1/collections", headers=d).status_code == 200  # per key
    time.sleep(wait + 1)
    assert app.get("/v1/collections", headers=c).status_code == 200


def test_full_ingest_queue_is_429_with_retry_after(client_for: object) -> None:
    app = client_for(ingest_queue_limit=0)  # type: ignore[operator]
    files = [("files", ("q.txt", b"queued"))]
    response = app.post("/v1/collections/q/documents", files=files)
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0


def test_dead_redis_is_503_with_retry_after(client_for: object) -> None:
    app = client_for(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # type: ignore[operator]
    response = app.get("/v1/collections/x/documents")
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["error"]["type"] == "dependency_not_ready"
    ready = app.get("/ready")
    assert ready.status_code == 503 and ready.json()["dependencies"]["redis"]["ready"] is False
    assert app.get("/health").status_code == 200


def test_search_reaches_the_worker_on_the_query_lane(api: httpx.Client) -> None:
    upload(api, "lane", [("l.txt", b"Lighthouses guide ships at night.")])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not search(api, "lane", "lighthouse"):
        time.sleep(0.1)
    assert search(api, "lane", "lighthouse")[0]["document_id"] == "l.txt"
