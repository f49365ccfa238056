"""The rollout's small typed values: its phase, how it ends, and a stage's verdict.

Each enum is a `str` enum whose values are the words the stored state, the audit and the API
use, so the JSON shape is unchanged; `StageVerdict.to_json`/`from_json` are its only
translation to and from that shape."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.analysis.judge import Outcome, Verdict


class Phase(enum.StrEnum):
    PUSHING = "pushing"
    BAKING = "baking"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    DONE = "done"


class RolloutOutcome(enum.StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"


class FinalStatus(enum.StrEnum):
    """What the revision becomes when its rollout ends."""

    DEPLOYED = "deployed"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"


class StageOutcome(enum.StrEnum):
    """A finished stage in the history: the judge's outcome, or promoted by an operator."""

    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"
    PROMOTED = "Promoted"


class Signal(enum.StrEnum):
    """A failure the fleet reported (not the stats)."""

    NACK = "nack"
    DISCONNECT = "disconnect"
    ACK_TIMEOUT = "ack_timeout"


@dataclass(frozen=True, slots=True)
class StageVerdict:
    """A stage's verdict: the worst of its services' (judged on the stats), or a failure the
    fleet signalled (`signal`, with the proxy or proxies) with the numbers so far. `interim`:
    an early look during the bake failed it. `stage` counts from 1."""

    outcome: Outcome
    reason: str
    stage: int
    canaries: tuple[str, ...] = ()
    baseline: tuple[str, ...] = ()
    services: Mapping[str, Verdict] = field(default_factory=dict)
    signal: Signal | None = None
    proxy: str | None = None
    proxies: tuple[str, ...] | None = None
    interim: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "outcome": self.outcome.value, "reason": self.reason, "stage": self.stage,
            "canaries": list(self.canaries), "baseline": list(self.baseline),
            "services": {svc: v.to_dict() for svc, v in self.services.items()},
        }
        if self.signal is not None:
            out["signal"] = self.signal.value
        if self.proxy is not None:
            out["proxy"] = self.proxy
        if self.proxies is not None:
            out["proxies"] = list(self.proxies)
        if self.interim:
            out["interim"] = True
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StageVerdict:
        signal = d.get("signal")
        proxies = d.get("proxies")
        return cls(
            Outcome(d["outcome"]), str(d["reason"]), int(d["stage"]),
            tuple(d["canaries"]), tuple(d["baseline"]),
            {str(svc): Verdict.from_dict(v) for svc, v in d["services"].items()},
            None if signal is None else Signal(signal), d.get("proxy"),
            None if proxies is None else tuple(proxies), bool(d.get("interim", False)),
        )
