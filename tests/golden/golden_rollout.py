"""Rollout states for the `meshcd rollout status` golden files, built by driving the pure
RolloutEngine through scripted rollouts (tests/support/rollout_playbook.py).

Each scenario ends in a document shaped like `GET /api/rollout`: `{"rollout": STATUS,
"pin": PIN}`, where STATUS is `RolloutEngine.status(now)` plus what the controller adds
(`revisionId`, `commit`, `startedAt`, and the `series` of a SeriesRecorder fed every stats
window the engine gets, as reconciler/revisions/canary.py does). The text pinned is
`reconciler.rollout.view.render_rollout(doc)` (what `meshcd rollout status` prints) and, for a
finished rollout, `render_final(status)` (what `meshcd rollout watch` prints at the end).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rollout_playbook import ERRORS_5XX, START, Playbook, Traffic

from reconciler.rollout import Event, StatsReceived
from reconciler.rollout.series import SeriesRecorder
from reconciler.rollout.view import render_final, render_rollout

LOW = Traffic(rps=5)
COMMIT = "3f9a1c0d2b4e6f8a0c1e3d5b7a9f0e2c4d6b8a0f"
PIN = {"revision": 6, "commit": "0c1e3d5b7a9f0e2c4d6b8a0f3f9a1c0d2b4e6f8a",
       "actor": "user:alice", "reason": "incident 42: freeze the mesh"}


class _Recorded(Playbook):
    """A playbook that also keeps the rollout's per-second series, as the canary shell does."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.series = SeriesRecorder()

    def send(self, event: Event) -> list[str]:
        if isinstance(event, StatsReceived) and self.engine is not None:
            role = self.engine.role_of(event.proxy_id)
            if role is not None:
                self.series.add(event.proxy_id, role, event.window, started_at=START,
                                stage=self.engine.state.stage + 1)
        return super().send(event)

    def status(self) -> dict[str, Any]:
        assert self.engine is not None
        return {**self.engine.status(self.now), "revisionId": 7, "commit": COMMIT,
                "startedAt": START, "series": self.series.to_list()}


def _fast() -> _Recorded:
    pb = _Recorded.fast()  # Playbook.fast builds the class it is called on
    assert isinstance(pb, _Recorded)
    return pb


def _stage_2() -> _Recorded:
    """Stage 1 passed; stage 2's proxies have ACKed and bake for 2 of 3 seconds."""
    pb = _fast()
    pb.start()
    pb.ack("a2")
    pb.traffic(3)
    pb.fire("bake")
    pb.ack("w1", "w2")
    pb.traffic(2)
    return pb


def _paused() -> _Recorded:
    """Stage 2 baking, then paused by an operator with a reason."""
    pb = _stage_2()
    pb.op("pause", actor="user:bob", reason="p99 looks off on web")
    return pb


def _paused_inconclusive() -> _Recorded:
    """Stage 1's canary sees too few requests to judge: the engine pauses for an operator."""
    pb = _fast()
    pb.start()
    pb.ack("a2")
    pb.traffic(3, canary=LOW, baseline=LOW)
    pb.fire("bake")
    return pb


def _rolled_back() -> _Recorded:
    """Stage 2's canaries return 5% 5xx: the judge fails the stage during the bake and every
    proxy that got the change is rolled back (and ACKs its old config)."""
    pb = _fast()
    pb.start()
    pb.ack("a2")
    pb.traffic(3)
    pb.fire("bake")
    pb.ack("w1", "w2")
    pb.traffic(3, canary=ERRORS_5XX)
    pb.ack_old("a2", "w1", "w2")
    return pb


def _promoted() -> _Recorded:
    """Every stage healthy: promoted through all three."""
    pb = _fast()
    pb.start()
    pb.ack("a2")
    pb.traffic(3)
    pb.fire("bake")
    pb.ack("w1", "w2")
    pb.traffic(3)
    pb.fire("bake")
    pb.ack("a1", "w3", "w4")
    pb.traffic(3)
    pb.fire("bake")
    return pb


SCENARIOS: dict[str, tuple[Callable[[], _Recorded], str]] = {
    "in-progress-stage-2": (_stage_2, "baking"),
    "paused-by-operator": (_paused, "paused"),
    "paused-inconclusive": (_paused_inconclusive, "paused"),
    "rolled-back": (_rolled_back, "done"),
    "promoted": (_promoted, "done"),
}


def rollout_texts() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, (script, phase) in SCENARIOS.items():
        pb = script()
        if pb.phase != phase:  # the script no longer tells the story its name says
            raise AssertionError(f"rollout scenario {name} ended {pb.phase}, not {phase}")
        status = pb.status()
        out[f"status-{name}.txt"] = render_rollout({"rollout": status, "pin": None}) + "\n"
        if phase == "done":
            out[f"final-{name}.txt"] = render_final(status) + "\n"
    out["status-pinned-idle.txt"] = render_rollout({"rollout": None, "pin": PIN}) + "\n"
    out["status-pinned-paused.txt"] = render_rollout(
        {"rollout": _paused().status(), "pin": PIN}) + "\n"
    return out


__all__ = ["rollout_texts"]
