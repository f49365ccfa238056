"""What happened to the watched branch between two looks at it. Pure: no git, no clock.

The mirror supplies the facts (the commit we knew, the commit the branch points at now,
and whether the old one is an ancestor of the new one); `classify_change` names the event.
A force-push is an ordinary event to record and deploy, not an error. A deleted branch is
recorded and changes nothing: the fleet keeps the config it has.

`BranchWatch` carries what one look cannot know into the next: that the branch was seen
deleted. A deletion is recorded once however many polls see the branch missing; the branch
coming back, even at the very commit it had (`BranchRecreated`), ends it, so that the next
deletion is recorded again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Unchanged:
    """The branch points where it did (or is still absent: `oid` None)."""

    oid: str | None
    kind: Literal["unchanged"] = "unchanged"

    @property
    def deploy_target(self) -> str | None:
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NewCommit:
    """The branch moved to `new`.

    `fast_forward` is True when `old` is an ancestor of `new`. It is False only on the first
    sighting of the branch (`old` None): there is nothing to compare with.
    """

    old: str | None
    new: str
    fast_forward: bool
    kind: Literal["new_commit"] = "new_commit"

    @property
    def deploy_target(self) -> str | None:
        return self.new

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ForcePush:
    """The branch moved to a commit that does not contain `old` (history rewritten or reset)."""

    old: str
    new: str
    kind: Literal["force_push"] = "force_push"

    @property
    def deploy_target(self) -> str | None:
        return self.new

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BranchDeleted:
    """The branch is gone; `old` is what it pointed at. Nothing is deployed or undeployed."""

    old: str
    kind: Literal["branch_deleted"] = "branch_deleted"

    @property
    def deploy_target(self) -> str | None:
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BranchRecreated:
    """The branch exists again after a deletion, at `new`, the commit last recorded (a commit
    that differs is a NewCommit or ForcePush). Nothing to deploy: the fleet kept that config."""

    new: str
    kind: Literal["branch_recreated"] = "branch_recreated"

    @property
    def deploy_target(self) -> str | None:
        return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ChangeEvent = Unchanged | NewCommit | ForcePush | BranchDeleted | BranchRecreated


@dataclass
class BranchWatch:
    """The watched branch between fetches: present (or not seen yet), or deleted since
    `deleted_at` (the time the deletion was first seen) when it pointed at `deleted_commit`.
    Not thread-safe: one fetch worker calls `follow`."""

    deleted_at: float | None = None
    deleted_commit: str | None = None
    seen: bool = False  # a fetch looked at the branch since start-up
    missing: bool = False  # the last look found no branch that was ever recorded

    def follow(self, event: ChangeEvent, *, now: float) -> ChangeEvent | None:
        """The event to record for this look (None: nothing new, a deletion already
        recorded), updating what the watch knows."""
        self.seen = True
        self.missing = isinstance(event, Unchanged) and event.oid is None
        if isinstance(event, BranchDeleted):
            if self.deleted_at is not None:
                return None
            self.deleted_at, self.deleted_commit = now, event.old
            return event
        if isinstance(event, Unchanged) and event.oid is None:
            return event  # never existed: not a deletion
        if self.deleted_at is not None:
            self.deleted_at = self.deleted_commit = None
            if isinstance(event, Unchanged):
                assert event.oid is not None
                return BranchRecreated(event.oid)
        return event

    def to_dict(self) -> dict[str, Any]:
        """For status: `state` is present | deleted | missing (it never existed) | unknown (no
        fetch looked yet)."""
        if self.deleted_at is not None:
            return {"state": "deleted", "since": self.deleted_at, "commit": self.deleted_commit}
        state = "missing" if self.missing else "present" if self.seen else "unknown"
        return {"state": state, "since": None, "commit": None}


def classify_change(
    previous: str | None, current: str | None, old_is_ancestor: bool | None = None
) -> ChangeEvent:
    """Name the change from `previous` (last known commit, None if none) to `current`.

    `current` None means the branch does not exist now. `old_is_ancestor` must be given
    when both commits are present and differ: it says whether `previous` is reachable
    from `current` (compute it with `GitMirror.is_ancestor(previous, current)`).
    """
    if current == previous:
        return Unchanged(current)
    if current is None:
        assert previous is not None
        return BranchDeleted(previous)
    if previous is None:
        return NewCommit(None, current, fast_forward=False)
    if old_is_ancestor is None:
        raise ValueError(
            "old_is_ancestor is needed when the branch moved from one commit to another"
        )
    if old_is_ancestor:
        return NewCommit(previous, current, fast_forward=True)
    return ForcePush(previous, current)
