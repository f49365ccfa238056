"""A rollout's status, typed: what `meshcd rollout status`, the API and the pages show.

`RolloutEngine.status_view(now)` builds it; `to_json` is the API's form (docs/rollout.md)
and `from_json` reads that form back once at an edge (a stored status, an API answer), so
the readers work on typed values. The engine's status has no `revisionId`/`commit`/
`startedAt`/`source`: the controller's canary shell adds them (None here without it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.rollout.state import Ending, Paused, StageResult
from reconciler.rollout.values import Phase, StageVerdict


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    now: float
    revision: str
    previous: str | None
    phase: Phase
    stage: int  # from 1
    stages: tuple[str, ...]  # labels
    canaries: tuple[str, ...]
    baseline: tuple[str, ...]
    waiting_for_ack: tuple[str, ...]
    bake_elapsed: float | None
    bake_ends: float | None
    extensions: int
    paused: Paused | None
    live: StageVerdict | None
    last_verdict: StageVerdict | None
    history: tuple[StageResult, ...]
    next: str | None
    outcome: Ending | None
    # Added by the controller's canary shell.
    revision_id: int | None = None
    commit: str | None = None
    started_at: float | None = None
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "now": self.now, "revision": self.revision, "previous": self.previous,
            "phase": self.phase.value, "stage": self.stage, "stages": list(self.stages),
            "canaries": list(self.canaries), "baseline": list(self.baseline),
            "waitingForAck": list(self.waiting_for_ack), "bakeElapsed": self.bake_elapsed,
            "bakeEnds": self.bake_ends, "extensions": self.extensions,
            "paused": None if self.paused is None else self.paused.to_json(),
            "live": None if self.live is None else self.live.to_json(),
            "lastVerdict": None if self.last_verdict is None else self.last_verdict.to_json(),
            "history": [h.to_json() for h in self.history], "next": self.next,
            "outcome": None if self.outcome is None else self.outcome.to_json(),
        }
        extra = {"revisionId": self.revision_id, "commit": self.commit,
                 "startedAt": self.started_at, "source": self.source}
        out.update({k: v for k, v in extra.items() if v is not None})
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RolloutStatus:
        """Read the API form; a missing or malformed field is a ValueError naming it."""
        try:
            paused, live, last, outcome = (d["paused"], d["live"], d["lastVerdict"],
                                           d["outcome"])
            rid = d.get("revisionId")
            return cls(
                float(d["now"]), str(d["revision"]), d["previous"], Phase(d["phase"]),
                int(d["stage"]), tuple(str(x) for x in d["stages"]), tuple(d["canaries"]),
                tuple(d["baseline"]), tuple(d["waitingForAck"]), _opt_float(d["bakeElapsed"]),
                _opt_float(d["bakeEnds"]), int(d["extensions"]),
                None if paused is None else Paused.from_json(paused),
                None if live is None else StageVerdict.from_json(live),
                None if last is None else StageVerdict.from_json(last),
                tuple(StageResult.from_json(h) for h in d["history"]), d["next"],
                None if outcome is None else Ending.from_json(outcome),
                None if rid is None else int(rid), d.get("commit"),
                _opt_float(d.get("startedAt")), d.get("source"),
            )
        except KeyError as e:
            raise ValueError(f"not a rollout status: no {e}") from None
        except (TypeError, AttributeError) as e:
            raise ValueError(f"not a rollout status: {e}") from None
