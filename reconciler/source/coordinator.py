"""One fetch at a time, however many callers ask: the scheduler, webhooks, the API.

`refresh(reason)` promises that a fetch *starting after the call* will run, and returns a
Future of that fetch's outcome. Requests that arrive while a fetch is running all share a
single follow-up fetch, so a burst of N webhooks costs at most two fetches: the one in
flight and one more that is sure to see everything pushed before the last request.

Fetches run on one worker thread owned by the coordinator; callers may be any thread.
Failures do not raise out of the Future: they are in the outcome and in `status`, which
also drives the backoff that scheduled polls respect (webhook refreshes do not wait for the
backoff: a push notification is fresh evidence the remote is up).
"""

from __future__ import annotations

import logging
import random as _random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .backoff import BackoffPolicy, FetchStatus
from .errors import SourceError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class FetchOutcome(Generic[T]):
    """The result of one fetch and the requests it served."""

    reasons: tuple[str, ...]
    started_at: float
    finished_at: float
    result: T | None = None
    error: BaseException | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.error is None


class CoordinatorClosed(SourceError, RuntimeError):
    """refresh() after close()."""


class FetchCoordinator(Generic[T]):
    """Serialises and coalesces calls to `fetch`.

    `on_outcome` runs on the worker thread after every fetch, before the Futures resolve
    (the revision pipeline hooks in here); its exceptions are logged and swallowed.
    `clock` and `random` are injectable for tests.
    """

    def __init__(
        self,
        fetch: Callable[[], T],
        *,
        on_outcome: Callable[[FetchOutcome[T]], None] | None = None,
        backoff: BackoffPolicy | None = None,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        name: str = "meshcd-fetch",
    ) -> None:
        self._fetch = fetch
        self._on_outcome = on_outcome
        self._backoff = backoff or BackoffPolicy()
        self._clock = clock
        self._random = random
        self._name = name
        self._cond = threading.Condition()
        self._pending: Future[FetchOutcome[T]] | None = None
        self._pending_reasons: list[str] = []
        self._running = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._status = FetchStatus()

    # -- callers -------------------------------------------------------------------------

    def refresh(self, reason: str) -> Future[FetchOutcome[T]]:
        """Ask for a fetch that starts after this call; returns its Future (shared)."""
        with self._cond:
            if self._closed:
                raise CoordinatorClosed("the fetch coordinator is closed")
            if self._pending is None:
                self._pending = Future()
            self._pending_reasons.append(reason)
            self._ensure_worker()
            self._cond.notify_all()
            return self._pending

    def poll(self, reason: str = "poll") -> Future[FetchOutcome[T]] | None:
        """A scheduled refresh: skipped (None) while backing off after failures."""
        with self._cond:
            if not self._status.due(self._clock()):
                log.debug(
                    "poll skipped: backing off until %s", self._status.next_attempt_not_before
                )
                return None
        return self.refresh(reason)

    @property
    def status(self) -> FetchStatus:
        with self._cond:
            return self._status

    @property
    def busy(self) -> bool:
        """True while a fetch runs or one is queued."""
        with self._cond:
            return self._running or self._pending is not None

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop the worker after the running fetch; queued requests are cancelled."""
        with self._cond:
            self._closed = True
            pending, self._pending = self._pending, None
            self._pending_reasons = []
            self._cond.notify_all()
            thread = self._thread
        if pending is not None:
            pending.cancel()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> FetchCoordinator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- worker --------------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                future, reasons = self._pending, tuple(self._pending_reasons)
                assert future is not None
                self._pending, self._pending_reasons = None, []
                self._running = True
            if not future.set_running_or_notify_cancel():
                with self._cond:
                    self._running = False
                continue
            outcome = self._run_once(reasons)
            if self._on_outcome is not None:
                try:
                    self._on_outcome(outcome)
                except Exception:
                    log.exception("fetch outcome handler failed")
            with self._cond:
                self._running = False
            future.set_result(outcome)

    def _run_once(self, reasons: tuple[str, ...]) -> FetchOutcome[T]:
        started = self._clock()
        try:
            result = self._fetch()
        except Exception as exc:
            finished = self._clock()
            temporary = exc.temporary if isinstance(exc, SourceError) else True
            text = f"{type(exc).__name__}: {exc}"
            with self._cond:
                self._status = self._status.failed(
                    finished, text, temporary=temporary, policy=self._backoff, random=self._random
                )
            log.warning("fetch failed (%s): %s", ", ".join(_summarise(reasons)), text)
            return FetchOutcome(reasons, started, finished, error=exc)
        finished = self._clock()
        with self._cond:
            self._status = self._status.succeeded(finished)
        return FetchOutcome(reasons, started, finished, result=result)


def _summarise(reasons: tuple[str, ...]) -> list[str]:
    # A burst of 100 identical reasons logs as "webhook x100".
    counts: dict[str, int] = {}
    for r in reasons:
        counts[r] = counts.get(r, 0) + 1
    return [r if n == 1 else f"{r} x{n}" for r, n in counts.items()]
