"""One trace per request: with `otlp_endpoint` set, the API, the Celery task, the Triton call
and the store call of one ingestion, one search and one answer share the trace id the client
sent (W3C `traceparent`), and Triton adds its own spans. Spans are collected by an OTLP/HTTP
receiver in this process (perf/otlp.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from perf.otlp import Collector, receiver
from tests.integration.conftest import client, serve, stack_settings, wait_job

pytestmark = pytest.mark.integration
API, WORKER = "tritonrag-api", "tritonrag-worker"


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with receiver() as collector:
        yield collector


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, collector: Collector) -> Iterator[httpx.Client]:
    runtime = tmp_path_factory.mktemp("traced")
    for running in serve(stack_settings(runtime, otlp_endpoint=collector.url)):
        yield from client(running)


def _traceparent() -> tuple[str, dict[str, str]]:
    trace_id = secrets.token_hex(16)
    return trace_id, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


def test_ingestion_search_and_answer_each_make_one_trace(
    api: httpx.Client, collector: Collector
) -> None:
    traces: dict[str, str] = {}
    trace_id, headers = _traceparent()
    text = b"The lighthouse keeper logs every passing ship in a green ledger."
    response = api.post(
        "/v1/collections/traced/documents", files=[("files", ("ledger.txt", text))], headers=headers
    )
    assert response.status_code == 202, response.text
    assert wait_job(api, response.json()["documents"][0]["job_id"])["state"] == "indexed"
    traces["ingest"] = trace_id
    ingest = {
        (API, "POST /v1/collections/{collection}/documents"),
        (WORKER, "task tritonrag.ingest_document"),
        (WORKER, "ingest parse"),
        (WORKER, "ingest chunk"),
        (WORKER, "ingest embed"),
        (WORKER, "triton embed"),
        (WORKER, "ingest upsert"),
    }
    assert ingest <= collector.trace(trace_id, ingest, timeout_s=60)

    trace_id, headers = _traceparent()
    body = {"query": "Where does the keeper log ships?", "top_k": 3}
    hits = api.post("/v1/collections/traced/search", json=body, headers=headers)
    assert hits.status_code == 200 and hits.json()["data"], hits.text
    traces["search"] = trace_id
    search = {
        (API, "POST /v1/collections/{collection}/search"),
        (API, "triton embed"),
        (WORKER, "task tritonrag.search"),
        (WORKER, "store search"),
    }
    assert search <= collector.trace(trace_id, search, timeout_s=60)

    trace_id, headers = _traceparent()
    question = {"question": "What colour is the keeper's ledger?"}
    asked = api.post("/v1/collections/traced/ask", json=question, headers=headers)
    assert asked.status_code == 200, asked.text
    assert float(asked.headers["x-inference-time"]) > 0  # the query embedding and the LLM
    traces["answer"] = trace_id
    answer = {
        (API, "POST /v1/collections/{collection}/ask"),
        (API, "triton embed"),
        (WORKER, "task tritonrag.search"),
        (WORKER, "task tritonrag.answer"),
        (WORKER, "llm llm"),
    }
    assert answer <= collector.trace(trace_id, answer, timeout_s=60)

    # Triton's own spans (one per request, named by its model). Triton 2.51 starts a fresh
    # trace instead of joining the caller's for ~6 % of requests (`python -m
    # perf.trace_propagation`: 187 of 200 joined), so its spans must reach the collector for
    # both models and join the caller's trace for at least one of the three requests.
    models = {("triton", "embed"), ("triton", "llm")}
    assert models <= collector.trace(None, models, timeout_s=30)
    joined = {
        kind
        for kind, trace_id in traces.items()
        if any(service == "triton" for service, _ in collector.trace(trace_id, models, 10))
    }
    assert joined, f"Triton joined none of the traces {traces}"
