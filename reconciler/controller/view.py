"""The controller's one read model: status, fleet, revisions, rollout and pin, for the JSON
API (`ControllerView`, on the event loop) and for the pages (`PagesView`, the pages'
`reconciler.pages.readmodel.PagesData`, on worker threads).

It is handed its parts (the pipeline, which holds the deployed revision and the pin; the
revision store; the fleet server, whose state belongs to the event loop; the canary deployer;
the fetch coordinator's status), never the controller. Revisions come from the store, the
fleet from the ledger (snapshotted on the loop), the live rollout from the canary deployer, a
finished rollout's last status from the store. The pages' actions go to
`reconciler.controller.commands.Commands` with the signed-in actor; `act` does not audit: the
pages record the request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.controller.commands import Commands
from reconciler.errors import NotFound, RollbackRefused
from reconciler.fleet import FleetServer
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
from reconciler.revisions import Pipeline, Revision, RevisionStore
from reconciler.revisions.canary import CanaryDeployer
from reconciler.source.backoff import FetchStatus

if TYPE_CHECKING:
    from reconciler.fleet.ledger import LedgerEntry

FLEET_STATES = ("SYNCED", "STALE", "NACKED", "DISCONNECTED")
_LOOP_TIMEOUT_S = 5.0
# A rollback may abort a rollout and push a revert commit first: give actions longer.
_ACTION_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Identity:
    """What the status names: set once at start-up."""

    strategy: str
    repo: str
    branch: str
    trust_domain: str
    epoch: int


@dataclass
class ControllerView:
    """The read side of the API. `status`, `proxies`, `rollout` and `pin` run on the event
    loop (which owns the fleet and the rollout); `revisions`, `revision` and
    `revision_rollout` read the store (call them in a thread)."""

    identity: Identity
    pipeline: Pipeline
    revisions_store: RevisionStore
    fleet: FleetServer
    canary: CanaryDeployer | None
    fetch_status: Callable[[], FetchStatus]
    urls: Callable[[], dict[str, str]]
    # Facts other shells own, added to the status as they are: the branch's state (the
    # source), refused webhook deliveries (the receiver's audit), health (the listeners and
    # the store).
    facts: Callable[[], dict[str, Any]] = dict

    # -- on the loop ---------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        deployed = self.pipeline.deployed_revision
        current_id = self.pipeline.current.id if self.pipeline.current is not None else None
        proxies = self.fleet.counts()
        store = self.revisions_store

        def from_store() -> tuple[Revision | None, Revision | None, dict[str, int]]:
            current = None
            if current_id is not None:
                with contextlib.suppress(LookupError):
                    current = store.get(current_id)
            return current, store.latest(), store.counts()

        current, latest, counts = await asyncio.to_thread(from_store)
        live = self.rollout()
        rollout = None if live is None else {
            "revisionId": live["revisionId"], "commit": live["commit"], "phase": live["phase"],
            "stage": live["stage"], "stages": len(live["stages"]),
            "canaries": len(live["canaries"])}
        ident = self.identity
        return {
            "strategy": ident.strategy,
            "rollout": rollout,
            "pin": self.pin(),
            "epoch": ident.epoch,
            "repo": ident.repo,
            "branch": ident.branch,
            "trustDomain": ident.trust_domain,
            "deployed": deployed.summary() if deployed is not None else None,
            "deployState": str(current.status) if current is not None else "idle",
            "current": current.summary() if current is not None else None,
            "latest": latest.summary() if latest is not None else None,
            "fetch": self.fetch_status().to_dict(),
            "proxies": proxies,
            "revisions": counts,
            **self.facts(),
            "urls": self.urls(),
        }

    def proxies(self) -> dict[str, Any]:
        return {"proxies": [e.to_dict() for e in self.fleet.ledger()],
                "counts": self.fleet.counts()}

    def rollout(self) -> dict[str, Any] | None:
        return self.canary.status() if self.canary is not None else None

    def rolling_out(self) -> int | None:
        """The revision a canary rollout runs for now."""
        active = self.canary.active if self.canary is not None else None
        return active.revision_id if active is not None else None

    def pin(self) -> dict[str, Any] | None:
        pin = self.pipeline.pin  # held in memory by its one writer, the revision queue
        return pin.to_dict() if pin is not None else None

    # -- the store (blocking) -------------------------------------------------------------

    def revisions(self, *, limit: int, before_id: int | None = None,
                  status: str | None = None) -> list[Revision]:
        return self.revisions_store.list(limit=limit, before_id=before_id, status=status)

    def revision(self, rev_id: int) -> Revision:
        try:
            return self.revisions_store.get(rev_id)
        except LookupError:  # the store's KeyError
            raise NotFound(f"no revision {rev_id}") from None

    def revision_rollout(self, rev_id: int, *, running: int | None) -> dict[str, Any] | None:
        """The last stored status of a revision's rollout; None while it runs (`running`:
        the revision rolling out, read on the loop; its live status is `rollout()`)."""
        if running == rev_id:
            return None
        saved = self.revisions_store.load_rollout(rev_id)
        return None if saved is None else dict(saved[1])


class PagesView:
    """`PagesData` for `meshcd serve`, over the same read model. Methods run on worker
    threads; what belongs to the loop is read there in one hop."""

    def __init__(self, view: ControllerView, commands: Commands,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._view = view
        self._commands = commands
        self._loop = loop

    # -- fleet and rollout state live on the event loop ---------------------------------------

    def _ledger(self) -> list[LedgerEntry]:
        """The fleet server's ledger, read on the event loop (which owns it). Only the
        entries: frozen, so the filtering, sorting and paging run here, off the loop."""
        fleet = self._view.fleet

        async def read() -> list[LedgerEntry]:
            return fleet.ledger()

        return asyncio.run_coroutine_threadsafe(read(), self._loop).result(
            timeout=_LOOP_TIMEOUT_S)

    def _live_state(
        self,
    ) -> tuple[dict[str, int], dict[str, Any] | None, dict[str, Any] | None,
               Revision | None]:
        """Fleet counts, the rollout STATUS, the PIN and the deployed revision, in one hop to
        the event loop."""
        view = self._view

        async def read() -> tuple[dict[str, int], Any, Any, Revision | None]:
            return (view.fleet.counts(), view.rollout(), view.pin(),
                    view.pipeline.deployed_revision)

        got, status, pin, deployed = asyncio.run_coroutine_threadsafe(read(), self._loop).result(
            timeout=_LOOP_TIMEOUT_S)
        counts = {state: int(got.get(state, 0)) for state in FLEET_STATES}
        return (counts, status if isinstance(status, dict) else None,
                pin if isinstance(pin, dict) else None, deployed)

    def _on_loop(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(
            timeout=_ACTION_TIMEOUT_S)

    # -- PagesData ---------------------------------------------------------------------------

    def overview(self) -> Overview:
        counts, status, pin, deployed = self._live_state()
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
        status = self._view.fetch_status()
        if status.last_attempt is None:
            return None
        at = datetime.fromtimestamp(status.last_attempt, UTC)
        if status.consecutive_failures == 0:
            return FetchView(at=at, ok=True, message=f"fetched {self._view.identity.repo}")
        return FetchView(at=at, ok=False, message=(
            f"{status.consecutive_failures} failed fetch(es): {status.last_error or 'unknown'}"))

    def revisions(
        self, *, outcome: str | None, before_id: int | None, limit: int
    ) -> list[RevisionRow]:
        revs = self._view.revisions(limit=limit, before_id=before_id, status=outcome)
        return [convert.revision_row(r.to_dict()) for r in revs]

    def revision(self, revision_id: int) -> RevisionDetail | None:
        try:
            rev = self._view.revision(revision_id)
        except NotFound:
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
        view = self._view
        running = view.rolling_out()
        if running == revision_id:

            async def read() -> Any:
                return view.rollout()

            live = asyncio.run_coroutine_threadsafe(read(), self._loop).result(
                timeout=_LOOP_TIMEOUT_S)
            if isinstance(live, dict) and live.get("revisionId") == revision_id:
                return live
        # Not rolling out (or it just finished): its stored last STATUS, if it had a rollout.
        return view.revision_rollout(revision_id, running=None)

    def rollback_targets(self, *, limit: int) -> list[RevisionRow]:
        revs = self._view.revisions(limit=limit, status="deployed")
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
        commands = self._commands
        if action is Action.ROLLBACK:
            try:
                answer = self._on_loop(commands.rollback(target_revision, fast=fast,
                                                         revert=False, actor=actor,
                                                         reason=reason))
            except (RollbackRefused, NotFound) as exc:
                return ActionResult(ok=False, message=f"rollback refused: {exc}")
            return ActionResult(ok=True, message=convert.rollback_message(answer))
        accepted, message = self._on_loop(commands.rollout_action(action.value, actor,
                                                                  reason))
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
