import asyncio
from typing import Any

import pytest
import redis

from orchestrator.api.batcher import SearchBatcher
from orchestrator.errors import ErrorCode, TritonRagError


class FakeLane:
    """Stands in for the query lane: records batches, answers after a short delay."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = fail

    async def __call__(self, queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.batches.append(queries)
        await asyncio.sleep(0.01)
        if self.fail:
            raise TritonRagError(ErrorCode.NOT_READY, "no worker")
        return [
            {"error": {"type": "not_found", "message": "nope"}}
            if q["collection"] == "missing"
            else {"result": [{"collection": q["collection"], "top_k": q["top_k"]}]}
            for q in queries
        ]


async def test_alone_a_search_goes_at_once() -> None:
    lane = FakeLane()
    batcher = SearchBatcher(lane, max_in_flight=2)
    found = await batcher.search("c", [0.1], 3, {})
    assert found.hits == [{"collection": "c", "top_k": 3}] and found.mode == "dense"
    assert [len(b) for b in lane.batches] == [1]


async def test_the_mode_travels_and_only_a_named_one_is_strict() -> None:
    lane = FakeLane()
    batcher = SearchBatcher(lane, max_in_flight=1, default_mode="hybrid")
    await batcher.search("c", [0.1], 3, {}, text="port 6390")
    await batcher.search("c", [0.1], 3, {}, text="port 6390", mode="sparse")
    sent = [q for b in lane.batches for q in b]
    assert [(q["mode"], q["strict"], q["text"]) for q in sent] == [
        ("hybrid", False, "port 6390"),
        ("sparse", True, "port 6390"),
    ]


async def test_concurrent_searches_share_tasks_and_get_their_own_answers() -> None:
    lane = FakeLane()
    batcher = SearchBatcher(lane, max_batch=8, max_in_flight=2)
    results = await asyncio.gather(*(batcher.search(f"c{i}", [0.0], i + 1, {}) for i in range(20)))
    assert [r.hits[0]["collection"] for r in results] == [f"c{i}" for i in range(20)]
    assert [r.hits[0]["top_k"] for r in results] == list(range(1, 21))
    sizes = [len(b) for b in lane.batches]
    assert sum(sizes) == 20 and max(sizes) <= 8 and len(sizes) < 20


async def test_errors_reach_only_their_caller() -> None:
    batcher = SearchBatcher(FakeLane(), max_in_flight=1)
    results: list[Any] = await asyncio.gather(
        batcher.search("c", [0.0], 1, {}),
        batcher.search("missing", [0.0], 1, {}),
        return_exceptions=True,
    )
    assert isinstance(results[0].hits, list)
    assert isinstance(results[1], TritonRagError) and results[1].code is ErrorCode.NOT_FOUND


async def test_a_failed_task_fails_its_whole_batch_and_the_batcher_recovers() -> None:
    lane = FakeLane(fail=True)
    batcher = SearchBatcher(lane, max_in_flight=1)
    with pytest.raises(TritonRagError):
        await batcher.search("c", [0.0], 1, {})
    lane.fail = False
    assert await batcher.search("c", [0.0], 1, {})


async def test_a_cancelled_caller_does_not_break_the_batch() -> None:
    batcher = SearchBatcher(FakeLane(), max_in_flight=1)
    first = asyncio.create_task(batcher.search("a", [0.0], 1, {}))
    second = asyncio.create_task(batcher.search("b", [0.0], 1, {}))
    await asyncio.sleep(0)
    second.cancel()
    assert (await first).hits[0]["collection"] == "a"
    assert await batcher.search("c", [0.0], 1, {})


async def test_any_error_of_the_call_reaches_every_caller_of_the_batch() -> None:
    """Redis lost mid-call (not a TritonRagError): callers get it (the API answers 503); none
    waits forever."""

    async def lost(queries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise redis.exceptions.ConnectionError("Connection closed by server.")

    batcher = SearchBatcher(lost, max_in_flight=1)
    searches = (batcher.search(f"c{i}", [0.0], 1, {}) for i in range(3))
    results = await asyncio.wait_for(asyncio.gather(*searches, return_exceptions=True), 5)
    assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results)
