"""Write a revert commit to the config repo and push it (`meshcd rollback --revert`).

A rollback puts the fleet back on an earlier revision; with `--revert` Git follows, so the
repo stays the truth: a new commit on top of the branch head whose tree is the earlier
revision's tree, pushed non-force. Any sign that the branch moved since the operator looked
(`expected_head`) refuses the revert instead of burying someone's push:

1. the fetch that starts the revert shows another head (or no branch): `BranchMoved`;
2. the remote advertises another head when the push starts (checked in libgit2's push
   negotiation, before anything is sent): `BranchMoved`;
3. the remote itself refuses the update (it moved while the push ran, a hook declined):
   `BranchMoved` or `PushRejected`, with the remote's own words.

The mirror's fetch lock is held throughout, so no fetch interleaves; after the push the
mirror's branch is moved to the new commit, which the next `observe_branch` therefore sees
as an ordinary fast-forward (and the pipeline records as a new revision).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import pygit2

from .credentials import Credentials
from .errors import CommitNotFound, FetchFailed, SourceConfigError, SourceError
from .mirror import GitMirror, MirrorCallbacks, branch_ref, classify_git_error, scrub
from .model import HEADS

ROLLBACK_TRAILER = "Meshcd-Rollback-To"
# What the remote prints while it refuses (hook output, ref-lock errors) is quoted in the
# error, up to this many characters.
MAX_REMOTE_OUTPUT = 1000
_ZERO_OID = "0" * 40
_OID = re.compile(r"[0-9a-f]{40}")
_TRAILER_LINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*:\s")
# Words a remote (git receive-pack, libgit2's own check) uses when the ref it was asked to
# update is no longer where the pusher thought it was.
_MOVED_HINTS = (
    "non-fast-forward",
    "non-fastforward",
    "fetch first",
    "stale info",
    "but expected",
    "failed to update ref",
    "cannot lock ref",
    "not present locally",
)


class RevertRefused(SourceError):
    """The revert was refused and nothing was pushed; a person has to look (permanent)."""


class BranchMoved(RevertRefused):
    """The branch is not at the head the revert was prepared against (or is gone)."""

    def __init__(
        self, message: str, *, branch: str, expected: str, actual: str | None
    ) -> None:
        super().__init__(message)
        self.branch = branch
        self.expected = expected
        self.actual = actual  # None: deleted, or the remote did not say where it is now


class PushRejected(RevertRefused):
    """The remote refused the update for a reason of its own (a hook, a protected branch)."""

    def __init__(self, message: str, *, branch: str, reason: str) -> None:
        super().__init__(message)
        self.branch = branch
        self.reason = reason  # the remote's status message, scrubbed


class NothingToRevert(RevertRefused):
    """The branch head already has the target's tree: a revert commit would be empty."""


class PushFailed(SourceError):
    """The push failed for a reason not otherwise classified; assumed temporary.

    The remote may or may not have taken the commit; a retry with the same `expected_head`
    is safe: it either pushes or says the branch moved.
    """

    temporary = True


@dataclass(frozen=True)
class RevertResult:
    commit: str  # the revert commit now at the branch head, remote and mirror
    parent: str  # the head it was made on (= expected_head)
    pushed_to: str  # the remote ref it went to, e.g. refs/heads/main


def revert_message(message: str, target_commit: str) -> str:
    """`message` plus the `Meshcd-Rollback-To:` trailer, as git's trailer rules read it.

    Joins an existing trailer block (the last paragraph, when it is not the subject and
    holds only `Key: value` lines); otherwise starts one after a blank line.
    """
    lines = [line.rstrip() for line in message.replace("\r\n", "\n").split("\n")]
    body = "\n".join(lines).strip()
    if not body:
        raise SourceConfigError("a revert commit needs a message")
    paragraphs = body.split("\n\n")
    last = paragraphs[-1].split("\n")
    in_block = len(paragraphs) > 1 and all(_TRAILER_LINE.match(line) for line in last)
    separator = "\n" if in_block else "\n\n"
    return f"{body}{separator}{ROLLBACK_TRAILER}: {target_commit}\n"


def push_revert(
    mirror: GitMirror,
    branch: str,
    *,
    expected_head: str,
    target_commit: str,
    message: str,
    author_name: str = "meshcd",
    author_email: str = "meshcd@localhost",
    now: int | None = None,
) -> RevertResult:
    """Push a commit onto `branch` that restores `target_commit`'s tree; see the module doc.

    Blocking (network): call it from a worker thread. Raises `BranchMoved`, `PushRejected`,
    `NothingToRevert` (all `RevertRefused`, permanent), `CommitNotFound`,
    `SourceConfigError`, or the fetch/network errors of `GitMirror.fetch` (`PushFailed`
    for an unclassified push failure). No message holds a credential.
    """
    ref = branch_ref(branch)
    short = ref.removeprefix(HEADS)
    expected = _commit_id(expected_head, "expected head")
    target = _commit_id(target_commit, "target commit")
    full_message = revert_message(message, target)
    who = _signature(author_name, author_email, int(time.time()) if now is None else now)
    where = mirror.remote.display

    with mirror.exclusive() as repo:
        mirror.fetch_into(repo)
        head = _branch_head(repo, ref)
        if head is None:
            raise BranchMoved(
                f"branch {short!r} is not on {where} (expected it at {expected}); "
                "nothing was pushed",
                branch=short, expected=expected, actual=None,
            )
        if head != expected:
            raise BranchMoved(
                f"branch {short!r} on {where} is at {head}, not at {expected}: "
                "someone pushed meanwhile; nothing was pushed",
                branch=short, expected=expected, actual=head,
            )
        target_obj = repo.get(target)
        if not isinstance(target_obj, pygit2.Commit):
            raise CommitNotFound(f"no commit {target} in the mirror of {where}")
        head_obj = repo[head]
        if target_obj.tree_id == head_obj.tree_id:
            raise NothingToRevert(
                f"branch {short!r} at {head} already has the tree of {target}: "
                "nothing to revert"
            )
        new = str(
            repo.create_commit(None, who, who, full_message, target_obj.tree_id, [head_obj.id])
        )
        _push(repo, mirror, ref, new, expected)
        # Move the mirror's branch the way a fetch would have, so the next observe sees a
        # fast-forward. Under the fetch lock nothing else moved it since our fetch.
        current = repo.references.get(ref)
        if current is not None and str(current.target) == expected:
            repo.references.create(ref, new, force=True)
    return RevertResult(commit=new, parent=expected, pushed_to=ref)


class _PushCallbacks(MirrorCallbacks):
    """Credentials as for a fetch, plus the lease check and the remote's verdict."""

    def __init__(
        self,
        credentials: Credentials,
        environ: Mapping[str, str] | None,
        *,
        ref: str,
        expected: str,
        describe_move: _MoveDescriber,
    ) -> None:
        super().__init__(credentials, environ)
        self._ref = ref
        self._expected = expected
        self._describe_move = describe_move
        self.negotiated = False
        self.reported = False
        self.rejection: str | None = None
        self.remote_output = ""

    def push_negotiation(self, updates: list[pygit2.remotes.PushUpdate]) -> None:
        # The remote's head as it advertised it just now; raising here aborts the push
        # before any object is sent.
        for update in updates:
            if update.dst_refname != self._ref:
                continue
            self.negotiated = True
            remote_head = str(update.src)
            if remote_head != self._expected:
                raise self._describe_move(None if remote_head == _ZERO_OID else remote_head)

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if refname == self._ref:
            self.reported = True
            self.rejection = message or None

    def sideband_progress(self, string: str) -> None:
        if len(self.remote_output) < MAX_REMOTE_OUTPUT:
            self.remote_output = (self.remote_output + string)[:MAX_REMOTE_OUTPUT]


class _MoveDescriber:
    def __init__(self, short: str, where: str, expected: str) -> None:
        self._short, self._where, self._expected = short, where, expected

    def __call__(self, actual: str | None, detail: str = "") -> BranchMoved:
        if detail:
            text = (
                f"the push of branch {self._short!r} to {self._where} was refused: {detail}; "
                f"the branch moved while the revert was pushed (expected it at "
                f"{self._expected}); the branch was not changed"
            )
        elif actual is None:
            text = (
                f"branch {self._short!r} disappeared from {self._where} while the revert "
                f"was pushed (expected it at {self._expected}); nothing was pushed"
            )
        else:
            text = (
                f"branch {self._short!r} on {self._where} moved to {actual} while the "
                f"revert was pushed (expected {self._expected}); nothing was pushed"
            )
        return BranchMoved(text, branch=self._short, expected=self._expected, actual=actual)


def _push(repo: pygit2.Repository, mirror: GitMirror, ref: str, new: str, expected: str) -> None:
    short = ref.removeprefix(HEADS)
    where = mirror.remote.display
    secrets = mirror.secrets()
    moved = _MoveDescriber(short, where, expected)
    callbacks = _PushCallbacks(
        mirror.credentials, mirror.environ, ref=ref, expected=expected, describe_move=moved
    )
    # An anonymous remote: same URL, but no fetch refspec, so libgit2 does not touch the
    # mirror's refs after the push; we move the branch ourselves once it is confirmed.
    try:
        remote = repo.remotes.create_anonymous(mirror.remote.url)
        remote.push([f"{new}:{ref}"], callbacks=callbacks, proxy=mirror.proxy)
    except RevertRefused:
        raise
    except SourceError as exc:  # raised by the credentials callback
        raise type(exc)(scrub(str(exc), secrets)) from None
    except (pygit2.GitError, KeyError, OSError, ValueError) as exc:
        text = scrub(str(exc), secrets)
        if _says_moved(text):
            raise moved(None, text) from None
        error = classify_git_error(str(exc), mirror.remote, secrets)
        if isinstance(error, FetchFailed):
            error = PushFailed(f"{where}: push failed: {text}")
        raise error from None
    output = _one_line(scrub(callbacks.remote_output, secrets))
    if callbacks.rejection is not None:
        reason = scrub(callbacks.rejection, secrets)
        detail = f"{reason} ({output})" if output else reason
        if _says_moved(f"{reason} {output}"):
            raise moved(None, detail)
        raise PushRejected(
            f"{where} refused to move branch {short!r}: {detail}; the branch was not changed",
            branch=short, reason=reason,
        )
    if not callbacks.negotiated or not callbacks.reported:
        raise PushFailed(
            f"{where}: the remote did not confirm the update of {short!r}; "
            "fetch and check before trying again"
        )


def _says_moved(text: str) -> bool:
    lower = text.lower()
    return any(hint in lower for hint in _MOVED_HINTS)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _commit_id(value: str, what: str) -> str:
    oid = value.strip().lower()
    if not _OID.fullmatch(oid):
        raise CommitNotFound(f"{what} is not a full commit id: {value!r}")
    return oid


def _signature(name: str, email: str, when: int) -> pygit2.Signature:
    try:
        return pygit2.Signature(name, email, when, 0)
    except (ValueError, pygit2.GitError) as exc:
        raise SourceConfigError(f"unusable author {name!r} <{email}>: {exc}") from None


def _branch_head(repo: pygit2.Repository, ref: str) -> str | None:
    reference = repo.references.get(ref)
    if reference is None:
        return None
    try:
        return str(reference.peel(pygit2.Commit).id)
    except (pygit2.GitError, ValueError, KeyError):
        return None  # dangling or not a commit: as good as missing
