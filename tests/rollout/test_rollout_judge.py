"""The canary judge: outcomes, signals, and the numbers it reports."""

from __future__ import annotations

import pytest
from rollout_playbook import DENYING, ERRORS_5XX, HEALTHY, SLOW, Traffic, window

from reconciler.analysis import BadWindow, Outcome, Sample, judge
from reconciler.language.model import Analysis

A = Analysis()


def sample(t: Traffic, seconds: int = 10) -> Sample:
    return Sample.of(window(1000 + i, t) for i in range(seconds))


def test_sample_sums_windows() -> None:
    s = sample(ERRORS_5XX, 3)
    assert s.total == 300 and s.errors == 15 and s.seconds == 3
    assert Sample.from_dict(s.to_dict()).to_dict() == s.to_dict()


@pytest.mark.parametrize("bad", [
    {}, {"requests": {"2xx": 1}}, {"requests": {"2xx": 1}, "latency_buckets": [0] * 3},
    {"requests": {"2xx": -1}, "latency_buckets": [0] * 14}, {"requests": 5, "latency_buckets": []},
])
def test_bad_windows_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(BadWindow):
        Sample.from_window(bad)


def test_healthy_is_successful_with_every_number() -> None:
    v = judge(sample(HEALTHY), sample(HEALTHY), A)
    assert v.outcome is Outcome.SUCCESSFUL
    d = v.to_dict()
    assert d["canary"]["requests"] == 1000 and d["baseline"]["requests"] == 1000
    assert d["thresholds"]["confidence"] == 0.95
    assert all(not c["failed"] for c in d["checks"])
    assert all(c["alpha"] == pytest.approx(0.05 / 5) for c in d["checks"])


def test_5xx_fails_absolute_and_relative() -> None:
    v = judge(sample(ERRORS_5XX), sample(HEALTHY), A)
    assert v.outcome is Outcome.FAILED
    failed = {c.name for c in v.checks if c.failed}
    assert failed == {"error_rate", "error_rate_vs_baseline"}


def test_connection_failures_count_as_errors() -> None:
    w = window(1, HEALTHY)
    w["connection_failures"] = 10
    s = Sample.of([w] * 5)
    assert s.errors == 50
    assert judge(s, sample(HEALTHY), A).outcome is Outcome.FAILED


def test_denials_fail_relative_to_baseline() -> None:
    v = judge(sample(DENYING), sample(HEALTHY), A)
    assert v.outcome is Outcome.FAILED
    assert {c.name for c in v.checks if c.failed} == {"denial_rate_vs_baseline"}


def test_denials_the_baseline_also_sees_are_not_the_change() -> None:
    v = judge(sample(DENYING), sample(DENYING), A)
    assert v.outcome is Outcome.SUCCESSFUL


def test_denials_without_baseline_use_the_absolute_guard() -> None:
    v = judge(sample(DENYING), None, A)
    assert v.outcome is Outcome.FAILED
    assert {c.name for c in v.checks if c.failed} == {"denial_rate"}


def test_latency_fails_relative() -> None:
    v = judge(sample(SLOW), sample(HEALTHY), A)
    assert v.outcome is Outcome.FAILED
    assert {c.name for c in v.checks if c.failed} == {"p99_vs_baseline"}


def test_latency_over_the_absolute_limit_fails_without_baseline() -> None:
    v = judge(sample(Traffic(extra_latency=0.8)), None, A)
    assert {c.name for c in v.checks if c.failed} == {"p99_latency"}


def test_small_relative_increase_is_not_a_failure_even_when_significant() -> None:
    # 0.6% vs 0.5% over many requests: significant-ish, but under the +50% allowed.
    c = sample(Traffic(rps=10_000, error_share=0.006), 10)
    b = sample(Traffic(rps=10_000, error_share=0.005), 10)
    v = judge(c, b, Analysis(max_error_rate_percent=5))
    assert v.outcome is Outcome.SUCCESSFUL


def test_large_but_insignificant_increase_is_not_a_failure() -> None:
    # 1 error in 60 vs 0 in 60: +inf% but one event proves nothing.
    c = Sample.of([{"second": 1, "requests": {"2xx": 59, "5xx": 1}, "latency_buckets": [60] + [0] * 13}])
    b = Sample.of([{"second": 1, "requests": {"2xx": 60}, "latency_buckets": [60] + [0] * 13}])
    v = judge(c, b, Analysis(min_requests=50, max_error_rate_percent=5))
    assert v.outcome is Outcome.SUCCESSFUL


def test_few_requests_is_inconclusive_unless_clearly_bad() -> None:
    low = Traffic(rps=4)
    assert judge(sample(low), sample(low), A).outcome is Outcome.INCONCLUSIVE
    all_bad = sample(Traffic(rps=4, error_share=1.0))
    v = judge(all_bad, sample(low), A)
    assert v.outcome is Outcome.FAILED  # 40 of 40 failing needs no minimum


def test_no_stats_is_error_and_nack_is_failed() -> None:
    assert judge(Sample(), sample(HEALTHY), A).outcome is Outcome.ERROR
    v = judge(sample(HEALTHY), sample(HEALTHY), A, nacks=1)
    assert v.outcome is Outcome.FAILED and "NACK" in v.reason
    assert judge(sample(HEALTHY), None, A, disconnects=1).outcome is Outcome.FAILED


def test_small_baseline_is_not_compared_with() -> None:
    v = judge(sample(HEALTHY), sample(Traffic(rps=2)), A)
    assert [c.name for c in v.checks] == ["error_rate", "p99_latency", "denial_rate"]
    assert "no baseline" in v.reason


def test_confidence_sets_alpha() -> None:
    v = judge(sample(HEALTHY), sample(HEALTHY), Analysis(confidence=0.99))
    assert all(c.alpha == pytest.approx(0.01 / 5) for c in v.checks)
    v = judge(sample(HEALTHY), sample(HEALTHY), A, alpha=0.005)
    assert all(c.alpha == pytest.approx(0.001) for c in v.checks)


def test_reason_names_the_numbers() -> None:
    v = judge(sample(ERRORS_5XX), sample(HEALTHY), A)
    assert "error_rate: canary 5.000%" in v.reason
    assert "p=" in v.reason


def test_windows_from_the_proxys_own_stats_window_are_read_as_is() -> None:
    from proxy_runtime.stats_window import StatsWindow

    w = StatsWindow(60)
    for i in range(100):
        w.record(1000.2, 200 if i % 10 else 503, 0.004)
    w.record_denial(1000.5)
    w.record(1000.5, 403, 0.0004)
    w.record_connection_failure(1001.1)
    doc = w.as_document(1002.0, seconds=2)
    s = Sample.of(doc["seconds"])
    assert s.requests == (90, 0, 1, 10)
    assert s.denials == 1 and s.connection_failures == 1 and s.seconds == 2
    assert s.errors == 11
    assert s.latency_buckets[2] == 100 and s.latency_buckets[0] == 1
