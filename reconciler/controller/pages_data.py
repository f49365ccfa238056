"""The pages' read model (`reconciler.pages.readmodel.PagesData`) over the controller's state.

Revisions come from the revision store, the fleet from the fleet server's ledger (snapshotted
on the event loop, which owns it), the last fetch from the fetch coordinator's status. There is
no canary engine yet (#6): the overview shows no rollout and every action answers that it is
not available, without doing anything. `act` does not audit: the pages record the request.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.pages import convert
from reconciler.pages.readmodel import (
    Action,
    ActionResult,
    FetchView,
    FleetPage,
    Overview,
    ProxyRow,
    RevisionDetail,
    RevisionRow,
)

if TYPE_CHECKING:
    from reconciler.controller.service import Controller

FLEET_STATES = ("SYNCED", "STALE", "NACKED", "DISCONNECTED")
NO_ROLLOUT = ("no rollout in progress: {action} is not available until canary rollouts are "
              "wired into the controller (this controller deploys all at once)")
_LOOP_TIMEOUT_S = 5.0


class ControllerPagesData:
    """`PagesData` for `meshcd serve`. Methods run on worker threads."""

    def __init__(self, ctl: Controller) -> None:
        self._ctl = ctl

    # -- fleet state lives on the event loop --------------------------------------------------

    def _fleet_snapshot(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        ctl = self._ctl

        async def snapshot() -> tuple[list[dict[str, Any]], dict[str, int]]:
            return ctl.proxies(), ctl.fleet_counts()

        future = asyncio.run_coroutine_threadsafe(snapshot(), ctl.loop)
        return future.result(timeout=_LOOP_TIMEOUT_S)

    def _fleet_counts(self) -> dict[str, int]:
        ctl = self._ctl

        async def counts() -> dict[str, int]:
            return ctl.fleet_counts()

        got = asyncio.run_coroutine_threadsafe(counts(), ctl.loop).result(timeout=_LOOP_TIMEOUT_S)
        return {state: int(got.get(state, 0)) for state in FLEET_STATES}

    # -- PagesData ---------------------------------------------------------------------------

    def overview(self) -> Overview:
        ctl = self._ctl
        deployed = ctl.pipeline.deployed_revision
        return Overview(
            deployed=convert.revision_row(deployed.to_dict()) if deployed is not None else None,
            rollout=None,  # no canary engine: deployments are all at once
            fleet_counts=self._fleet_counts(),
            pinned=None,
            paused=False,
            last_fetch=self._last_fetch(),
        )

    def _last_fetch(self) -> FetchView | None:
        status = self._ctl.coordinator.status
        if status.last_attempt is None:
            return None
        at = datetime.fromtimestamp(status.last_attempt, UTC)
        if status.consecutive_failures == 0:
            return FetchView(at=at, ok=True, message=f"fetched {self._ctl.mirror_display}")
        return FetchView(at=at, ok=False, message=(
            f"{status.consecutive_failures} failed fetch(es): {status.last_error or 'unknown'}"))

    def revisions(
        self, *, outcome: str | None, before_id: int | None, limit: int
    ) -> list[RevisionRow]:
        revs = self._ctl.revisions.list(limit=limit, before_id=before_id, status=outcome)
        return [convert.revision_row(r.to_dict()) for r in revs]

    def revision(self, revision_id: int) -> RevisionDetail | None:
        try:
            rev = self._ctl.revisions.get(revision_id)
        except KeyError:
            return None
        plan = rev.plan or {}
        access = plan.get("access") or {}
        # The stored plan summary keeps access counts only; lists are converted when present.
        listed = {k: v for k, v in access.items() if isinstance(v, list)}
        return RevisionDetail(
            row=convert.revision_row(rev.to_dict()),
            findings=convert.findings(rev.findings or []),
            resource_diff=str(plan.get("text", "")),
            blast_radius=(),
            access_diff=convert.access_changes(listed),
            rollout=None,
            series=(),
        )

    def rollback_targets(self, *, limit: int) -> list[RevisionRow]:
        revs = self._ctl.revisions.list(limit=limit, status="deployed")
        return [convert.revision_row(r.to_dict()) for r in revs]

    def fleet(
        self,
        *,
        state: str | None,
        service: str | None,
        search: str | None,
        sort: str,
        descending: bool,
        offset: int,
        limit: int,
    ) -> FleetPage:
        entries, _ = self._fleet_snapshot()
        rows = [convert.proxy_row(e) for e in entries]
        if state:
            rows = [r for r in rows if r.state == state]
        if service:
            rows = [r for r in rows if r.service == service]
        if search:
            rows = [r for r in rows if r.proxy_id.startswith(search)]
        rows.sort(key=_sort_key(sort), reverse=descending)
        start = max(0, offset)
        return FleetPage(rows=tuple(rows[start:start + max(0, limit)]), total=len(rows))

    def act(self, action: Action, *, actor: str, target_revision: int | None) -> ActionResult:
        return ActionResult(ok=False, message=NO_ROLLOUT.format(action=action.value))


_EPOCH = datetime.fromtimestamp(0, UTC)


def _sort_key(sort: str) -> Any:
    def key(r: ProxyRow) -> tuple[Any, ...]:
        if sort == "service":
            return (r.service, r.proxy_id)
        if sort == "state":
            return (r.state, r.proxy_id)
        if sort == "version":
            return (r.version or "", r.proxy_id)
        if sort == "last_seen":
            return (r.last_seen or _EPOCH, r.proxy_id)
        return (r.proxy_id,)

    return key

