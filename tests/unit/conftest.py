"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from orchestrator.jobs import JobStore


@pytest.fixture
def jobs(redis_url: str) -> Iterator[JobStore]:
    """The job store on the session's real redis-server, emptied for each test."""
    store = JobStore(redis.Redis.from_url(redis_url))
    store.redis.flushdb()
    yield store
    store.redis.close()
