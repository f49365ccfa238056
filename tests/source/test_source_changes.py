from __future__ import annotations

from pathlib import Path

import pytest
from source_helpers import Upstream

from reconciler.source import (
    BranchDeleted,
    BranchRecreated,
    BranchWatch,
    ForcePush,
    GitMirror,
    NewCommit,
    SignaturePolicy,
    Unchanged,
    classify_change,
    observe_branch,
)

A, B = "a" * 40, "b" * 40


@pytest.mark.parametrize(
    ("previous", "current", "ancestor", "expected"),
    [
        (None, None, None, Unchanged(None)),
        (A, A, None, Unchanged(A)),
        (None, A, None, NewCommit(None, A, fast_forward=False)),
        (A, B, True, NewCommit(A, B, fast_forward=True)),
        (A, B, False, ForcePush(A, B)),
        (A, None, None, BranchDeleted(A)),
    ],
)
def test_classification(
    previous: str | None, current: str | None, ancestor: bool | None, expected: object
) -> None:
    assert classify_change(previous, current, ancestor) == expected


def test_moving_branch_needs_the_ancestry_fact() -> None:
    with pytest.raises(ValueError, match="old_is_ancestor"):
        classify_change(A, B)


def test_deploy_targets_and_audit_dicts() -> None:
    assert Unchanged(A).deploy_target is None
    assert BranchDeleted(A).deploy_target is None
    assert NewCommit(A, B, True).deploy_target == B
    assert ForcePush(A, B).deploy_target == B
    assert ForcePush(A, B).to_dict() == {"old": A, "new": B, "kind": "force_push"}
    assert BranchDeleted(A).to_dict() == {"old": A, "kind": "branch_deleted"}


def test_observe_branch_through_a_real_history(tmp_path: Path, upstream: Upstream) -> None:
    policy = SignaturePolicy()  # signatures off: every new commit is deployable
    mirror = GitMirror(tmp_path / "m.git", str(upstream.path))
    mirror.fetch()
    first = observe_branch(mirror, "main", None, policy, now=0)
    assert first.event == Unchanged(None) and not first.deployable

    c1 = upstream.commit("first")
    mirror.fetch()
    seen = observe_branch(mirror, "main", None, policy, now=0)
    assert seen.event == NewCommit(None, c1, fast_forward=False)
    assert seen.commit is not None and seen.commit.id == c1 and seen.deployable

    c2 = upstream.commit("second")
    mirror.fetch()
    ff = observe_branch(mirror, "main", c1, policy, now=0)
    assert ff.event == NewCommit(c1, c2, fast_forward=True)
    assert ff.to_dict()["commit"]["summary"] == "second"
    assert ff.to_dict()["signature"]["deployable"] is True

    assert observe_branch(mirror, "main", c2, policy, now=0).event == Unchanged(c2)

    upstream.git("reset", "-q", "--hard", c1)
    c3 = upstream.commit("rewritten")
    mirror.fetch()
    fp = observe_branch(mirror, "main", c2, policy, now=0)
    assert fp.event == ForcePush(c2, c3) and fp.deployable

    # Resetting the branch back to an older commit is also a force-push (to c1).
    upstream.git("reset", "-q", "--hard", c1)
    mirror.fetch()
    assert observe_branch(mirror, "main", c3, policy, now=0).event == ForcePush(c3, c1)

    upstream.git("checkout", "-q", "-b", "other")
    upstream.git("branch", "-D", "main")
    mirror.fetch()
    gone = observe_branch(mirror, "main", c1, policy, now=0)
    assert gone.event == BranchDeleted(c1)
    assert gone.commit is None and not gone.deployable


def test_branch_watch_records_each_deletion_once_and_a_return_at_the_same_commit(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Issue 17 #11: deleted, polled again, back at the very same commit, deleted again."""
    policy = SignaturePolicy()
    mirror = GitMirror(tmp_path / "m.git", str(upstream.path))
    watch = BranchWatch()
    assert watch.to_dict()["state"] == "unknown"
    c1 = upstream.commit("first")
    recorded = c1  # what the pipeline last recorded

    def look(now: float) -> object:
        mirror.fetch()
        return watch.follow(observe_branch(mirror, "main", recorded, policy, now=0).event,
                            now=now)

    assert look(1) == Unchanged(c1) and watch.to_dict()["state"] == "present"
    upstream.git("checkout", "-q", "-b", "other")
    upstream.git("branch", "-D", "main")
    assert look(2) == BranchDeleted(c1)
    assert watch.to_dict() == {"state": "deleted", "since": 2, "commit": c1}
    assert look(3) is None and look(4) is None  # recorded once, not at every poll
    # The same commit pushed back: not "unchanged", the branch came back.
    upstream.git("branch", "main", c1)
    assert look(5) == BranchRecreated(c1)
    assert watch.to_dict()["state"] == "present"
    assert look(6) == Unchanged(c1)
    # Deleted a second time: recorded again.
    upstream.git("branch", "-D", "main")
    assert look(7) == BranchDeleted(c1)
    assert watch.to_dict()["since"] == 7
    # Back at another commit: an ordinary new commit to deploy.
    upstream.git("checkout", "-q", "-b", "main")
    c2 = upstream.commit("second")
    event = look(8)
    assert event == NewCommit(c1, c2, fast_forward=True)
    assert watch.to_dict()["state"] == "present"


def test_branch_watch_a_branch_that_never_existed_is_missing_not_deleted() -> None:
    watch = BranchWatch()
    assert watch.follow(Unchanged(None), now=1) == Unchanged(None)
    assert watch.to_dict()["state"] == "missing"
    assert BranchRecreated(A).deploy_target is None
    assert BranchRecreated(A).to_dict() == {"new": A, "kind": "branch_recreated"}
