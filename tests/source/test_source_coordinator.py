from __future__ import annotations

import threading
from concurrent.futures import Future, wait
from pathlib import Path

import pytest
from source_helpers import Upstream

from reconciler.source import (
    BackoffPolicy,
    CoordinatorClosed,
    FetchCoordinator,
    FetchOutcome,
    FetchResult,
    GitMirror,
    RefUpdate,
    RemoteUnreachable,
)

WAIT = 30  # generous upper bound for a future to resolve; never a timing assertion


class CountingFetch:
    """A fake fetch: counts calls; the first call can be held until `release()`."""

    def __init__(self, hold_first: bool = False) -> None:
        self.calls = 0
        self.started = threading.Event()
        self._gate = threading.Event()
        if not hold_first:
            self._gate.set()
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self.calls += 1
            n = self.calls
        self.started.set()
        if n == 1:
            assert self._gate.wait(WAIT)
        return n

    def release(self) -> None:
        self._gate.set()


def test_burst_of_100_causes_one_or_two_fetches() -> None:
    # A fetch takes a network round trip; the held first fetch stands in for that, so the
    # burst surely lands while it runs (whether the worker took the first request before
    # the rest arrived decides 1 or 2).
    fetch = CountingFetch(hold_first=True)
    with FetchCoordinator(fetch) as coord:
        futures = [coord.refresh(f"webhook-{i}") for i in range(100)]
        fetch.release()
        _done, not_done = wait(futures, timeout=WAIT)
        assert not not_done
        assert 1 <= fetch.calls <= 2
        outcomes = {id(f.result()): f.result() for f in futures}
        assert all(o.ok for o in outcomes.values())
        served = sorted(r for o in outcomes.values() for r in o.reasons)
        assert served == sorted(f"webhook-{i}" for i in range(100))


def test_requests_during_a_fetch_share_exactly_one_follow_up() -> None:
    fetch = CountingFetch(hold_first=True)
    with FetchCoordinator(fetch) as coord:
        first = coord.refresh("poll")
        assert fetch.started.wait(WAIT)  # fetch #1 is now running and held
        futures: list[Future[FetchOutcome[int]]] = []
        lock = threading.Lock()

        def burst() -> None:
            for _ in range(10):
                f = coord.refresh("webhook")
                with lock:
                    futures.append(f)

        threads = [threading.Thread(target=burst) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert coord.busy
        fetch.release()

        assert first.result(WAIT).result == 1
        assert len(futures) == 100 and len({id(f) for f in futures}) == 1
        follow_up = futures[0].result(WAIT)
        # Served by a fetch that started after they asked, not by the one in flight.
        assert follow_up.result == 2
        assert follow_up.reasons == ("webhook",) * 100
        assert fetch.calls == 2
        assert coord.status.total_fetches == 2


def test_failure_is_in_the_outcome_and_the_status() -> None:
    clock = [1000.0]
    attempts = []

    def failing() -> None:
        attempts.append(clock[0])
        raise RemoteUnreachable("https://git.example.com/x.git: unreachable: refused")

    policy = BackoffPolicy(base=60, cap=600, jitter=0)
    with FetchCoordinator(
        failing, backoff=policy, clock=lambda: clock[0], random=lambda: 0
    ) as coord:
        outcome = coord.refresh("poll").result(WAIT)
        assert not outcome.ok and isinstance(outcome.error, RemoteUnreachable)
        status = coord.status
        assert status.consecutive_failures == 1
        assert status.last_error is not None and status.last_error.startswith("RemoteUnreachable")
        assert status.last_error_temporary is True
        assert status.next_attempt_not_before == 1060

        # Scheduled polls wait out the backoff; a webhook refresh does not.
        clock[0] = 1059
        assert coord.poll() is None
        assert len(attempts) == 1
        assert not coord.refresh("webhook").result(WAIT).ok
        assert coord.status.consecutive_failures == 2
        assert coord.status.next_attempt_not_before == 1059 + 120
        clock[0] = 1059 + 120
        polled = coord.poll()
        assert polled is not None and not polled.result(WAIT).ok
        assert len(attempts) == 3


def test_unexpected_exceptions_are_failures_too() -> None:
    def broken() -> None:
        raise KeyError("bug")

    with FetchCoordinator(broken) as coord:
        outcome = coord.refresh("poll").result(WAIT)
        assert isinstance(outcome.error, KeyError)
        assert coord.status.last_error_temporary is True


def test_outcome_handler_sees_every_fetch_and_its_errors_do_not_stop_the_worker() -> None:
    seen: list[FetchOutcome[int]] = []

    def handler(outcome: FetchOutcome[int]) -> None:
        seen.append(outcome)
        raise RuntimeError("handler bug")

    fetch = CountingFetch()
    with FetchCoordinator(fetch, on_outcome=handler) as coord:
        assert coord.refresh("a").result(WAIT).result == 1
        assert coord.refresh("b").result(WAIT).result == 2
    assert [o.reasons for o in seen] == [("a",), ("b",)]


def test_close_cancels_queued_requests_and_refuses_new_ones() -> None:
    fetch = CountingFetch(hold_first=True)
    coord = FetchCoordinator(fetch)
    running = coord.refresh("first")
    assert fetch.started.wait(WAIT)
    queued = coord.refresh("second")
    closer = threading.Thread(target=coord.close)
    closer.start()
    fetch.release()
    closer.join(WAIT)
    assert running.result(WAIT).result == 1  # the running fetch finishes
    assert queued.cancelled()
    assert fetch.calls == 1
    with pytest.raises(CoordinatorClosed):
        coord.refresh("late")


def test_burst_against_a_real_mirror(tmp_path: Path, upstream: Upstream) -> None:
    head = upstream.commit("first")
    mirror = GitMirror(tmp_path / "m.git", str(upstream.path))
    calls = []
    burst_sent = threading.Event()

    def counted_fetch() -> FetchResult:
        calls.append(1)
        result = mirror.fetch()
        assert burst_sent.wait(WAIT)  # as if the network were slower than the burst
        return result

    with FetchCoordinator(counted_fetch) as coord:
        futures = [coord.refresh("webhook") for _ in range(100)]
        burst_sent.set()
        assert not wait(futures, timeout=WAIT).not_done
    assert 1 <= len(calls) <= 2
    assert all(f.result().ok for f in futures)
    assert mirror.resolve("main") == head


def test_push_during_a_fetch_is_seen_by_the_follow_up(tmp_path: Path, upstream: Upstream) -> None:
    c1 = upstream.commit("first")
    mirror = GitMirror(tmp_path / "m.git", str(upstream.path))
    first_done, gate = threading.Event(), threading.Event()
    calls = []

    def fetch_then_hold() -> FetchResult:
        calls.append(1)
        result = mirror.fetch()
        if len(calls) == 1:
            first_done.set()
            assert gate.wait(WAIT)
        return result

    with FetchCoordinator(fetch_then_hold) as coord:
        first = coord.refresh("poll")
        assert first_done.wait(WAIT)
        c2 = upstream.commit("pushed while the first fetch was finishing")
        futures: list[Future[FetchOutcome[FetchResult]]] = []
        lock = threading.Lock()

        def burst() -> None:
            for _ in range(20):
                f = coord.refresh("webhook")
                with lock:
                    futures.append(f)

        threads = [threading.Thread(target=burst) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        gate.set()
        assert not wait([first, *futures], timeout=WAIT).not_done

    assert len(calls) == 2
    first_result = first.result().result
    assert first_result is not None
    assert first_result.updates == (RefUpdate("refs/heads/main", None, c1),)
    follow = futures[0].result()
    assert len({id(f) for f in futures}) == 1 and len(follow.reasons) == 100
    assert follow.result is not None
    assert follow.result.updates == (RefUpdate("refs/heads/main", c1, c2),)
