"""Pure: given a verified push and what we watch, act on it or say why not.

Authenticated deliveries we choose not to act on are answered 200 `ignored`, not 4xx: the
sender did nothing wrong (a push to a feature branch is normal traffic for a repository-wide
hook), and GitLab disables hooks that keep answering 4xx."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from webhooks.model import Push, RefUpdate
from webhooks.repo_url import any_matches, project_matches

ACCEPTED = "push_to_watched_branch"
NO_CHANGES = "no_ref_changes"
REPO_NOT_WATCHED = "repo_not_watched"
BRANCH_NOT_WATCHED = "branch_not_watched"
TAG_PUSH = "tag_push"
BRANCH_DELETED = "branch_deleted"


@dataclass(frozen=True, slots=True)
class Decision:
    result: Literal["accepted", "ignored"]
    reason: str
    update: RefUpdate | None  # the update on the watched branch, when there is one


def decide(push: Push, watched_key: str, watched_ref: str, *, fold_path_case: bool) -> Decision:
    if not push.updates:
        return Decision("ignored", NO_CHANGES, None)
    ours = [
        u
        for u in push.updates
        if any_matches(u.repo_urls, watched_key, fold_path_case=fold_path_case)
        or (
            u.project is not None
            and not u.repo_urls
            and project_matches(u.project, watched_key, fold_path_case=fold_path_case)
        )
    ]
    if not ours:
        return Decision("ignored", REPO_NOT_WATCHED, None)
    on_branch = [u for u in ours if u.ref == watched_ref]
    if not on_branch:
        reason = TAG_PUSH if all(u.is_tag for u in ours) else BRANCH_NOT_WATCHED
        return Decision("ignored", reason, ours[-1])
    update = on_branch[-1]
    if update.is_deletion:
        # Recorded in the audit, never acted on: deleting the branch must not empty the fleet.
        return Decision("ignored", BRANCH_DELETED, update)
    return Decision("accepted", ACCEPTED, update)
