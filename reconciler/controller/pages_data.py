"""The pages' read model (`reconciler.pages.readmodel.PagesData`) over the controller's state.

Revisions come from the revision store, the fleet from the fleet server's ledger (snapshotted
on the event loop, which owns it), the last fetch from the fetch coordinator's status. The
rollout (`Controller.rollout_status()`) and the pin (`Controller.pin_state()`) are read on the
event loop too, in the same hop as the fleet counts; a finished rollout's last status comes
from the store (`Controller.revision_rollout`). Actions go to `Controller.rollout_action` /
`Controller.rollback` with the signed-in actor, so the controller's own records
(rollout.operator, rollback.requested, ...) name who did it. `act` does not audit: the pages
record the request.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.errors import NotFound, RollbackRefused
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
    from reconciler.fleet.ledger import LedgerEntry

FLEET_STATES = ("SYNCED", "STALE", "NACKED", "DISCONNECTED")
_LOOP_TIMEOUT_S = 5.0
# A rollback may abort a rollout and push a revert commit first: give actions longer.
_ACTION_TIMEOUT_S = 60.0


class ControllerPagesData:
    """`PagesData` for `meshcd serve`. Methods run on worker threads."""

    def __init__(self, ctl: Controller) -> None:
        self._ctl = ctl

    # -- fleet and rollout state live on the event loop ---------------------------------------

    def _ledger(self) -> list[LedgerEntry]:
        """The fleet server's ledger, read on the event loop (which owns it). Only the
        entries: frozen, so the filtering, sorting and paging run here, off the loop."""
        fleet = self._ctl.fleet

        async def read() -> list[LedgerEntry]:
            return fleet.ledger()

        return asyncio.run_coroutine_threadsafe(read(), self._ctl.loop).result(
            timeout=_LOOP_TIMEOUT_S)

    def _live_state(
        self,
    ) -> tuple[dict[str, int], dict[str, Any] | None, dict[str, Any] | None]:
        """Fleet counts, the rollout STATUS and the PIN, in one hop to the event loop."""
        ctl = self._ctl

        async def read() -> tuple[dict[str, int], Any, Any]:
            return ctl.fleet_counts(), ctl.rollout_status(), await ctl.pin_state()

        got, status, pin = asyncio.run_coroutine_threadsafe(read(), ctl.loop).result(
            timeout=_LOOP_TIMEOUT_S)
        counts = {state: int(got.get(state, 0)) for state in FLEET_STATES}
        return (counts, status if isinstance(status, dict) else None,
                pin if isinstance(pin, dict) else None)

    def _on_loop(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._ctl.loop).result(
            timeout=_ACTION_TIMEOUT_S)

    # -- PagesData ---------------------------------------------------------------------------

    def overview(self) -> Overview:
        ctl = self._ctl
        deployed = ctl.pipeline.deployed_revision
        counts, status, pin = self._live_state()
        rollout = convert.rollout_view(status) if status is not None else None
        return Overview(
            deployed=convert.revision_row(deployed.to_dict()) if deployed is not None else None,
            rollout=rollout,
            fleet_counts=counts,
            pinned=convert.pinned_text(pin),
            paused=rollout is not None and rollout.state == "paused",
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
        except LookupError:  # NotFound (and the store's KeyError)
            return None
        parts = convert.plan_parts(rev.plan or {})
        status = self._rollout_of(revision_id)
        return RevisionDetail(
            row=convert.revision_row(rev.to_dict()),
            findings=convert.findings(rev.findings or []),
            resource_diff=parts.diff,
            blast_radius=parts.blast_radius,
            access_diff=parts.access,
            rollout=convert.rollout_view(status) if status is not None else None,
            series=convert.series_points((status or {}).get("series") or []),
            access_more=parts.access_more,
        )

    def _rollout_of(self, revision_id: int) -> dict[str, Any] | None:
        """The live STATUS when this revision is rolling out now, else its stored last one.
        Only a page of the revision rolling out asks the loop (for that STATUS alone)."""
        ctl = self._ctl
        active = ctl.canary.active if ctl.canary is not None else None
        if active is not None and active.revision_id == revision_id:

            async def read() -> Any:
                return ctl.rollout_status()

            live = asyncio.run_coroutine_threadsafe(read(), ctl.loop).result(
                timeout=_LOOP_TIMEOUT_S)
            if isinstance(live, dict) and live.get("revisionId") == revision_id:
                return live
        # Not rolling out (or it just finished): its stored last STATUS, if it had a rollout.
        return ctl.revision_rollout(revision_id)

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
        entries = self._ledger()
        if state:
            entries = [e for e in entries if e.state == state]
        if service:
            entries = [e for e in entries if e.service == service]
        if search:
            entries = [e for e in entries if e.proxy_id.startswith(search)]
        # The ledger comes sorted by proxy id; the sort is stable, so ties stay in that order.
        entries.sort(key=_sort_key(sort), reverse=descending)
        start = max(0, offset)
        shown = entries[start:start + max(0, limit)]
        return FleetPage(rows=tuple(_proxy_row(e) for e in shown), total=len(entries))

    def act(
        self,
        action: Action,
        *,
        actor: str,
        target_revision: int | None,
        reason: str = "",
        fast: bool = False,
    ) -> ActionResult:
        ctl = self._ctl
        if action is Action.ROLLBACK:
            try:
                answer = self._on_loop(ctl.rollback(target_revision, fast=fast, revert=False,
                                                    actor=actor, reason=reason))
            except (RollbackRefused, NotFound) as exc:
                return ActionResult(ok=False, message=f"rollback refused: {exc}")
            return ActionResult(ok=True, message=convert.rollback_message(answer))
        accepted, message = self._on_loop(ctl.rollout_action(action.value, actor, reason))
        return ActionResult(ok=bool(accepted), message=str(message))


_EPOCH = datetime.fromtimestamp(0, UTC)


def _proxy_row(e: LedgerEntry) -> ProxyRow:
    """`convert.proxy_row(e.to_dict())` without the detour through ISO text."""
    return ProxyRow(proxy_id=e.proxy_id, service=e.service,
                    version=e.acked_version or e.desired_version, state=str(e.state),
                    last_seen=convert.parse_time(e.last_seen), last_error=e.last_error)


def _sort_key(sort: str) -> Any:
    """Sort keys of ledger entries, the same as of their `ProxyRow`s."""
    if sort == "service":
        return lambda e: (e.service, e.proxy_id)
    if sort == "state":
        return lambda e: (str(e.state), e.proxy_id)
    if sort == "version":
        return lambda e: (e.acked_version or e.desired_version or "", e.proxy_id)
    if sort == "last_seen":
        return lambda e: (convert.parse_time(e.last_seen) or _EPOCH, e.proxy_id)
    return lambda e: (e.proxy_id,)
