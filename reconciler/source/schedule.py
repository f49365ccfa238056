"""The poll that is the safety net under webhooks: APScheduler 3.x, interval with jitter.

`PollingSchedule` only decides *when* to ask; the coordinator decides whether a fetch runs
(it skips polls while backing off and folds them into a running fetch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 60.0
JOB_ID = "meshcd-source-poll"


class PollingSchedule:
    """Calls `poll()` every `interval` seconds (+/- `jitter`), one call at a time.

    `poll` is typically `FetchCoordinator.poll`; if it returns a Future the job waits for it
    (up to `wait_timeout`), so a slow fetch delays the next tick instead of stacking ticks.
    Pass your own `scheduler` to share one with other jobs; then start/stop only add and
    remove this job.
    """

    def __init__(
        self,
        poll: Callable[[], Future[Any] | None],
        *,
        interval: float = DEFAULT_INTERVAL,
        jitter: float | None = None,
        first_run_now: bool = True,
        wait_timeout: float | None = 600.0,
        scheduler: BackgroundScheduler | None = None,
        job_id: str = JOB_ID,
    ) -> None:
        if interval <= 0:
            raise ValueError("poll interval must be positive")
        self._poll = poll
        self.interval = float(interval)
        # Default jitter: a tenth of the interval, so replicas drift apart.
        self.jitter = interval / 10 if jitter is None else float(jitter)
        if self.jitter < 0:
            raise ValueError("jitter must not be negative")
        self._first_run_now = first_run_now
        self._wait_timeout = wait_timeout
        self._owns_scheduler = scheduler is None
        self._scheduler = scheduler or BackgroundScheduler(daemon=True)
        self._job_id = job_id
        self._started = False

    @property
    def running(self) -> bool:
        return self._started

    @property
    def job(self) -> Any:
        """The APScheduler Job while started (for status pages and tests), else None."""
        return self._scheduler.get_job(self._job_id)

    def start(self) -> None:
        if self._started:
            return
        trigger = IntervalTrigger(seconds=self.interval, jitter=self.jitter or None)
        kwargs: dict[str, Any] = {}
        if self._first_run_now:
            # The first fetch should not wait a whole interval after start-up.
            kwargs["next_run_time"] = datetime.now(UTC)
        self._scheduler.add_job(
            self._tick,
            trigger,
            id=self._job_id,
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(self.interval)),
            **kwargs,
        )
        if self._owns_scheduler and not self._scheduler.running:
            self._scheduler.start()
        self._started = True

    def stop(self, wait: bool = True) -> None:
        if not self._started:
            return
        self._started = False
        if self._scheduler.get_job(self._job_id) is not None:
            self._scheduler.remove_job(self._job_id)
        if self._owns_scheduler and self._scheduler.running:
            self._scheduler.shutdown(wait=wait)

    def next_run_time(self) -> Any:
        job = self.job
        return None if job is None else job.next_run_time

    def _tick(self) -> None:
        try:
            future = self._poll()
            if future is not None:
                future.result(timeout=self._wait_timeout)
        except Exception:
            log.exception("scheduled poll failed")
