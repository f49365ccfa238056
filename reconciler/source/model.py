"""Plain data the source hands out: ref updates, fetch results, commit metadata. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

HEADS = "refs/heads/"


@dataclass(frozen=True)
class RefUpdate:
    """One branch that a fetch changed. `old` None = created, `new` None = deleted."""

    name: str
    old: str | None
    new: str | None

    @property
    def branch(self) -> str:
        return self.name.removeprefix(HEADS)


@dataclass(frozen=True)
class FetchResult:
    """What one fetch did to the mirror's branches."""

    remote: str
    updates: tuple[RefUpdate, ...] = ()
    received_objects: int = 0

    def update_for(self, branch: str) -> RefUpdate | None:
        """The update of `branch` (short or full name), or None if it did not move."""
        ref = branch if branch.startswith(HEADS) else HEADS + branch
        return next((u for u in self.updates if u.name == ref), None)


@dataclass(frozen=True)
class Person:
    name: str
    email: str
    time: int  # unix seconds
    offset_minutes: int  # the person's UTC offset, as git records it


@dataclass(frozen=True)
class CommitInfo:
    """A commit's metadata, plus its signature and the bytes it signs (None if unsigned)."""

    id: str
    tree: str
    author: Person
    committer: Person
    message: str
    parents: tuple[str, ...]
    signature: bytes | None = field(default=None, repr=False)
    signed_payload: bytes | None = field(default=None, repr=False)

    @property
    def summary(self) -> str:
        return self.message.split("\n", 1)[0]

    @property
    def signed(self) -> bool:
        return self.signature is not None
