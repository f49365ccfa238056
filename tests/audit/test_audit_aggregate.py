"""Rejected webhook deliveries are counted per interval, not recorded one by one
(reconciler.audit.aggregate; issue #17 finding 8). Pure: the time is passed in."""

from __future__ import annotations

import pytest

from reconciler.audit.aggregate import OVERFLOW, RejectionSummary


def test_counts_per_interval_and_a_few_samples() -> None:
    agg = RejectionSummary(interval_s=60, samples=3)
    kept = [agg.observe("github", "bad_signature", "10.0.0.1", 1000.0 + i * 0.01)
            for i in range(1000)]
    assert kept[:3] == [True] * 3 and not any(kept[3:])
    assert agg.due(1059.9) is None
    summary = agg.due(1060.0)
    assert summary is not None
    assert summary["total"] == 1000 and summary["sampled"] == 3
    assert summary["counts"] == [{"forge": "github", "reason": "bad_signature",
                                  "source": "10.0.0.1", "count": 1000}]
    assert summary["from"] == "1970-01-01T00:16:40Z"
    assert agg.due(2000) is None  # nothing since
    assert agg.observe("gitlab", "bad_token", None, 2000)  # a new interval samples again


def test_groups_are_bounded_and_counts_still_add_up() -> None:
    agg = RejectionSummary(interval_s=10, samples=0, max_groups=5)
    for i in range(1000):
        agg.observe("generic", "bad_signature", f"10.0.{i // 256}.{i % 256}", 0.0)
    summary = agg.due(0, final=True)
    assert summary is not None and len(summary["counts"]) == 6
    assert sum(c["count"] for c in summary["counts"]) == 1000 == summary["total"]
    top = summary["counts"][0]
    assert (top["forge"], top["reason"], top["source"]) == OVERFLOW and top["count"] == 995


def test_final_flushes_an_open_interval() -> None:
    agg = RejectionSummary(interval_s=60)
    agg.observe("x", "unknown_forge", "h", 5.0)
    assert agg.pending()["open"] == {"from": "1970-01-01T00:00:05Z", "count": 1}
    summary = agg.due(6.0, final=True)
    assert summary is not None and summary["total"] == 1
    assert agg.pending() == {"total": 1, "interval_s": 60, "open": None}


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        RejectionSummary(interval_s=0)
