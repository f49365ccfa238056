from __future__ import annotations

import threading
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from source_helpers import Upstream

from reconciler.source import FetchCoordinator, FetchOutcome, GitMirror, PollingSchedule
from reconciler.source.schedule import JOB_ID

WAIT = 30


def test_first_poll_runs_at_start_and_job_is_single_and_coalesced() -> None:
    polled = threading.Event()

    def poll() -> None:
        polled.set()

    schedule = PollingSchedule(poll, interval=60, jitter=7)
    schedule.start()
    try:
        assert polled.wait(WAIT)
        job = schedule.job
        assert job.max_instances == 1 and job.coalesce is True
        assert job.trigger.interval == timedelta(seconds=60)
        assert job.trigger.jitter == 7
        assert schedule.running and schedule.next_run_time() is not None
    finally:
        schedule.stop()
    assert not schedule.running
    assert schedule.job is None
    assert not schedule._scheduler.running


def test_default_jitter_is_a_tenth_of_the_interval() -> None:
    assert PollingSchedule(lambda: None, interval=60).jitter == 6


def test_shared_scheduler_is_left_running() -> None:
    scheduler = BackgroundScheduler(daemon=True)
    scheduler.start()
    try:
        schedule = PollingSchedule(lambda: None, scheduler=scheduler, first_run_now=False)
        other = PollingSchedule(lambda: None, scheduler=scheduler, job_id="second-repo")
        schedule.start()
        other.start()
        assert scheduler.get_job(JOB_ID) is not None
        assert scheduler.get_job("second-repo") is not None
        schedule.stop()
        assert scheduler.get_job(JOB_ID) is None and scheduler.running
        assert other.job is not None
        other.stop()
    finally:
        scheduler.shutdown(wait=False)


def test_a_failing_poll_does_not_escape_the_job() -> None:
    failed: Future[object] = Future()
    failed.set_exception(RuntimeError("fetch exploded"))
    schedule = PollingSchedule(lambda: failed)
    schedule._tick()  # logs, does not raise: APScheduler must keep the job

    def raising() -> None:
        raise RuntimeError("poll exploded")

    PollingSchedule(raising)._tick()


@pytest.mark.parametrize("kwargs", [{"interval": 0}, {"interval": -5}, {"jitter": -1}])
def test_bad_schedule_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PollingSchedule(lambda: None, **kwargs)


def test_schedule_drives_a_real_fetch(tmp_path: Path, upstream: Upstream) -> None:
    head = upstream.commit("first")
    mirror = GitMirror(tmp_path / "m.git", str(upstream.path))
    fetched = threading.Event()

    def on_outcome(outcome: FetchOutcome[object]) -> None:
        if outcome.ok:
            fetched.set()

    with FetchCoordinator(mirror.fetch, on_outcome=on_outcome) as coord:
        schedule = PollingSchedule(coord.poll, interval=3600)
        schedule.start()
        try:
            assert fetched.wait(WAIT)
        finally:
            schedule.stop()
        assert coord.status.last_success is not None
    assert mirror.resolve("main") == head
