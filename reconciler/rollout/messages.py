"""The engine's inputs (events) and outputs (commands). Plain frozen data.

Every event carries `now` (seconds since the epoch, from the shell's clock): the engine
never reads a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.rollout.values import FinalStatus, RolloutOutcome

# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acked:
    proxy_id: str
    version: str
    now: float


@dataclass(frozen=True, slots=True)
class Nacked:
    proxy_id: str
    version: str
    error: str
    now: float


@dataclass(frozen=True, slots=True)
class Disconnected:
    proxy_id: str
    now: float


@dataclass(frozen=True, slots=True)
class StatsReceived:
    """One per-second window from one proxy (the fleet server's `on_stats`)."""

    proxy_id: str
    window: Mapping[str, Any]
    now: float


@dataclass(frozen=True, slots=True)
class TimerFired:
    token: str
    now: float


class OperatorAction(enum.StrEnum):
    """promote (next stage now), promote-full (all remaining now), pause, resume, abort (roll
    back now; also what `meshcd rollback` during a rollout sends)."""

    PROMOTE = "promote"
    PROMOTE_FULL = "promote-full"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"


OPERATOR_ACTIONS: tuple[str, ...] = tuple(a.value for a in OperatorAction)


@dataclass(frozen=True, slots=True)
class Operator:
    """An operator command (`OperatorAction`). A known action given as its word becomes the
    enum; an unknown word stays a str and the engine refuses it (a `Reply`)."""

    action: OperatorAction | str
    actor: str
    now: float
    reason: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.action, OperatorAction) and self.action in OPERATOR_ACTIONS:
            object.__setattr__(self, "action", OperatorAction(self.action))


@dataclass(frozen=True, slots=True)
class NewCommit:
    """A newer revision passed validation while this rollout runs."""

    revision: str
    now: float


Event = Acked | Nacked | Disconnected | StatsReceived | TimerFired | Operator | NewCommit

# --- commands -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Push:
    """Set these proxies' desired snapshots (version None: clear it, the proxy had none),
    then report Acked/Nacked for each of `wait_for` (a proxy already on the version counts
    as acked at once). `purpose`: "stage" or "rollback"."""

    assign: Mapping[str, str | None]
    wait_for: tuple[str, ...]
    purpose: str


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Send TimerFired(token) after `seconds`. Tokens are unique; the engine ignores the ones
    it no longer waits for, so timers never need cancelling."""

    token: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Audit:
    actor: str
    kind: str
    subject: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Persist:
    """Store this state (JSON-able); `RolloutEngine.restore` takes it back."""

    state: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to an operator command (accepted or refused, and why)."""

    action: str
    accepted: bool
    message: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The rollout is over. `outcome`: promoted | rolled_back | aborted | superseded;
    `revision_status`: what the revision becomes (deployed | rejected | superseded);
    `next_revision`: a newer commit to roll out now (restart / finish-then-next)."""

    outcome: RolloutOutcome
    revision_status: FinalStatus
    reason: str
    next_revision: str | None = None


Command = Push | StartTimer | Audit | Persist | Reply | Finished
