"""A revision: one commit of the watched branch on its way to the fleet. Pure data.

Statuses and the moves between them (anything else is a bug, `IllegalTransition`):

    detected ──► invalid                      (signature refused, or validation errors)
        │  └───► superseded                   (a newer commit arrived before it deployed)
        ▼
    planned ───► superseded
        ▼
    deploying ─► deployed | failed | rejected | superseded
                 rejected: a canary stage judged it bad, or an operator aborted it;
                 superseded: a newer commit replaced it mid-rollout (onNewCommit: restart)
    deployed ──► rejected                     (reserved: rolled back after it was promoted)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from reconciler.errors import MeshcdError, NotFound


class RevisionStatus(enum.StrEnum):
    DETECTED = "detected"
    INVALID = "invalid"
    PLANNED = "planned"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    REJECTED = "rejected"  # a canary stage judged it bad, or an operator aborted it


TERMINAL = frozenset({
    RevisionStatus.INVALID, RevisionStatus.DEPLOYED, RevisionStatus.FAILED,
    RevisionStatus.SUPERSEDED, RevisionStatus.REJECTED,
})
# A revision in one of these may still be replaced by a newer commit.
SUPERSEDABLE = frozenset({RevisionStatus.DETECTED, RevisionStatus.PLANNED})

_MOVES: dict[RevisionStatus, frozenset[RevisionStatus]] = {
    RevisionStatus.DETECTED: frozenset({
        RevisionStatus.INVALID, RevisionStatus.PLANNED, RevisionStatus.SUPERSEDED,
        RevisionStatus.FAILED,
    }),
    RevisionStatus.PLANNED: frozenset({
        RevisionStatus.DEPLOYING, RevisionStatus.SUPERSEDED, RevisionStatus.FAILED,
    }),
    RevisionStatus.DEPLOYING: frozenset({
        RevisionStatus.DEPLOYED, RevisionStatus.FAILED, RevisionStatus.REJECTED,
        RevisionStatus.SUPERSEDED,
    }),
    RevisionStatus.DEPLOYED: frozenset({RevisionStatus.REJECTED}),
}

TRIGGERS = ("poll", "webhook", "manual", "startup", "rollback")


class IllegalTransition(MeshcdError, ValueError):
    """A status change the life cycle does not allow (a programming error: permanent)."""


class RevisionNotFound(NotFound, KeyError):
    """No revision with that id. Also a KeyError, for callers written before NotFound."""

    def __init__(self, rev_id: int) -> None:
        super().__init__(f"no revision {rev_id}")
        self.rev_id = rev_id

    def __str__(self) -> str:  # not KeyError's repr() of the message
        return f"no revision {self.rev_id}"


def check_transition(old: RevisionStatus, new: RevisionStatus) -> None:
    if new not in _MOVES.get(old, frozenset()):
        raise IllegalTransition(f"a revision cannot go from {old} to {new}")


@dataclass(frozen=True)
class Revision:
    """One row of the `revisions` table. `id` is assigned by the store (0 before)."""

    id: int
    commit: str
    branch: str
    author: str
    message: str
    trigger: str
    status: RevisionStatus
    detected_at: datetime
    updated_at: datetime
    signature: dict[str, Any] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)  # plan summary
    deploy: dict[str, Any] = field(default_factory=dict)  # deploy result (acks, nacks, ...)
    reason: str = ""  # why it is invalid / failed / superseded

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def moved(self, status: RevisionStatus, now: datetime, **changes: Any) -> Revision:
        """This revision in `status` (checked), with `changes` applied."""
        check_transition(self.status, status)
        return replace(self, status=status, updated_at=now, **changes)

    def summary(self) -> dict[str, Any]:
        """The list form (API `/api/revisions`)."""
        return {
            "id": self.id,
            "commit": self.commit,
            "branch": self.branch,
            "author": self.author,
            "message": self.message.split("\n", 1)[0][:200],
            "trigger": self.trigger,
            "status": str(self.status),
            "detectedAt": _iso(self.detected_at),
            "updatedAt": _iso(self.updated_at),
            "reason": self.reason,
            "outcome": self.deploy.get("outcome"),
            "rollback": self.deploy.get("rollback"),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything (API `/api/revisions/{id}`)."""
        return {
            **self.summary(),
            "message": self.message,
            "signature": self.signature,
            "findings": self.findings,
            "plan": self.plan,
            "deploy": self.deploy,
        }


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")
