from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.source import BackoffPolicy, FetchStatus, backoff_delay

NO_JITTER = BackoffPolicy(base=10, factor=2, cap=100, jitter=0)


def test_exponential_growth_then_cap() -> None:
    delays = [backoff_delay(n, NO_JITTER, lambda: 0.5) for n in range(0, 8)]
    assert delays == [0, 10, 20, 40, 80, 100, 100, 100]


def test_jitter_takes_a_random_share_off() -> None:
    policy = BackoffPolicy(base=10, factor=2, cap=100, jitter=0.5)
    assert backoff_delay(3, policy, lambda: 0.0) == 40
    assert backoff_delay(3, policy, lambda: 0.5) == 30
    assert backoff_delay(3, policy, lambda: 0.999) == pytest.approx(20.02)


def test_huge_failure_counts_stay_at_the_cap() -> None:
    assert backoff_delay(10_000, NO_JITTER, lambda: 0.0) == 100


@given(
    failures=st.integers(min_value=1, max_value=500),
    r=st.floats(min_value=0, max_value=1, exclude_max=True),
    jitter=st.floats(min_value=0, max_value=1),
)
def test_delay_is_bounded(failures: int, r: float, jitter: float) -> None:
    policy = BackoffPolicy(base=5, factor=3, cap=600, jitter=jitter)
    d = backoff_delay(failures, policy, lambda: r)
    raw = min(600, 5 * 3 ** (failures - 1))
    assert raw * (1 - jitter) - 1e-9 <= d <= raw


@pytest.mark.parametrize(
    "kwargs",
    [{"base": 0}, {"base": 10, "cap": 5}, {"factor": 0.5}, {"jitter": 1.5}, {"jitter": -0.1}],
)
def test_bad_policies(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)


def test_status_through_failures_and_recovery() -> None:
    s = FetchStatus()
    assert s.healthy and s.due(0)
    s = s.failed(
        1000, "RemoteUnreachable: refused", temporary=True, policy=NO_JITTER, random=lambda: 0
    )
    assert (s.consecutive_failures, s.last_attempt, s.last_success) == (1, 1000, None)
    assert s.next_attempt_not_before == 1010 and not s.healthy
    assert not s.due(1009) and s.due(1010)
    s = s.failed(
        1010, "RemoteUnreachable: refused", temporary=True, policy=NO_JITTER, random=lambda: 0
    )
    assert s.next_attempt_not_before == 1030 and s.last_error == "RemoteUnreachable: refused"
    s = s.succeeded(1031)
    assert s.healthy and s.due(1031)
    assert (s.last_success, s.last_error, s.next_attempt_not_before) == (1031, None, None)
    assert (s.total_fetches, s.total_failures) == (3, 2)
    assert s.to_dict()["healthy"] is True and s.to_dict()["last_success"] == 1031
