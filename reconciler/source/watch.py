"""Glue for the revision pipeline: after a fetch, what happened to the watched branch?

`observe_branch` reads the mirror (the I/O), then hands the facts to the pure parts:
`classify_change` for the event and the `SignaturePolicy` for the commit to deploy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .changes import ChangeEvent, ForcePush, NewCommit, classify_change
from .mirror import GitMirror
from .model import CommitInfo
from .signature_policy import PolicyDecision, SignaturePolicy


@dataclass(frozen=True)
class BranchObservation:
    branch: str
    event: ChangeEvent
    commit: CommitInfo | None = None  # the commit to deploy, for NewCommit / ForcePush
    decision: PolicyDecision | None = None  # the signature policy's say on that commit

    @property
    def deployable(self) -> bool:
        """A new target exists and the signature policy lets it through."""
        return self.commit is not None and self.decision is not None and self.decision.deployable

    def to_dict(self) -> dict[str, Any]:
        """Audit-ready summary (no signature bytes)."""
        data: dict[str, Any] = {"branch": self.branch, "event": self.event.to_dict()}
        if self.commit is not None:
            c = self.commit
            data["commit"] = {
                "id": c.id,
                "author": f"{c.author.name} <{c.author.email}>",
                "committer": f"{c.committer.name} <{c.committer.email}>",
                "time": c.committer.time,
                "summary": c.summary,
                "signed": c.signed,
            }
        if self.decision is not None:
            data["signature"] = self.decision.to_dict()
        return data


def observe_branch(
    mirror: GitMirror, branch: str, previous: str | None, policy: SignaturePolicy, *, now: int
) -> BranchObservation:
    """Compare the branch in the mirror with `previous` (the last commit we acted on)."""
    current = mirror.resolve(branch)
    ancestor = None
    if previous is not None and current is not None and previous != current:
        ancestor = mirror.is_ancestor(previous, current)
    event = classify_change(previous, current, ancestor)
    if not isinstance(event, NewCommit | ForcePush):
        return BranchObservation(branch, event)
    commit = mirror.commit_info(event.new)
    return BranchObservation(branch, event, commit, policy.decide_commit(commit, now=now))
