"""What the pages read and ask for: the `PagesData` protocol the controller implements.

Plain frozen dataclasses in, plain dataclasses out, so a page never reaches into the
controller's internals and a test can serve the pages from a few SQLite tables
(`tests/support/pages_fake.py`, `SqlPagesData`). Secrets (webhook secrets, join tokens, keys)
have no field here: what is not in the read model cannot leak onto a page.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class Action(enum.StrEnum):
    PROMOTE = "promote"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Signals:
    """Golden signals of a group of proxies over one window."""

    error_rate: float  # 0..1, (5xx + connection failures) / all
    p99_ms: float | None  # None: no request in the window
    denials: float  # denied requests per second
    denial_rate: float | None = None  # 0..1, denied / all (the judge's signal), when known
    requests: int | None = None  # requests in the window, when known


@dataclass(frozen=True, slots=True)
class StageView:
    index: int
    name: str  # "1 proxy", "10%", ...
    proxies: int
    # pending | running | paused | passed | failed | skipped | aborted | superseded | not-run
    status: str
    decision: str | None = None  # "promoted", "rolled back: error rate 4.1% > 1%"
    thresholds: dict[str, float] = field(default_factory=dict)
    canary: Signals | None = None
    baseline: Signals | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RolloutView:
    revision_id: int
    commit: str
    # running | paused | rolling_back | done | rolled_back | aborted | superseded
    state: str
    current_stage: int  # 0-based index into stages
    stages: tuple[StageView, ...]
    started_at: datetime
    updated_at: datetime
    detail: str = ""  # one line: what it waits for, why it paused, how it ended
    outcome: str | None = None  # promoted | rolled_back | aborted | superseded, once finished
    bake: tuple[float, float] | None = None  # (seconds baked, seconds the bake lasts) now


@dataclass(frozen=True, slots=True)
class FetchView:
    at: datetime
    ok: bool
    message: str


@dataclass(frozen=True, slots=True)
class RevisionRow:
    id: int
    commit: str
    author: str
    message: str
    trigger: str
    signature: str  # "verified by ...", "unsigned", "refused: ..."
    outcome: str  # deployed | rejected | invalid | failed | superseded | deploying | planned
    detected_at: datetime


@dataclass(frozen=True, slots=True)
class Overview:
    deployed: RevisionRow | None
    rollout: RolloutView | None
    fleet_counts: dict[str, int]  # SYNCED / STALE / NACKED / DISCONNECTED -> count
    pinned: str | None  # why and to what the controller is pinned, or None
    paused: bool
    last_fetch: FetchView | None


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str  # error | warning
    code: str
    message: str
    file: str
    line: int | None


@dataclass(frozen=True, slots=True)
class AccessChange:
    source: str
    destination: str
    change: str  # "now allowed" | "now denied"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One second of a rollout: canary and baseline signals. `t` counts seconds from start;
    `baseline` is None when no proxy was left on the old config (the last stage)."""

    t: int
    canary: Signals
    baseline: Signals | None
    stage: int = 0  # 1-based stage the second belongs to; 0 when not known


@dataclass(frozen=True, slots=True)
class RevisionDetail:
    row: RevisionRow
    findings: tuple[Finding, ...]
    resource_diff: str  # unified diff text of the rendered resources
    blast_radius: tuple[tuple[str, int], ...]  # (service, proxies affected), biggest first
    access_diff: tuple[AccessChange, ...]
    rollout: RolloutView | None
    series: tuple[SeriesPoint, ...]
    access_more: int = 0  # access changes left out of access_diff (the stored list is capped)


@dataclass(frozen=True, slots=True)
class ProxyRow:
    proxy_id: str
    service: str
    version: str | None
    state: str
    last_seen: datetime | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class FleetPage:
    rows: tuple[ProxyRow, ...]
    total: int  # matching the filter


@dataclass(frozen=True, slots=True)
class ActionResult:
    ok: bool
    message: str


FLEET_SORTS = ("proxy", "service", "state", "version", "last_seen")


class PagesData(Protocol):
    """The controller's read model for the pages, and the rollout actions.

    Every method is called from a worker thread (FastAPI runs sync endpoints in a pool),
    must answer quickly (pages promise < 200 ms), and must not return secrets.
    `act` must not write the audit record itself: the pages do, with the actor.
    """

    def overview(self) -> Overview: ...

    def revisions(
        self, *, outcome: str | None, before_id: int | None, limit: int
    ) -> list[RevisionRow]:
        """Newest first; keyset-paged by id (`before_id` = the last id of the previous page)."""
        ...

    def revision(self, revision_id: int) -> RevisionDetail | None: ...

    def rollback_targets(self, *, limit: int) -> list[RevisionRow]:
        """Rollback targets: recent revisions that were deployed, newest first."""
        ...

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
    ) -> FleetPage: ...

    def act(
        self,
        action: Action,
        *,
        actor: str,
        target_revision: int | None,
        reason: str = "",
        fast: bool = False,
    ) -> ActionResult:
        """Carry out an operator action; `ok=False` with a reason when it does not apply.
        `reason` is the operator's note, passed on to the controller's own audit records;
        `fast` (rollback only): deploy the target at once instead of in canary stages."""
        ...
