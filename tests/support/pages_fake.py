"""`SqlPagesData`: a `PagesData` over a few tables of its own (SQLite or PostgreSQL).

For tests, the benchmark and a demo before the controller implements `PagesData` itself.
Tables are prefixed `pd_` so they never collide with the controller's. Besides the read
model it has the writers a test uses to drive a rollout (`start_rollout`, `add_points`,
`set_stage`, ...), and a bulk `seed` for the benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from reconciler.pages.readmodel import (
    FLEET_SORTS,
    AccessChange,
    Action,
    ActionResult,
    FetchView,
    Finding,
    FleetPage,
    Overview,
    PagesData,
    ProxyRow,
    RevisionDetail,
    RevisionRow,
    RolloutView,
    SeriesPoint,
    Signals,
    StageView,
)
from reconciler.store.engine import read_transaction, write_transaction
from reconciler.store.timefmt import format_instant, parse_instant

FLEET_STATES = ("SYNCED", "STALE", "NACKED", "DISCONNECTED")
metadata = sa.MetaData()

revisions = sa.Table(
    "pd_revisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("commit", sa.String(64), nullable=False),
    sa.Column("author", sa.String(256), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("signature", sa.String(256), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("detected_at", sa.String(32), nullable=False),
    sa.Column("findings", sa.Text, nullable=False, default="[]"),
    sa.Column("resource_diff", sa.Text, nullable=False, default=""),
    sa.Column("blast", sa.Text, nullable=False, default="[]"),
    sa.Column("access", sa.Text, nullable=False, default="[]"),
    sa.Index("ix_pd_revisions_outcome_id", "outcome", "id"),
)
proxies = sa.Table(
    "pd_proxies",
    metadata,
    sa.Column("proxy_id", sa.String(128), primary_key=True),
    sa.Column("service", sa.String(128), nullable=False),
    sa.Column("version", sa.String(64), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("last_seen", sa.String(32), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("ix_pd_proxies_service", "service", "proxy_id"),
    sa.Index("ix_pd_proxies_state", "state", "proxy_id"),
    sa.Index("ix_pd_proxies_version", "version", "proxy_id"),
    sa.Index("ix_pd_proxies_last_seen", "last_seen", "proxy_id"),
)
rollouts = sa.Table(
    "pd_rollouts",
    metadata,
    sa.Column("revision_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("current_stage", sa.Integer, nullable=False),
    sa.Column("stages", sa.Text, nullable=False),  # JSON list of stage dicts
    sa.Column("started_at", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
)
series = sa.Table(
    "pd_series",
    metadata,
    sa.Column("revision_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("t", sa.Integer, primary_key=True, autoincrement=False),
    # canary (c_) and baseline (b_) error rate, p99 ms, denials/s at second t
    sa.Column("c_err", sa.Float, nullable=False),
    sa.Column("c_p99", sa.Float, nullable=False),
    sa.Column("c_den", sa.Float, nullable=False),
    sa.Column("b_err", sa.Float, nullable=False),
    sa.Column("b_p99", sa.Float, nullable=False),
    sa.Column("b_den", sa.Float, nullable=False),
)
settings = sa.Table(
    "pd_settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
_R, _P, _O, _S, _K = revisions, proxies, rollouts, series, settings
_FLEET_COLUMNS = {
    "proxy": _P.c.proxy_id,
    "service": _P.c.service,
    "state": _P.c.state,
    "version": _P.c.version,
    "last_seen": _P.c.last_seen,
}
# Reading the active rollout: the newest one that is not finished.
_ACTIVE = ("running", "paused")


def _t(when: datetime | None) -> str | None:
    return format_instant(when) if when is not None else None


def _dt(text: str | None) -> datetime | None:
    return parse_instant(text) if text else None


class SqlPagesData:
    """The pages' read model and actions over the `pd_*` tables."""

    def __init__(self, engine: Engine, *, clock: Any = None) -> None:
        from datetime import UTC

        self.engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))
        with write_transaction(engine) as connection:
            metadata.create_all(connection, checkfirst=True)

    # -- read model ------------------------------------------------------------------------

    def overview(self) -> Overview:
        with read_transaction(self.engine) as c:
            values = {r.key: r.value for r in c.execute(sa.select(_K.c.key, _K.c.value))}
            deployed = None
            if "deployed" in values:
                row = c.execute(_revision_query().where(_R.c.id == int(values["deployed"]))).first()
                deployed = _row(row) if row is not None else None
            counts = {state: 0 for state in FLEET_STATES}
            for state, n in c.execute(sa.select(_P.c.state, sa.func.count()).group_by(_P.c.state)):
                counts[state] = int(n)
            rollout = _rollout(c, active_only=True)
        fetch = json.loads(values["last_fetch"]) if "last_fetch" in values else None
        return Overview(
            deployed=deployed,
            rollout=rollout,
            fleet_counts=counts,
            pinned=values.get("pinned") or None,
            paused=rollout is not None and rollout.state == "paused",
            last_fetch=FetchView(parse_instant(fetch["at"]), fetch["ok"], fetch["message"])
            if fetch
            else None,
        )

    def revisions(
        self, *, outcome: str | None, before_id: int | None, limit: int
    ) -> list[RevisionRow]:
        query = _revision_query()
        if outcome:
            query = query.where(_R.c.outcome == outcome)
        if before_id is not None:
            query = query.where(_R.c.id < before_id)
        with read_transaction(self.engine) as c:
            return [_row(r) for r in c.execute(query.order_by(_R.c.id.desc()).limit(limit))]

    def rollback_targets(self, *, limit: int) -> list[RevisionRow]:
        return self.revisions(outcome="deployed", before_id=None, limit=limit)

    def revision(self, revision_id: int) -> RevisionDetail | None:
        with read_transaction(self.engine) as c:
            row = c.execute(sa.select(_R).where(_R.c.id == revision_id)).first()
            if row is None:
                return None
            rollout = _rollout(c, revision_id=revision_id)
            points = c.execute(
                sa.select(
                    _S.c.t, _S.c.c_err, _S.c.c_p99, _S.c.c_den, _S.c.b_err, _S.c.b_p99, _S.c.b_den
                )
                .where(_S.c.revision_id == revision_id)
                .order_by(_S.c.t)
            ).all()
        return RevisionDetail(
            row=_row(row),
            findings=tuple(Finding(**f) for f in json.loads(row.findings)),
            resource_diff=row.resource_diff,
            blast_radius=tuple((s, int(n)) for s, n in json.loads(row.blast)),
            access_diff=tuple(AccessChange(**a) for a in json.loads(row.access)),
            rollout=rollout,
            series=tuple(
                SeriesPoint(int(p[0]), Signals(p[1], p[2], p[3]), Signals(p[4], p[5], p[6]))
                for p in points
            ),
        )

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
        if sort not in FLEET_SORTS:
            raise ValueError(f"unknown sort {sort!r}")
        conditions = []
        if state:
            conditions.append(_P.c.state == state)
        if service:
            conditions.append(_P.c.service == service)
        if search:
            # A prefix match keeps the primary-key index usable.
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(_P.c.proxy_id.like(escaped + "%", escape="\\"))
        column = _FLEET_COLUMNS[sort]
        order = [column.desc(), _P.c.proxy_id.desc()] if descending else [column, _P.c.proxy_id]
        query = sa.select(_P).where(*conditions).order_by(*order).offset(offset).limit(limit)
        with read_transaction(self.engine) as c:
            rows = c.execute(query).all()
            total = int(
                c.execute(
                    sa.select(sa.func.count()).select_from(_P).where(*conditions)
                ).scalar_one()
            )
        return FleetPage(
            tuple(
                ProxyRow(r.proxy_id, r.service, r.version, r.state, _dt(r.last_seen), r.last_error)
                for r in rows
            ),
            total,
        )

    def act(
        self,
        action: Action,
        *,
        actor: str,
        target_revision: int | None,
        reason: str = "",
        fast: bool = False,
    ) -> ActionResult:
        now = self._clock()
        with write_transaction(self.engine) as c:
            rollout = _rollout(c, active_only=True)
            if action is Action.ROLLBACK:
                if target_revision is None:
                    return ActionResult(False, "choose a revision to roll back to")
                target = c.execute(
                    sa.select(_R.c.outcome).where(_R.c.id == target_revision)
                ).first()
                if target is None or target.outcome != "deployed":
                    return ActionResult(False, f"revision {target_revision} was never deployed")
                if rollout is not None:
                    self._finish(c, rollout, "rolled_back", now)
                _set(c, "deployed", str(target_revision))
                return ActionResult(True, f"rolling back to revision {target_revision}")
            if rollout is None:
                return ActionResult(False, "no rollout in progress")
            if action is Action.PAUSE:
                if rollout.state != "running":
                    return ActionResult(False, "the rollout is not running")
                self._update(c, rollout.revision_id, now, state="paused")
                return ActionResult(True, "rollout paused")
            if action is Action.RESUME:
                if rollout.state != "paused":
                    return ActionResult(False, "the rollout is not paused")
                self._update(c, rollout.revision_id, now, state="running")
                return ActionResult(True, "rollout resumed")
            if action is Action.ABORT:
                self._finish(c, rollout, "aborted", now)
                c.execute(
                    _R.update().where(_R.c.id == rollout.revision_id).values(outcome="rejected")
                )
                return ActionResult(True, f"rollout of revision {rollout.revision_id} aborted")
            # PROMOTE: pass the current stage, start the next (or finish).
            stages = [_stage_dict(s) for s in rollout.stages]
            index = rollout.current_stage
            stages[index].update(status="passed", decision=f"promoted by {actor}", ended_at=_t(now))
            if index + 1 < len(stages):
                stages[index + 1].update(status="running", started_at=_t(now))
                self._update(
                    c,
                    rollout.revision_id,
                    now,
                    current_stage=index + 1,
                    stages=json.dumps(stages),
                    state="running",
                )
                return ActionResult(
                    True, f"promoted to stage {index + 2} ({stages[index + 1]['name']})"
                )
            self._update(c, rollout.revision_id, now, stages=json.dumps(stages), state="done")
            c.execute(_R.update().where(_R.c.id == rollout.revision_id).values(outcome="deployed"))
            _set(c, "deployed", str(rollout.revision_id))
            return ActionResult(True, f"revision {rollout.revision_id} promoted to the whole fleet")

    def _finish(self, c: Connection, rollout: RolloutView, state: str, now: datetime) -> None:
        stages = [_stage_dict(s) for s in rollout.stages]
        for s in stages:
            if s["status"] == "running":
                s.update(status="failed", decision=state.replace("_", " "), ended_at=_t(now))
            elif s["status"] == "pending":
                s["status"] = "skipped"
        self._update(c, rollout.revision_id, now, state=state, stages=json.dumps(stages))

    def _update(self, c: Connection, revision_id: int, now: datetime, **values: Any) -> None:
        c.execute(
            _O.update().where(_O.c.revision_id == revision_id).values(updated_at=_t(now), **values)
        )

    # -- writers for tests, demos and the benchmark ----------------------------------------

    def add_revision(self, row: RevisionRow, **detail: Any) -> None:
        """Insert a revision; `detail` may carry findings, resource_diff, blast, access (lists)."""
        with write_transaction(self.engine) as c:
            c.execute(_R.insert(), [_revision_values(row, **detail)])

    def add_revisions(self, rows: Iterable[tuple[RevisionRow, dict[str, Any]]]) -> None:
        with write_transaction(self.engine) as c:
            c.execute(_R.insert(), [_revision_values(r, **d) for r, d in rows])

    def set_proxies(self, rows: Sequence[ProxyRow]) -> None:
        """Insert or replace proxies (by id)."""
        with write_transaction(self.engine) as c:
            c.execute(_P.delete().where(_P.c.proxy_id.in_([r.proxy_id for r in rows])))
            c.execute(
                _P.insert(),
                [
                    {
                        "proxy_id": r.proxy_id,
                        "service": r.service,
                        "version": r.version,
                        "state": r.state,
                        "last_seen": _t(r.last_seen),
                        "last_error": r.last_error,
                    }
                    for r in rows
                ],
            )

    def add_proxies_bulk(self, rows: Sequence[ProxyRow], batch: int = 5000) -> None:
        for i in range(0, len(rows), batch):
            with write_transaction(self.engine) as c:
                c.execute(
                    _P.insert(),
                    [
                        {
                            "proxy_id": r.proxy_id,
                            "service": r.service,
                            "version": r.version,
                            "state": r.state,
                            "last_seen": _t(r.last_seen),
                            "last_error": r.last_error,
                        }
                        for r in rows[i : i + batch]
                    ],
                )

    def set_deployed(self, revision_id: int) -> None:
        with write_transaction(self.engine) as c:
            _set(c, "deployed", str(revision_id))

    def set_pinned(self, text: str | None) -> None:
        with write_transaction(self.engine) as c:
            _set(c, "pinned", text or "")

    def set_last_fetch(self, at: datetime, ok: bool, message: str) -> None:
        with write_transaction(self.engine) as c:
            _set(
                c,
                "last_fetch",
                json.dumps({"at": format_instant(at), "ok": ok, "message": message}),
            )

    def start_rollout(
        self, revision_id: int, stages: Sequence[StageView], *, now: datetime
    ) -> None:
        """Begin a rollout of `revision_id` with `stages` (the first one running)."""
        dicts = [_stage_dict(s) for s in stages]
        if dicts:
            dicts[0].update(status="running", started_at=_t(now))
        with write_transaction(self.engine) as c:
            c.execute(_O.delete().where(_O.c.revision_id == revision_id))
            c.execute(
                _O.insert().values(
                    revision_id=revision_id,
                    state="running",
                    current_stage=0,
                    stages=json.dumps(dicts),
                    started_at=_t(now),
                    updated_at=_t(now),
                )
            )
            c.execute(_R.update().where(_R.c.id == revision_id).values(outcome="deploying"))

    def set_stage_signals(
        self, revision_id: int, index: int, canary: Signals, baseline: Signals
    ) -> None:
        with write_transaction(self.engine) as c:
            row = c.execute(
                sa.select(_O.c.stages).where(_O.c.revision_id == revision_id)
            ).scalar_one()
            stages = json.loads(row)
            stages[index]["canary"] = [canary.error_rate, canary.p99_ms, canary.denials]
            stages[index]["baseline"] = [baseline.error_rate, baseline.p99_ms, baseline.denials]
            c.execute(
                _O.update().where(_O.c.revision_id == revision_id).values(stages=json.dumps(stages))
            )

    def add_points(self, revision_id: int, points: Sequence[SeriesPoint]) -> None:
        with write_transaction(self.engine) as c:
            c.execute(
                _S.insert(),
                [
                    {
                        "revision_id": revision_id,
                        "t": p.t,
                        "c_err": p.canary.error_rate,
                        "c_p99": p.canary.p99_ms,
                        "c_den": p.canary.denials,
                        "b_err": p.baseline.error_rate,
                        "b_p99": p.baseline.p99_ms,
                        "b_den": p.baseline.denials,
                    }
                    for p in points
                    if p.baseline is not None  # the demo always has a baseline
                ],
            )


def _set(c: Connection, key: str, value: str) -> None:
    c.execute(_K.delete().where(_K.c.key == key))
    c.execute(_K.insert().values(key=key, value=value))


def _revision_query() -> sa.Select[Any]:
    return sa.select(
        _R.c.id,
        _R.c.commit,
        _R.c.author,
        _R.c.message,
        _R.c.trigger,
        _R.c.signature,
        _R.c.outcome,
        _R.c.detected_at,
    )


def _row(r: Any) -> RevisionRow:
    return RevisionRow(
        int(r.id),
        r.commit,
        r.author,
        r.message,
        r.trigger,
        r.signature,
        r.outcome,
        parse_instant(r.detected_at),
    )


def _revision_values(row: RevisionRow, **detail: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "commit": row.commit,
        "author": row.author,
        "message": row.message,
        "trigger": row.trigger,
        "signature": row.signature,
        "outcome": row.outcome,
        "detected_at": format_instant(row.detected_at),
        "findings": json.dumps(detail.get("findings", [])),
        "resource_diff": detail.get("resource_diff", ""),
        "blast": json.dumps(detail.get("blast", [])),
        "access": json.dumps(detail.get("access", [])),
    }


def _stage_dict(s: StageView) -> dict[str, Any]:
    return {
        "index": s.index,
        "name": s.name,
        "proxies": s.proxies,
        "status": s.status,
        "decision": s.decision,
        "thresholds": dict(s.thresholds),
        "canary": [s.canary.error_rate, s.canary.p99_ms, s.canary.denials] if s.canary else None,
        "baseline": [s.baseline.error_rate, s.baseline.p99_ms, s.baseline.denials]
        if s.baseline
        else None,
        "started_at": _t(s.started_at),
        "ended_at": _t(s.ended_at),
    }


def _stage(d: dict[str, Any]) -> StageView:
    return StageView(
        index=d["index"],
        name=d["name"],
        proxies=d["proxies"],
        status=d["status"],
        decision=d.get("decision"),
        thresholds=d.get("thresholds") or {},
        canary=Signals(*d["canary"]) if d.get("canary") else None,
        baseline=Signals(*d["baseline"]) if d.get("baseline") else None,
        started_at=_dt(d.get("started_at")),
        ended_at=_dt(d.get("ended_at")),
    )


def _rollout(
    c: Connection, *, revision_id: int | None = None, active_only: bool = False
) -> RolloutView | None:
    query = sa.select(_O, _R.c.commit).select_from(_O.join(_R, _R.c.id == _O.c.revision_id))
    if revision_id is not None:
        query = query.where(_O.c.revision_id == revision_id)
    if active_only:
        query = query.where(_O.c.state.in_(_ACTIVE))
    row = c.execute(query.order_by(_O.c.updated_at.desc()).limit(1)).first()
    if row is None:
        return None
    return RolloutView(
        revision_id=int(row.revision_id),
        commit=row.commit,
        state=row.state,
        current_stage=int(row.current_stage),
        stages=tuple(_stage(d) for d in json.loads(row.stages)),
        started_at=parse_instant(row.started_at),
        updated_at=parse_instant(row.updated_at),
    )


if TYPE_CHECKING:  # mypy checks that the demo really implements the protocol

    def _implements(data: SqlPagesData) -> PagesData:
        return data
