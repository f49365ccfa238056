"""SeriesRecorder: per-second canary vs baseline points, summed over proxies and
summarised as the judge does, bounded in memory."""

from __future__ import annotations

import json

import pytest
from rollout_playbook import DENYING, ERRORS_5XX, HEALTHY, SLOW, Playbook, Traffic, window

from reconciler.analysis.judge import judge, summary
from reconciler.analysis.sample import LATENCY_BUCKETS, BadWindow, Sample
from reconciler.analysis.stats import histogram_quantile
from reconciler.language.model import Analysis
from reconciler.rollout.series import SeriesRecorder

START = 1_000_000.4  # not a whole second: t counts from int(started_at)


def test_aggregates_per_second_and_role_over_proxies() -> None:
    rec = SeriesRecorder()
    s0 = int(START)
    for sec in (s0 + 2, s0 + 1):  # out of order: the list is sorted by t
        rec.add("w1", "canary", window(sec, ERRORS_5XX), started_at=START, stage=1)
        rec.add("w2", "baseline", window(sec, HEALTHY), started_at=START, stage=1)
        rec.add("w3", "baseline", window(sec, DENYING), started_at=START, stage=1)
    pts = rec.to_list()
    assert [p["t"] for p in pts] == [1, 2]
    p = pts[0]
    assert p["stage"] == 1
    assert p["canary"] == {"requests": 100, "errors": 5, "denials": 0,
                           "errorRatePercent": 5.0, "denialRatePercent": 0.0,
                           "p99Ms": p["canary"]["p99Ms"]}
    # baseline: two proxies summed, 30 denials of 200 requests
    assert p["baseline"]["requests"] == 200
    assert p["baseline"]["denials"] == 30
    assert p["baseline"]["denialRatePercent"] == 15.0
    assert p["baseline"]["errors"] == 0
    json.dumps(pts)  # the API serves it as JSON


def test_p99_is_the_judges_interpolated_quantile() -> None:
    rec = SeriesRecorder()
    w1, w2 = window(int(START) + 3, HEALTHY), window(int(START) + 3, SLOW)
    rec.add("a", "canary", w1, started_at=START, stage=2)
    rec.add("b", "canary", w2, started_at=START, stage=2)
    both = Sample.of([w1, w2])
    want = histogram_quantile(0.99, LATENCY_BUCKETS, both.latency_buckets)
    assert want is not None
    [pt] = rec.to_list()
    assert pt["canary"]["p99Ms"] == round(want * 1000.0, 3) == summary(both)["p99Ms"]
    assert pt["baseline"] is None
    assert pt["t"] == 3 and pt["stage"] == 2


def test_empty_seconds_have_no_p99_and_zero_rates() -> None:
    rec = SeriesRecorder()
    rec.add("a", "canary", window(int(START), Traffic(rps=0)), started_at=START, stage=1)
    [pt] = rec.to_list()
    assert pt["t"] == 0
    assert pt["canary"] == {"requests": 0, "errors": 0, "denials": 0, "errorRatePercent": 0.0,
                            "denialRatePercent": 0.0, "p99Ms": None}


def test_bounded_drops_oldest_and_ignores_late_windows_for_dropped_seconds() -> None:
    rec = SeriesRecorder(max_points=5)
    s0 = int(START)
    for t in range(12):
        rec.add("a", "canary", window(s0 + t, HEALTHY), started_at=START, stage=1 + t // 4)
    pts = rec.to_list()
    assert [p["t"] for p in pts] == [7, 8, 9, 10, 11]
    assert [p["stage"] for p in pts] == [2, 3, 3, 3, 3]
    rec.add("a", "canary", window(s0 + 2, HEALTHY), started_at=START, stage=1)  # too old
    rec.add("a", "canary", window(s0 - 5, HEALTHY), started_at=START, stage=1)  # before start
    assert [p["t"] for p in rec.to_list()] == [7, 8, 9, 10, 11]
    assert len(rec) == 5


def test_stage_of_a_second_is_the_latest_seen() -> None:
    rec = SeriesRecorder()
    sec = int(START) + 4
    rec.add("a", "canary", window(sec, HEALTHY), started_at=START, stage=1)
    rec.add("b", "canary", window(sec, HEALTHY), started_at=START, stage=2)
    rec.add("c", "baseline", window(sec, HEALTHY), started_at=START, stage=1)
    [pt] = rec.to_list()
    assert pt["stage"] == 2 and pt["canary"]["requests"] == 200


def test_bad_windows_and_roles_are_refused() -> None:
    rec = SeriesRecorder()
    with pytest.raises(BadWindow):
        rec.add("a", "canary", {"second": 1, "requests": {}}, started_at=0, stage=1)
    w = window(5, HEALTHY)
    del w["second"]
    with pytest.raises(BadWindow):
        rec.add("a", "canary", w, started_at=0, stage=1)
    with pytest.raises(ValueError):
        rec.add("a", "new", window(5, HEALTHY), started_at=0, stage=1)
    with pytest.raises(ValueError):
        SeriesRecorder(max_points=0)
    assert rec.to_list() == []


def test_series_of_a_real_rollout_matches_the_judges_numbers() -> None:
    """Drive a real engine; record each window with the engine's role; the sum of the
    recorded canary requests over the bake equals the judge's canary requests."""
    pb = Playbook.fast({"web": 4})
    pb.start()
    pb.ack_pushed()
    eng = pb.engine
    assert eng is not None
    rec = SeriesRecorder()
    started = pb.now
    s0 = int(pb.now) + 1
    for s in range(s0, s0 + 3):
        pb.now = float(s + 1)
        st = eng.state
        for t in pb.spec.targets:
            canary = t.proxy_id in st.on_new and t.proxy_id in st.acked
            w = window(s, ERRORS_5XX if canary else HEALTHY)
            rec.add(t.proxy_id, "canary" if canary else "baseline", w, started_at=started,
                    stage=st.stage + 1)
    pts = rec.to_list()
    assert len(pts) == 3
    assert all(p["canary"]["requests"] == 100 and p["baseline"]["requests"] == 300 for p in pts)
    assert all(p["canary"]["errorRatePercent"] == 5.0 for p in pts)
    assert all(p["baseline"]["errorRatePercent"] == 0.0 for p in pts)
    v = judge(Sample.of([window(0, ERRORS_5XX)] * 3), Sample.of([window(0, HEALTHY)] * 9),
              Analysis())
    assert v.canary["requests"] == sum(p["canary"]["requests"] for p in pts)


def test_to_list_redoes_only_the_seconds_that_changed() -> None:
    rec = SeriesRecorder(max_points=3)
    s0 = int(START)
    for t in range(3):
        rec.add("a", "canary", window(s0 + t, HEALTHY), started_at=START, stage=1)
    first = rec.to_list()
    rec.add("b", "baseline", window(s0 + 2, DENYING), started_at=START, stage=1)
    second = rec.to_list()
    assert second[:2] == first[:2] and second[0]["canary"] is first[0]["canary"]  # kept
    assert first[2]["baseline"] is None and second[2]["baseline"]["denials"] == 30  # redone
    second[0]["t"] = 99  # callers get their own outer dicts
    rec.add("a", "canary", window(s0 + 3, HEALTHY), started_at=START, stage=2)  # drops t=0
    assert [p["t"] for p in rec.to_list()] == [1, 2, 3]
