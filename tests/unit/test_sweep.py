"""workers/sweep.py against a real redis-server and the real Celery app's transport."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest
from celery import Celery

from orchestrator.jobs import JobState, JobStore
from orchestrator.lanes import INGEST, INGEST_DOCUMENT, create_celery
from orchestrator.settings import Settings
from workers import sweep


@pytest.fixture
def app(redis_url: str) -> Celery:
    return create_celery(Settings(redis_port=urlparse(redis_url).port))


def _job(jobs: JobStore, name: str) -> str:
    doc = {"document_id": name, "filename": f"{name}.txt", "content_type": "text/plain"}
    return jobs.create_job("default", "c", doc, b"some text")


def _publish(app: Celery, job_id: str) -> None:
    app.send_task(INGEST_DOCUMENT, args=(job_id,), queue=INGEST)


def _later() -> float:
    return time.time() + sweep.STALE_S + 1


def test_a_job_without_a_message_is_published_again_on_the_second_miss(
    app: Celery, jobs: JobStore
) -> None:
    lost, waiting = _job(jobs, "lost"), _job(jobs, "waiting")
    _publish(app, waiting)
    assert sweep.sweep(app, jobs, now=time.time()) == []  # neither is stale yet
    assert sweep.sweep(app, jobs, now=_later()) == []  # missed once: may be in flight
    assert sweep.sweep(app, jobs, now=_later()) == [lost]
    # Its message is now in the lane: it is not published a third time.
    assert sweep.sweep(app, jobs, now=_later()) == []
    assert sweep.sweep(app, jobs, now=_later()) == []
    assert sorted(sweep._present(app, jobs)) == sorted([lost, waiting])


def test_an_unacked_message_counts_as_present(app: Celery, jobs: JobStore) -> None:
    running = _job(jobs, "running")
    _publish(app, running)
    with app.connection_for_write() as connection:
        message = connection.default_channel.basic_get(INGEST)  # now only among the unacked
        assert message is not None
        for _ in range(3):
            assert sweep.sweep(app, jobs, now=_later()) == []
        connection.default_channel.basic_ack(message.delivery_tag)
    # Acked while unfinished: nothing left anywhere, so it is published again.
    sweep.sweep(app, jobs, now=_later())
    assert sweep.sweep(app, jobs, now=_later()) == [running]


def test_finished_jobs_leave_the_open_set(app: Celery, jobs: JobStore) -> None:
    done, failed = _job(jobs, "done"), _job(jobs, "failed")
    jobs.update_job(done, state=JobState.INDEXED)
    jobs.update_job(failed, state=JobState.FAILED, reason="bad")
    for _ in range(3):
        assert sweep.sweep(app, jobs, now=_later()) == []
    assert jobs.redis.zcard("tritonrag:open-jobs") == 0


def test_a_moving_job_is_left_alone(app: Celery, jobs: JobStore) -> None:
    moving = _job(jobs, "moving")
    for _ in range(3):
        jobs.update_job(moving, state=JobState.EMBEDDING)  # updated within STALE_S
        assert sweep.sweep(app, jobs, now=time.time() + sweep.STALE_S / 2) == []


def test_one_worker_sweeps_per_period(jobs: JobStore) -> None:
    assert sweep.due(jobs, "a")
    assert not sweep.due(jobs, "b")
    assert 0 < jobs.redis.ttl("tritonrag:sweep-lock") <= sweep.EVERY_S


def test_a_long_backlog_is_read_in_pages(app: Celery, jobs: JobStore) -> None:
    waiting = [_job(jobs, f"w{i}") for i in range(2 * sweep.PAGE + 100)]
    for job_id in waiting:
        _publish(app, job_id)
    lost = _job(jobs, "lost")
    assert sweep._present(app, jobs) == set(waiting)
    sweep.sweep(app, jobs, now=_later())
    assert sweep.sweep(app, jobs, now=_later()) == [lost]
