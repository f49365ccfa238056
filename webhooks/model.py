"""What an adapter returns: a `Push` (one or more `RefUpdate`s) or a `Ping`; and the
`DeliveryRecord` the receiver hands to the audit for every delivery."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ZERO_SHA1 = "0" * 40
ZERO_SHA256 = "0" * 64

BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"


def is_zero(sha: str) -> bool:
    return sha in (ZERO_SHA1, ZERO_SHA256)


@dataclass(frozen=True, slots=True)
class RefUpdate:
    """One ref moving from `before` to `after`, as a forge reported it.

    The payload only *triggers* a fetch: what gets deployed is whatever the controller
    fetches from the repository itself, so a replayed or stale delivery cannot pick a commit.
    """

    forge: str
    repo_urls: tuple[str, ...]  # every clone/web URL the payload names, as given
    ref: str  # full ref name, e.g. refs/heads/main
    before: str  # all zeros when the ref was created
    after: str  # all zeros when the ref was deleted
    delivery_id: str
    pusher: str
    event: str  # the forge's own event name, e.g. "push", "Tag Push Hook", "repo:refs_changed"
    # Bitbucket Data Center without `repository.links`: (project key, repository slug), matched
    # against the watched URL's path instead of a URL (see repo_url.project_matches).
    project: tuple[str, str] | None = None

    @property
    def branch(self) -> str | None:
        return self.ref[len(BRANCH_PREFIX) :] if self.ref.startswith(BRANCH_PREFIX) else None

    @property
    def is_tag(self) -> bool:
        return self.ref.startswith(TAG_PREFIX)

    @property
    def is_deletion(self) -> bool:
        return is_zero(self.after)

    @property
    def is_creation(self) -> bool:
        return is_zero(self.before)


@dataclass(frozen=True, slots=True)
class Push:
    """A verified push delivery. Most forges report one ref per delivery; Bitbucket can
    report several (`push.changes[]`, `changes[]`)."""

    forge: str
    delivery_id: str
    event: str
    updates: tuple[RefUpdate, ...]


@dataclass(frozen=True, slots=True)
class Ping:
    """A "hook was set up / test connection" delivery: answered, never deployed. `signed` is
    False for Bitbucket Data Center's "Test connection", which carries no signature even when
    the hook has a secret: it is answered without its body being read, and audited as unsigned."""

    forge: str
    delivery_id: str
    event: str
    signed: bool = True


@dataclass(frozen=True, slots=True)
class Ignored:
    """A verified delivery of an event meshcd does not act on (a merge request, a pipeline, a
    comment...): answered 200 `ignored`, so that a forge that disables failing hooks (GitLab
    after 4 failures in a row) keeps delivering pushes. The body is not read."""

    forge: str
    delivery_id: str
    event: str


Parsed = Push | Ping | Ignored

Result = Literal["accepted", "ignored", "duplicate", "ping", "rejected", "error"]
EVENT_NOT_HANDLED = "event_not_handled"  # the reason given for an `Ignored` delivery
UNSIGNED_PING = "unsigned_ping"  # the reason given for a Ping with signed=False


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One line of audit per delivery, accepted or not. Never holds the secret or the body:
    only what identifies the delivery and why it was answered the way it was."""

    time: float  # from the clock given to the receiver (epoch seconds)
    forge: str
    delivery_id: str | None  # for rejected deliveries: the id the sender *claimed*, if any
    result: Result
    reason: str
    status: int
    remote_addr: str | None
    ref: str | None = None
    after: str | None = None
    body_bytes: int = 0
