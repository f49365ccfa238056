"""What operators ask of the controller: roll back (and pin), unpin, and the rollout actions
(promote, promote-full, pause, resume, abort). One place for the JSON API and the pages.

The choice of a rollback target is a pure function (`rollback_target`); the rest hands
events to the revision queue (through the pipeline) or commands to the running rollout (the
deployer). Refusals raise `reconciler.errors.RollbackRefused` / `NotFound`; the API maps
them to HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.audit import AuditLog
from reconciler.errors import NotFound, RollbackRefused
from reconciler.revisions import Deployer, Pipeline, Revision, RevisionStatus, RevisionStore


def rollback_target(*, asked: Revision | None, asked_id: int | None, deployed: Revision | None,
                    running: bool, candidates: Sequence[Revision]) -> Revision:
    """The revision `meshcd rollback` goes back to: the one asked for (it must have been
    deployed); during a rollout, the deployed one (the rollout is aborted and the fleet stays
    there); else the newest deployed revision older than the deployed one with another
    commit. `candidates`: deployed revisions, newest first."""
    if asked_id is not None:
        if asked is None:
            raise NotFound(f"no revision {asked_id}")
        if asked.status is not RevisionStatus.DEPLOYED:
            raise RollbackRefused(f"revision {asked_id} was never deployed (it is "
                                  f"{asked.status}); roll back to a revision that was")
        return asked
    if running and deployed is not None:
        return deployed
    current = deployed.commit if deployed is not None else None
    found = next((r for r in candidates if r.commit != current
                  and (deployed is None or r.id < deployed.id)), None)
    if found is None:
        raise RollbackRefused("nothing to roll back to: no earlier revision was deployed")
    return found


@dataclass
class Commands:
    """The operators' use cases over the parts they need (passed in, none looked up)."""

    pipeline: Pipeline
    deployer: Deployer
    revisions: RevisionStore
    audit: AuditLog
    clock: Callable[[], datetime]
    branch: str
    rollout_running: Callable[[], bool]  # a canary rollout runs now
    push_revert: Callable[[Revision, str, str], Any]  # async (target, actor, reason) -> commit

    async def rollout_action(self, action: str, actor: str,
                             reason: str = "") -> tuple[bool, str]:
        """promote | promote-full | pause | resume | abort. `resume` with no rollout running
        and the fleet pinned unpins it."""
        if action == "resume" and not self.rollout_running():
            if self.pipeline.pin is None:
                return False, "no rollout in progress and the fleet is not pinned"
            return True, self.unpin(actor)
        return await self.deployer.operator(action, actor, reason)

    def unpin(self, actor: str) -> str:
        held = self.pipeline.unpin(actor)
        if held is not None:
            return (f"unpinned; deploying the newest held revision {held.id} "
                    f"({held.commit[:12]})")
        return "unpinned; new commits deploy again"

    async def rollback(self, to: int | None, *, fast: bool, revert: bool, actor: str,
                       reason: str = "") -> dict[str, Any]:
        """Deploy an earlier good revision (canaried unless `fast`) and pin the fleet there;
        `revert` also pushes a commit with that revision's tree to the branch first."""
        running = self.rollout_running()

        def read() -> tuple[Revision | None, list[Revision]]:
            asked = None
            if to is not None:
                try:
                    asked = self.revisions.get(to)
                except (KeyError, NotFound):
                    asked = None
            deployed = [] if to is not None else self.revisions.list(limit=200,
                                                                      status="deployed")
            return asked, deployed

        asked, candidates = await asyncio.to_thread(read)
        target = rollback_target(asked=asked, asked_id=to,
                                 deployed=self.pipeline.deployed_revision, running=running,
                                 candidates=candidates)
        revert_commit: str | None = None
        if revert:
            revert_commit = await self.push_revert(target, actor, reason)
        rev = await self.pipeline.rollback(target, fast=fast, actor=actor, reason=reason,
                                           revert_commit=revert_commit, abort=running)
        how = "all at once" if fast else "in canary stages"
        return {"accepted": True, "revision": rev.id, "commit": target.commit,
                "target": target.id, "revertCommit": revert_commit, "actor": actor,
                "message": (f"rolling back to revision {target.id} ({target.commit[:12]}) "
                            f"{how}; the fleet is pinned there until `meshcd rollout resume`")}
