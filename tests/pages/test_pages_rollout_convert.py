"""STATUS dicts from a REAL RolloutEngine (driven with Acked / StatsReceived / TimerFired /
Operator events, tests/support/rollout_playbook.py) turned into the pages' RolloutView,
StageView, Signals and SeriesPoints; the actions offered for them; the charts drawn."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rollout_playbook import (
    ERRORS_5XX,
    SLOW,
    Playbook,
    Traffic,
)

from reconciler.pages.actions import available_actions
from reconciler.pages.convert import (
    pinned_text,
    rollback_message,
    rollout_state,
    rollout_view,
    series_points,
)
from reconciler.pages.readmodel import (
    Action,
    Overview,
    RevisionDetail,
    RevisionRow,
)
from reconciler.pages.router import rollout_charts
from reconciler.rollout import StatsReceived
from reconciler.rollout.series import SeriesRecorder

COMMIT = "c0ffee" * 6 + "abcd"


class Recorded(Playbook):
    """The playbook, plus what the controller shell adds: a SeriesRecorder fed with every
    window (with the engine's role of the proxy) and the STATUS fields of the contract."""

    recorder: SeriesRecorder
    started_at: float

    def start(self) -> list[str]:
        self.recorder = SeriesRecorder()
        self.started_at = self.now
        return super().start()

    def send(self, event: Any) -> list[str]:
        if isinstance(event, StatsReceived):
            assert self.engine is not None
            st = self.engine.state
            role = "canary" if event.proxy_id in st.on_new and event.proxy_id in st.acked \
                else "baseline"
            self.recorder.add(event.proxy_id, role, event.window, started_at=self.started_at,
                              stage=st.stage + 1)
        return super().send(event)

    def status(self) -> dict[str, Any]:
        assert self.engine is not None
        return {**self.engine.status(self.now), "revisionId": 7, "commit": COMMIT,
                "startedAt": self.started_at, "series": self.recorder.to_list()}


def recorded(services: dict[str, int] | None = None, **kw: Any) -> Recorded:
    pb = Playbook.fast(services, **kw)
    return Recorded(pb.spec)


def test_baking_stage_is_running_with_live_numbers_and_thresholds() -> None:
    pb = recorded({"web": 4})
    pb.start()
    pb.ack_pushed()
    pb.traffic(2, baseline=SLOW)  # a slower baseline never fails the canary
    view = rollout_view(pb.status())
    assert view.state == "running" and view.current_stage == 0
    assert view.revision_id == 7 and view.commit == COMMIT
    assert view.started_at == datetime.fromtimestamp(pb.started_at, UTC)
    assert [s.status for s in view.stages] == ["running", "pending", "pending"]
    assert [s.proxies for s in view.stages] == [1, 2, 4]  # 1 proxy, 50% of 4, all
    first = view.stages[0]
    assert first.name.startswith("1 proxy")
    assert first.canary is not None and first.baseline is not None
    assert first.canary.requests == 200 and first.baseline.requests == 600
    assert first.canary.p99_ms is not None and first.baseline.p99_ms is not None
    assert first.canary.p99_ms < first.baseline.p99_ms  # the sides are not mixed up
    assert first.canary.error_rate == 0.0
    assert first.thresholds["error_rate"] == 0.01 and first.thresholds["p99_ms"] == 500.0
    assert "p99_vs_baseline_ms" in first.thresholds
    assert first.started_at is not None
    assert view.detail.startswith("baking ")
    assert view.bake is not None and 0 < view.bake[0] <= view.bake[1] == 3.0
    assert view.outcome is None
    ov = Overview(None, view, {}, None, False, None)
    assert available_actions(ov) == [Action.PROMOTE, Action.PAUSE, Action.ABORT, Action.ROLLBACK]


def test_failed_stage_rolls_back_and_later_stages_do_not_run() -> None:
    pb = recorded({"web": 4, "api": 2})
    pb.start()
    pb.ack_pushed()
    pb.traffic(3)
    pb.fire("bake")  # stage 1 passes
    pb.ack_pushed()
    pb.traffic(3, canary=ERRORS_5XX)  # judged Failed early: rolls back
    mid = rollout_view(pb.status())
    assert mid.state == "rolling_back"
    assert [s.status for s in mid.stages] == ["passed", "failed", "not-run"]
    assert available_actions(Overview(None, mid, {}, None, False, None)) == [Action.ROLLBACK]
    pb.ack_old(*sorted(pb.engine.state.rollback_pending))  # type: ignore[union-attr]
    status = pb.status()
    assert status["phase"] == "done"
    view = rollout_view(status)
    assert view.state == "rolled_back" and view.outcome == "rolled_back"
    assert [s.status for s in view.stages] == ["passed", "failed", "not-run"]
    failed = view.stages[1]
    assert failed.decision is not None and failed.decision.startswith("Failed: ")
    assert "error_rate" in failed.decision
    assert failed.canary is not None and abs(failed.canary.error_rate - 0.05) < 1e-9
    assert failed.baseline is not None and failed.baseline.error_rate == 0.0
    assert view.stages[0].decision is not None and "Successful" in view.stages[0].decision
    assert view.detail == status["outcome"]["reason"] and "error_rate" in view.detail
    # The series: canary errors at 5% only in stage 2's seconds.
    points = series_points(status["series"])
    assert [p.t for p in points] == sorted(p.t for p in points)
    assert {p.stage for p in points} == {1, 2}
    assert all(p.canary.error_rate == 0.0 for p in points if p.stage == 1)
    assert any(abs(p.canary.error_rate - 0.05) < 1e-9 for p in points if p.stage == 2)
    assert all(p.baseline.error_rate == 0.0 for p in points if p.baseline is not None)


def test_pause_resume_abort_by_an_operator() -> None:
    pb = recorded({"web": 4})
    pb.start()
    pb.ack_pushed()
    pb.op("pause", actor="token:ana#01234567", reason="looking")
    view = rollout_view(pb.status())
    assert view.state == "paused" and view.stages[0].status == "paused"
    assert view.bake is None
    assert "looking" in view.detail or "token:ana" in view.detail
    actions = available_actions(Overview(None, view, {}, None, True, None))
    assert actions == [Action.PROMOTE, Action.RESUME, Action.ABORT, Action.ROLLBACK]
    pb.op("resume")
    assert rollout_view(pb.status()).state == "running"
    pb.op("abort", actor="token:ana#01234567")
    pb.ack_old(*sorted(pb.engine.state.rollback_pending))  # type: ignore[union-attr]
    view = rollout_view(pb.status())
    assert rollout_state(pb.status()) == "aborted"
    assert view.state == "aborted" and view.outcome == "aborted"
    assert [s.status for s in view.stages] == ["aborted", "not-run", "not-run"]
    assert view.stages[0].decision == "aborted by token:ana#01234567"
    assert view.detail == "aborted by token:ana#01234567"


def test_promoted_to_the_end_is_done_with_every_stage_passed() -> None:
    pb = recorded({"web": 4})
    pb.start()
    for _ in range(3):
        pb.ack_pushed()
        pb.traffic(3)
        pb.fire("bake")
    status = pb.status()
    view = rollout_view(status)
    assert view.state == "done" and view.outcome == "promoted"
    assert [s.status for s in view.stages] == ["passed", "passed", "passed"]
    assert [s.proxies for s in view.stages] == [1, 2, 4]
    points = series_points(status["series"])
    last = [p for p in points if p.stage == 3]
    assert last and all(p.baseline is None for p in last)  # everyone on the new config
    assert all(p.canary.requests == 400 for p in last)


def test_promote_full_skips_the_middle_stage() -> None:
    pb = recorded({"web": 4})
    pb.start()
    pb.ack_pushed()
    pb.op("promote-full")
    pb.ack_pushed()
    view = rollout_view(pb.status())
    assert view.state == "done"
    assert [s.status for s in view.stages] == ["skipped", "skipped", "passed"]


def test_charts_of_a_rollout_have_gaps_not_zeros_and_the_judges_thresholds() -> None:
    pb = recorded({"web": 4})
    pb.start()
    pb.ack_pushed()
    idle = Traffic(rps=0)
    pb.traffic(1, canary=idle, baseline=idle)  # a second without requests: no p99
    pb.traffic(2)
    status = pb.status()
    view = rollout_view(status)
    points = series_points(status["series"])
    assert len(points) == 3 and points[0].canary.p99_ms is None
    row = RevisionRow(7, COMMIT, "a", "m", "poll", "unsigned", "deploying", view.started_at)
    detail = RevisionDetail(row, (), "", (), (), view, points)
    charts = rollout_charts(detail)
    assert [c.title for c in charts] == ["Error rate", "p99 latency", "Denial rate"]
    err, p99, den = charts
    assert err.threshold_y is not None and p99.threshold_y is not None  # 1%, 500 ms
    assert den.threshold_y is None  # with a baseline the judge's denial limit is relative
    assert len(err.canary.split()) == 3  # a rate of 0 requests is drawn as 0
    assert len(p99.canary.split()) == 2 and len(p99.baseline.split()) == 2  # a gap


def test_pin_and_rollback_texts() -> None:
    assert pinned_text(None) is None
    text = pinned_text({"revision": 3, "commit": "ab" * 20, "actor": "token:ana#0123",
                        "at": "2026-11-25T20:00:00Z", "reason": "bad deploy"})
    assert text is not None
    assert "revision 3" in text and "abababababab" in text and "token:ana#0123" in text
    assert "2026-11-25 20:00:00 UTC" in text and "bad deploy" in text
    msg = rollback_message({"accepted": True, "revision": 9, "commit": "cd" * 20, "target": 3,
                            "revertCommit": None, "message": "pinned to 3",
                            "actor": "token:ana#0123"})
    assert msg.startswith("rolling back to revision 3 as revision 9 (commit cdcdcdcdcdcd)")
    assert msg.endswith(": pinned to 3")
    ov = Overview(None, None, {}, text, False, None)
    assert available_actions(ov) == [Action.RESUME, Action.ROLLBACK]


def test_a_malformed_status_is_refused_by_name_not_guessed() -> None:
    pb = recorded({"web": 2})
    pb.start()
    status = pb.status()
    assert rollout_view(status).state == "running"
    del status["history"]
    with pytest.raises(ValueError, match="history"):
        rollout_view(status)
    with pytest.raises(ValueError):
        rollout_view({**pb.status(), "phase": "sleeping"})
