"""Messages in the wire format the code wrote before orchestrator/lanes.py existed, sent by
hand (literal task names, queues and Redis keys, a plain Celery app with none of ours), are
served by today's workers: messages queued across an upgrade are not stranded."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from celery import Celery

from orchestrator.jobs import JobStore
from orchestrator.settings import Settings
from tests.reliability.conftest import corpus

pytestmark = pytest.mark.integration


def test_old_format_messages_are_served_by_the_current_workers(
    api: httpx.Client, stack: Settings, record: Callable[..., None]
) -> None:
    client = redis.Redis.from_url(stack.broker_url)
    plain = Celery("before-lanes", broker=stack.broker_url, set_as_current=False)
    try:
        # A ping on the query lane, its reply on tritonrag:reply:<id>.
        ping_id = uuid.uuid4().hex
        plain.send_task("tritonrag.ping", args=(ping_id,), queue="query")
        pong = client.blpop([f"tritonrag:reply:{ping_id}"], timeout=30)
        assert pong is not None and json.loads(pong[1])["result"] == "pong"

        # An ingest job stored as the API stores it, its task sent by name on the ingest lane.
        name, body = corpus(1, "wire")[0]
        document: dict[str, Any] = {"document_id": name, "filename": name, "metadata": {}}
        document |= {"content_type": "text/plain", "bytes": len(body), "sha256": ""}
        job_id = JobStore.from_url(stack.broker_url).create_job("default", "wire", document, body)
        plain.send_task("tritonrag.ingest_document", args=(job_id,), queue="ingest")
        deadline = time.monotonic() + 120
        while api.get(f"/v1/jobs/{job_id}").json()["state"] != "indexed":
            assert time.monotonic() < deadline, api.get(f"/v1/jobs/{job_id}").json()
            time.sleep(0.2)

        # A search batch pushed on tritonrag:search-requests in the old JSON shape.
        vector = api.post("/v1/embeddings", json={"input": "rain at the wire station"}).json()
        search_id = uuid.uuid4().hex
        query = {"collection": "default__wire", "vector": vector["data"][0]["embedding"]}
        query |= {"top_k": 3, "filters": {}}
        message = {"id": search_id, "queries": [query], "deadline": time.time() + 30}
        message["headers"] = {"tritonrag_sent_at": time.time()}
        client.lpush("tritonrag:search-requests", json.dumps(message))
        reply = client.blpop([f"tritonrag:reply:{search_id}"], timeout=30)
        assert reply is not None
        hits = json.loads(reply[1])["result"][0]["result"]
        assert hits and {h["document_id"] for h in hits} == {name}, hits
    finally:
        plain.close()
        client.close()
    record(
        case="11. messages in the pre-lanes.py wire format",
        done="ping, ingest task, search batch sent by literal names and keys",
        lost=0,
        errors="-",
        latency="-",
        recovery="all served",
    )
