"""workers/search_lane.py against a real redis-server: the API's message in, the answer out."""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import urlparse

import pytest
import redis

from orchestrator import lanes
from orchestrator.lanes import SEARCH_REQUESTS, SENT_AT, reply_key
from orchestrator.settings import Settings
from workers import search_lane


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    return r


def _searches(calls: list[list[dict[str, Any]]]) -> search_lane.Search:
    def search(queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        calls.append(queries)
        return [{"result": [{"collection": q["collection"], "top_k": q["top_k"]}]} for q in queries]

    return search


def _answer(client: redis.Redis) -> search_lane.Answer:
    def answer(request_id: str, work: Any) -> None:
        client.rpush(reply_key(request_id), json.dumps(work()))

    return answer


def _query(collection: str) -> dict[str, Any]:
    return {"collection": collection, "vector": [0.1, 0.2], "top_k": 3, "filters": {}}


def test_the_worker_threads_answer_every_batch_on_its_reply_key(
    client: redis.Redis, redis_url: str
) -> None:
    calls: list[list[dict[str, Any]]] = []
    settings = Settings(redis_port=urlparse(redis_url).port)
    stop = search_lane.start(settings, _searches(calls), _answer(client))
    try:
        for n in range(5):
            message = lanes.search_request(f"r{n}", [_query(f"c{n}"), _query("x")], timeout_s=5)
            client.lpush(SEARCH_REQUESTS, message)
        for n in range(5):
            reply = client.blpop([reply_key(f"r{n}")], timeout=5)
            assert reply is not None, f"no answer for r{n}"
            assert json.loads(reply[1]) == [
                {"result": [{"collection": f"c{n}", "top_k": 3}]},
                {"result": [{"collection": "x", "top_k": 3}]},
            ]
    finally:
        stop.set()
    assert len(calls) == 5
    assert client.llen(SEARCH_REQUESTS) == 0
    time.sleep(search_lane.POP_TIMEOUT_S + 0.5)
    assert not [t for t in threading.enumerate() if t.name.startswith("tritonrag-search-")]


def test_the_message_carries_its_deadline_and_send_time() -> None:
    before = time.time()
    message = json.loads(lanes.search_request("r1", [_query("c")], timeout_s=7))
    assert message["id"] == "r1" and message["queries"] == [_query("c")]
    assert before <= message["headers"][SENT_AT] <= time.time()
    assert message["deadline"] == pytest.approx(message["headers"][SENT_AT] + 7)


def test_a_batch_past_its_deadline_is_dropped_unanswered(client: redis.Redis) -> None:
    calls: list[list[dict[str, Any]]] = []
    search_lane.handle(
        lanes.search_request("late", [_query("c")], timeout_s=-1), _searches(calls), _answer(client)
    )
    assert calls == []
    assert client.llen(reply_key("late")) == 0


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b'{"queries": []}', b'{"id": "r", "queries": [], "deadline": "x"}']
)
def test_a_malformed_request_is_dropped_without_raising(client: redis.Redis, raw: bytes) -> None:
    calls: list[list[dict[str, Any]]] = []
    search_lane.handle(raw, _searches(calls), _answer(client))
    assert calls == []


def test_a_failed_reply_does_not_stop_the_thread(client: redis.Redis, redis_url: str) -> None:
    calls: list[list[dict[str, Any]]] = []
    replies = _answer(client)
    failed: list[str] = []

    def answer(request_id: str, work: Any) -> None:
        if not failed:  # Redis drops the first reply, as when it restarts mid-search
            failed.append(request_id)
            raise redis.exceptions.ConnectionError("connection reset")
        replies(request_id, work)

    # One thread: with the default two, the other would hide a dead one.
    settings = Settings(redis_port=urlparse(redis_url).port, search_batches_in_flight=1)
    stop = search_lane.start(settings, _searches(calls), answer)
    try:
        for n in range(2):
            client.lpush(SEARCH_REQUESTS, lanes.search_request(f"r{n}", [_query("c")], timeout_s=9))
        assert client.blpop([reply_key("r1")], timeout=5) is not None, "the thread died"
    finally:
        stop.set()
    assert failed == ["r0"]
