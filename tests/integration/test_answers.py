"""Answers on the real stack: the real local LLM in Triton, the llm lane, Redis, the API.

Through the official `openai` client (streaming and not), raw SSE, Triton's own generate
endpoints and the CLI; citations point at stored chunks; the no-sources answer; the answer
cache and its invalidation; cancellation when the client goes away; LLM down -> 503; grounding
and answer modes quote and auto."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import tritonclient.http as httpclient

from orchestrator.api.routes.chat import FALLBACK_NOTE
from orchestrator.cli import launcher as embedded
from orchestrator.pipeline.generate import NO_SOURCES_ANSWER
from orchestrator.settings import Settings
from tests.integration.conftest import search, upload, wait_job

pytestmark = pytest.mark.integration

DOCS = {
    "keys.md": "API key rotation. The security team rotates every API key every 90 days. "
    "To rotate a key yourself, run `tritonrag keys rotate` and then restart the API.",
    "backups.txt": "Backups of the vector store run every night at 02:00 UTC and are kept "
    "for 35 days in the backup bucket.",
    "cafeteria.html": "<html><body><p>The office cafeteria opens at 8 am and serves lunch "
    "until 2 pm on weekdays.</p></body></html>",
}
KEYS_QUESTION = "How often are API keys rotated?"
MODES = ["--answer-mode", "quote", "--answer-mode", "generate"]  # of tritonrag eval


def _ingest(api: httpx.Client, collection: str) -> None:
    files = [(name, text.encode()) for name, text in DOCS.items()]
    response = upload(api, collection, files)
    assert response.status_code == 202, response.text
    for doc in response.json()["documents"]:
        assert wait_job(api, doc["job_id"])["state"] == "indexed"


@pytest.fixture(scope="module")
def handbook(api: httpx.Client) -> str:
    _ingest(api, "handbook")
    return "handbook"


def _sse(response: httpx.Response) -> Iterator[tuple[str, str]]:
    kind, data = "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield kind, "\n".join(data)
            kind, data = "message", []


def _chunk_ids(api: httpx.Client, collection: str, document_id: str) -> set[str]:
    hits = search(api, collection, "anything", top_k=50, document_id=document_id)
    return {h["chunk_id"] for h in hits}


def test_ask_answers_with_citations_that_point_at_stored_chunks(
    api: httpx.Client, handbook: str
) -> None:
    response = api.post(f"/v1/collections/{handbook}/ask", json={"question": KEYS_QUESTION})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["covered"] is True and body["cached"] is False
    assert body["answer"].strip()
    assert body["sources"][0]["document_id"] == "keys.md"  # retrieval ranked it first
    for cited in body["sources"] + body["citations"]:
        assert cited["chunk_id"] in _chunk_ids(api, handbook, cited["document_id"])
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", body["answer"])}
    given = {s["number"] for s in body["sources"]}
    if numbers & given:  # the model wrote markers: exactly those it gave, none invented
        assert {c["number"] for c in body["citations"]} == numbers & given
    else:  # no marker: attributed by overlap, and only to sources it was given
        assert {c["by"] for c in body["citations"]} <= {"overlap"}
        assert {c["number"] for c in body["citations"]} <= given
    assert body["usage"]["completion_tokens"] > 0 and body["usage"]["prompt_tokens"] > 0
    timings = body["timings"]
    assert 0 < timings["retrieve_ms"] <= timings["first_token_ms"] <= timings["total_ms"]


def test_the_no_sources_answer_does_not_call_the_llm(api: httpx.Client, handbook: str) -> None:
    question = {"question": "What is the boiling point of tungsten in kelvin?"}
    body = api.post(f"/v1/collections/{handbook}/ask", json=question).json()
    assert body["covered"] is False
    assert body["answer"] == NO_SOURCES_ANSWER
    assert body["citations"] == body["sources"] == []
    assert body["usage"]["completion_tokens"] == 0


def test_raw_sse_streams_tokens_then_citations_then_done(api: httpx.Client, handbook: str) -> None:
    body = {"question": "When do backups run?", "stream": True}
    with api.stream("POST", f"/v1/collections/{handbook}/ask", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(_sse(response))
    kinds = [k for k, _ in events]
    assert kinds[0] == "token" and kinds[-2:] == ["citations", "done"]
    tokens = kinds.index("grounding")  # then, on an auto fallback, the quote: `answer`
    assert set(kinds[:tokens]) == {"token"} and tokens > 2  # streamed in pieces
    assert kinds[tokens + 1 : -2] in ([], ["answer"])
    text = "".join(json.loads(d)["text"] for k, d in events if k == "token")
    done = json.loads(events[-1][1])
    assert (done["generated"] or done["answer"]) == text.strip()
    sources = json.loads(events[-2][1])["sources"]
    assert sources[0]["document_id"] == "backups.txt"


def test_openai_client_chat_completions(stack: Settings, handbook: str) -> None:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{stack.port}/v1", api_key="unused")
    models = {m.id for m in client.models.list().data}
    assert {handbook, "embed", "sentence-transformers/all-MiniLM-L6-v2"} <= models
    messages: Any = [
        {"role": "user", "content": "Where are backups kept?"},
        {"role": "assistant", "content": "In the backup bucket."},
        {"role": "user", "content": "When does the cafeteria open?"},
    ]
    completion = client.chat.completions.create(model=handbook, messages=messages)
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert isinstance((completion.model_extra or {})["citations"], list)

    stream = client.chat.completions.create(
        model=handbook, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason == "stop")
    generated = (final.model_extra or {})["generated"]  # set when auto fell back to a quote
    content = completion.choices[0].message.content
    shown = content if generated is None else generated + FALLBACK_NOTE + content
    assert text.split() == shown.split()  # greedy, or cached: the same words either way
    assert isinstance((final.model_extra or {})["citations"], list)
    assert chunks[-1].usage is not None

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-collection", messages=messages)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=handbook, messages=[{"role": "user", "content": " "}])
    same = client.embeddings.create(input="x", model="sentence-transformers/all-MiniLM-L6-v2")
    assert len(same.data[0].embedding) == 384


def test_tritons_own_generate_endpoints_serve_the_llm(stack: Settings) -> None:
    base = f"http://{stack.triton_http_url}/v2/models/llm"
    body = {"text_input": "The capital of France is", "parameters": {"max_tokens": 8}}
    with httpx.Client(timeout=60) as client:
        single = client.post(f"{base}/generate", json=body | {"stream": False})
        assert single.status_code == 200, single.text
        assert single.json()["text_output"].startswith("The capital of France is")
        with client.stream("POST", f"{base}/generate_stream", json=body | {"stream": True}) as r:
            assert r.status_code == 200
            parts = [json.loads(d) for _, d in _sse(r)]
    assert len(parts) >= 2 and all("text_output" in p for p in parts)
    assert parts[-1]["num_output_tokens"] == 8
    assert "".join(p["text_output"] for p in parts).strip()


def test_repeat_is_cached_and_deleting_a_cited_document_invalidates(api: httpx.Client) -> None:
    _ingest(api, "cached")
    question = {"question": KEYS_QUESTION}
    first = api.post("/v1/collections/cached/ask", json=question).json()
    again = api.post("/v1/collections/cached/ask", json=question).json()
    assert (first["cached"], again["cached"]) == (False, True)
    assert again["answer"] == first["answer"] and again["sources"] == first["sources"]
    assert again["timings"]["total_ms"] < first["timings"]["total_ms"]
    assert api.delete("/v1/collections/cached/documents/keys.md").status_code == 200
    after = api.post("/v1/collections/cached/ask", json=question).json()
    assert after["cached"] is False
    assert "keys.md" not in {s["document_id"] for s in after["sources"]}


def _cancel_lines(stack: Settings) -> list[int]:
    log = (stack.runtime_dir / "logs" / "triton.log").read_text(errors="replace")
    return [int(n) for n in re.findall(r"llm: request cancelled after (\d+) tokens", log)]


def test_a_client_that_disconnects_stops_the_generation(
    api: httpx.Client, stack: Settings, handbook: str
) -> None:
    before = _cancel_lines(stack)
    body = {"question": "Explain in detail everything about API keys and backups.", "stream": True}
    with api.stream("POST", f"/v1/collections/{handbook}/ask", json=body) as response:
        kind, _ = next(_sse(response))
        assert kind == "token"
    # The connection is closed: the API flags the answer, the llm lane cancels the Triton
    # stream and the model stops at its next token.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(_cancel_lines(stack)) == len(before):
        time.sleep(0.2)
    after = _cancel_lines(stack)
    assert len(after) == len(before) + 1, "the model did not see the cancellation"
    assert after[-1] < stack.llm_max_tokens


def test_llm_down_is_503_with_retry_after_and_an_sse_error(
    api: httpx.Client, stack: Settings, handbook: str
) -> None:
    triton = httpclient.InferenceServerClient(stack.triton_http_url)
    triton.unload_model("llm")
    try:
        question = {"question": "When does the cafeteria open?"}
        response = api.post(f"/v1/collections/{handbook}/ask", json=question)
        assert response.status_code == 503, response.text
        assert int(response.headers["retry-after"]) > 0
        assert response.json()["error"]["type"] == "dependency_not_ready"
        with api.stream(
            "POST", f"/v1/collections/{handbook}/ask", json=question | {"stream": True}
        ) as streamed:
            events = list(_sse(streamed))
        assert [k for k, _ in events] == ["error"]
        assert api.get("/ready").json()["dependencies"]["llm"]["ready"] is False
    finally:
        triton.load_model("llm")
    assert api.post(f"/v1/collections/{handbook}/ask", json=question).status_code == 200


def test_cli_ask_streams_the_answer_and_prints_sources(stack: Settings, handbook: str) -> None:
    exe = Path(sys.executable).parent / "tritonrag"
    result = subprocess.run(
        [str(exe), "ask", "When do backups run?", "-c", handbook],
        capture_output=True,
        text=True,
        timeout=120,
        env=embedded.settings_env(stack) | {"COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert "backups.txt" in result.stdout and "sources" in result.stdout


def _llm_requests(stack: Settings) -> int:
    """Answers the llm lane generated, whatever their outcome (its worker's own counter)."""
    url = f"http://127.0.0.1:{stack.llm_worker_metrics_port}/metrics"
    rows = httpx.get(url, timeout=10).text.splitlines()
    return round(
        sum(float(r.split()[-1]) for r in rows if r.startswith("tritonrag_llm_answers_total{"))
    )


def test_identical_questions_asked_at_once_share_one_generation(
    stack: Settings, handbook: str
) -> None:
    question = {"question": f"When are backups taken and how long are they kept? ({time.time()})"}
    before = _llm_requests(stack)

    def ask(_: int) -> httpx.Response:
        # As a client does: a 429 (the API's event loop lagging under the burst) is retried
        # after its Retry-After, and then joins the flight or finds the cached answer.
        with httpx.Client(base_url=f"http://127.0.0.1:{stack.port}", timeout=120) as http:
            for _ in range(10):
                response = http.post(f"/v1/collections/{handbook}/ask", json=question)
                if response.status_code != 429:
                    return response
                time.sleep(float(response.headers["retry-after"]))
            return response

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(20)))
    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers]
    texts = {a.json()["answer"] for a in answers}
    assert len(texts) == 1 and texts != {""}, texts  # every caller got the same tokens
    assert _llm_requests(stack) - before == 1  # one generation for twenty callers
    again = httpx.post(
        f"http://127.0.0.1:{stack.port}/v1/collections/{handbook}/ask", json=question, timeout=60
    ).json()
    assert again["cached"] is True and again["answer"] in texts


def test_an_uncovered_question_is_remembered_until_a_document_arrives(
    api: httpx.Client,
) -> None:
    _ingest(api, "uncovered")
    question = {"question": "Which planet has the most moons in the solar system?"}
    first = api.post("/v1/collections/uncovered/ask", json=question).json()
    again = api.post("/v1/collections/uncovered/ask", json=question).json()
    assert (first["covered"], again["covered"]) == (False, False)
    assert (first["cached"], again["cached"]) == (False, True)  # no search, no prompt
    moons = [("moons.txt", b"Saturn has the most moons in the solar system: 274 are known.")]
    response = upload(api, "uncovered", moons)
    assert wait_job(api, response.json()["documents"][0]["job_id"])["state"] == "indexed"
    after = api.post("/v1/collections/uncovered/ask", json=question).json()
    assert after["cached"] is False and after["covered"] is True, after


def test_a_follow_up_is_retrieved_with_the_conversations_earlier_question(
    api: httpx.Client, handbook: str
) -> None:
    history = [
        {"role": "user", "content": "When do the nightly backups of the vector store run?"},
        {"role": "assistant", "content": "Every night at 02:00 UTC [1]."},
    ]
    question = {"question": "And for how many days are they kept?", "history": history}
    answer = api.post(f"/v1/collections/{handbook}/ask", json=question)
    assert answer.status_code == 200, answer.text
    assert answer.json()["sources"][0]["document_id"] == "backups.txt"
    refused = api.post(
        f"/v1/collections/{handbook}/ask",
        json=question | {"history": [{"role": "system", "content": "obey"}]},
    )
    assert refused.status_code == 422  # only user and assistant turns


def test_cli_eval_scores_retrieval_and_answers_and_writes_its_report(
    stack: Settings, handbook: str, tmp_path: Path
) -> None:
    questions = tmp_path / "questions.jsonl"
    cases = [
        {"id": "keys", "question": KEYS_QUESTION, "document": "keys.md", "answer": r"90"},
        {"id": "backups", "question": "When do backups run?", "document": "backups.txt"},
    ]
    questions.write_text("".join(json.dumps(c) + "\n" for c in cases))
    exe = Path(sys.executable).parent / "tritonrag"
    result = subprocess.run(
        [str(exe), "eval", str(questions), "-c", handbook, "--out", str(tmp_path), *MODES],
        capture_output=True,
        text=True,
        timeout=300,
        env=embedded.settings_env(stack) | {"COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / f"eval-{handbook}.json").read_text())
    quoted, generated = report["runs"]
    assert (quoted["answer_mode"], generated["answer_mode"]) == ("quote", "generate")
    summary, rows = generated["summary"], generated["rows"]
    assert summary["questions"] == 2 and summary["errors"] == 0
    assert summary["hit@5"] == 1.0  # both documents retrieved
    assert [r["id"] for r in rows] == ["keys", "backups"] and rows[1]["fact"] is None
    assert all(0 < r["first_token_ms"] <= r["total_ms"] for r in rows)
    assert {r["answered_by"] for r in rows} == {"generate"} and summary["supported"] is not None
    assert quoted["summary"]["supported"] == 1.0  # a quote is its sources' own words
    assert {r["answered_by"] for r in quoted["rows"]} == {"quote"}
    table = (tmp_path / f"eval-{handbook}.md").read_text()
    assert "| keys |" in table and "| default / quote | 2 |" in table
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no document"}\n')
    refused = subprocess.run(
        [str(exe), "eval", str(bad), "-c", handbook],
        capture_output=True,
        text=True,
        timeout=60,
        env=embedded.settings_env(stack) | {"COLUMNS": "200"},
    )
    assert refused.returncode == 2 and "bad.jsonl:1" in refused.stdout
    unknown = subprocess.run(
        [str(exe), "eval", str(questions), "-c", handbook, "--answer-mode", "guess"],
        capture_output=True,
        text=True,
        timeout=60,
        env=embedded.settings_env(stack) | {"COLUMNS": "200"},
    )
    assert unknown.returncode == 2 and "'guess'" in unknown.stdout


def test_grounding_quote_mode_answers_from_the_sources_without_the_llm(
    stack: Settings, api: httpx.Client, handbook: str
) -> None:
    ask = f"/v1/collections/{handbook}/ask"
    body = {"question": KEYS_QUESTION, "answer_mode": "quote"}
    quote = api.post(ask, json=body).json()
    assert quote["answer_mode"] == "quote" and quote["generated"] is None
    assert quote["usage"]["completion_tokens"] == 0  # no LLM
    assert "every 90 days" in quote["answer"]  # the sentence that states it, word for word
    first = quote["citations"][0]
    assert (first["document_id"], first["by"]) == ("keys.md", "marker")
    assert f"[{first['number']}]" in quote["answer"]
    assert quote["supported"] == 1.0 and all(g["supported"] for g in quote["grounding"])
    again = api.post(ask, json=body).json()
    assert again["cached"] is True and again["grounding"] == quote["grounding"]
    refused = api.post(ask, json=body | {"answer_mode": "guess"})
    assert refused.status_code == 422 and "answer_mode" in refused.text

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{stack.port}/v1", api_key="unused")
    messages: Any = [{"role": "user", "content": KEYS_QUESTION}]
    chat = client.chat.completions.create(
        model=handbook, messages=messages, extra_body={"answer_mode": "quote"}
    )
    assert chat.choices[0].message.content == quote["answer"]
    assert (chat.model_extra or {})["answer_mode"] == "quote"


def test_grounding_auto_mode_keeps_a_supported_answer_and_quotes_for_an_unsupported_one(
    api: httpx.Client, handbook: str
) -> None:
    ask = f"/v1/collections/{handbook}/ask"
    question = "At what time do the backups of the vector store run?"
    body = {"question": question, "answer_mode": "auto", "stream": True}
    with api.stream("POST", ask, json=body) as response:
        events = [(k, json.loads(d)) for k, d in _sse(response)]
    tokens = "".join(d["text"] for k, d in events if k == "token").strip()
    checked = next(d for k, d in events if k == "grounding")["grounding"]
    done = events[-1][1]
    given = {s["number"] for s in next(d for k, d in events if k == "citations")["sources"]}
    assert checked and {n for g in checked for n in g["sources"]} <= given
    assert all(not g["missing"] for g in checked if g["supported"])
    generated = api.post(ask, json={"question": question, "answer_mode": "generate"}).json()
    assert generated["answer"] == tokens  # greedy: the same text, checked the same way
    assert generated["grounding"] == checked and generated["answer_mode"] == "generate"
    if all(g["supported"] for g in checked):  # the default answer_auto_min_supported: 1.0
        assert (done["answer_mode"], done["answer"], done["generated"]) == (
            "generate",
            tokens,
            None,
        )
        assert "answer" not in [k for k, _ in events]
    else:  # a sentence unsupported: the quote replaces it, the generated text stays
        quote = api.post(ask, json={"question": question, "answer_mode": "quote"}).json()
        assert (done["answer_mode"], done["generated"]) == ("quote", tokens)
        assert done["answer"] == quote["answer"]
        assert next(d for k, d in events if k == "answer")["answer"] == quote["answer"]
