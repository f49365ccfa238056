"""The revisions table and the controller's small key/value state (leadership epoch, the
deployed revision, the trust domain), in the same database as the audit trail.

SQLAlchemy Core over `reconciler.store` engines (SQLite by default, PostgreSQL by URL).
Database trouble raises `reconciler.store.StoreUnavailable` (temporary).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reconciler.revisions.model import TERMINAL, Revision, RevisionNotFound, RevisionStatus
from reconciler.store.engine import open_engine, read_transaction, write_transaction
from reconciler.store.timefmt import format_instant, parse_instant

SCHEMA_LOCK_KEY = 0x6D657368_72657600
EPOCH_LOCK_KEY = 0x6D657368_65706F00

metadata = sa.MetaData()

revisions = sa.Table(
    "revisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("commit_id", sa.String(64), nullable=False),
    sa.Column("branch", sa.String(255), nullable=False),
    sa.Column("author", sa.String(512), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detected_at", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("findings", sa.Text, nullable=False),
    sa.Column("plan", sa.Text, nullable=False),
    sa.Column("deploy", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Index("ix_revisions_status", "status", "id"),
)

controller_state = sa.Table(
    "controller_state",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
# One row per revision that had a canary rollout: the engine's state (to resume after a
# restart) and its last status (what `GET /api/revisions/{id}/rollout` and the pages show).
rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("revision_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("commit_id", sa.String(64), nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
)
_R = revisions
_S = controller_state
_RO = rollouts


class RevisionStore:
    def __init__(self, engine: Engine, *, create_schema: bool = True) -> None:
        self.engine = engine
        if create_schema:
            with write_transaction(engine, lock_key=SCHEMA_LOCK_KEY) as connection:
                metadata.create_all(connection, checkfirst=True)

    @classmethod
    def open(cls, url: str) -> RevisionStore:
        return cls(open_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    # -- revisions ---------------------------------------------------------------------------

    def add(self, rev: Revision) -> Revision:
        """Insert a new revision; returns it with its id."""
        row = _row(rev)
        row.pop("id")
        with write_transaction(self.engine, lock_key=SCHEMA_LOCK_KEY) as connection:
            result = connection.execute(_R.insert().values(**row))
            new_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        assert new_id is not None
        return self.get(int(new_id))

    def update(self, rev: Revision) -> Revision:
        row = _row(rev)
        with write_transaction(self.engine) as connection:
            connection.execute(_R.update().where(_R.c.id == rev.id).values(**row))
        return rev

    def get(self, rev_id: int) -> Revision:
        with read_transaction(self.engine) as connection:
            row = connection.execute(sa.select(_R).where(_R.c.id == rev_id)).first()
        if row is None:
            raise RevisionNotFound(rev_id)
        return _revision(row)

    def list(self, *, limit: int = 50, before_id: int | None = None,
             status: str | None = None, exclude_trigger: str | None = None) -> list[Revision]:
        """Newest first, keyset-paged by id."""
        query = sa.select(_R).order_by(_R.c.id.desc()).limit(max(1, min(limit, 1000)))
        if exclude_trigger is not None:
            query = query.where(_R.c.trigger != exclude_trigger)
        if before_id is not None:
            query = query.where(_R.c.id < before_id)
        if status is not None:
            query = query.where(_R.c.status == status)
        with read_transaction(self.engine) as connection:
            return [_revision(r) for r in connection.execute(query).all()]

    def unfinished(self) -> builtins.list[Revision]:
        query = sa.select(_R).where(_R.c.status.not_in([str(s) for s in TERMINAL])).order_by(_R.c.id)
        with read_transaction(self.engine) as connection:
            return [_revision(r) for r in connection.execute(query).all()]

    def latest(self, *, exclude_trigger: str | None = None) -> Revision | None:
        found = self.list(limit=1, exclude_trigger=exclude_trigger)
        return found[0] if found else None

    def counts(self) -> dict[str, int]:
        query = sa.select(_R.c.status, sa.func.count()).group_by(_R.c.status)
        with read_transaction(self.engine) as connection:
            got = {str(s): int(n) for s, n in connection.execute(query).all()}
        return {str(s): got.get(str(s), 0) for s in RevisionStatus}

    # -- rollouts ------------------------------------------------------------------------------

    def save_rollout(self, revision_id: int, commit: str, state: Any, status: Any,
                     updated_at: str) -> None:
        """Insert or replace a revision's rollout row (`state`, `status`: JSON-able)."""
        row = {"commit_id": commit, "phase": str(state.get("phase", "")),
               "state": json.dumps(state, sort_keys=True),
               "status": json.dumps(status, sort_keys=True), "updated_at": updated_at}
        with write_transaction(self.engine) as connection:
            done = connection.execute(_RO.update().where(_RO.c.revision_id == revision_id)
                                      .values(**row))
            if done.rowcount == 0:
                connection.execute(_RO.insert().values(revision_id=revision_id, **row))

    def load_rollout(self, revision_id: int) -> tuple[Any, Any] | None:
        """(state, status) of a revision's rollout, or None."""
        with read_transaction(self.engine) as connection:
            row = connection.execute(sa.select(_RO.c.state, _RO.c.status)
                                     .where(_RO.c.revision_id == revision_id)).first()
        return None if row is None else (json.loads(row[0]), json.loads(row[1]))

    # -- controller state -------------------------------------------------------------------

    def get_state(self, key: str) -> Any:
        with read_transaction(self.engine) as connection:
            row = connection.execute(sa.select(_S.c.value).where(_S.c.key == key)).first()
        return None if row is None else json.loads(row[0])

    def set_state(self, key: str, value: Any) -> None:
        text = json.dumps(value, sort_keys=True)
        with write_transaction(self.engine, lock_key=EPOCH_LOCK_KEY) as connection:
            done = connection.execute(_S.update().where(_S.c.key == key).values(value=text))
            if done.rowcount == 0:
                connection.execute(_S.insert().values(key=key, value=text))

    def next_epoch(self) -> int:
        """Increment and return the leadership epoch, atomically (one writer at a time)."""
        with write_transaction(self.engine, lock_key=EPOCH_LOCK_KEY) as connection:
            row = connection.execute(sa.select(_S.c.value).where(_S.c.key == "epoch")).first()
            epoch = (int(json.loads(row[0])) if row is not None else 0) + 1
            if row is None:
                connection.execute(_S.insert().values(key="epoch", value=json.dumps(epoch)))
            else:
                connection.execute(_S.update().where(_S.c.key == "epoch")
                                   .values(value=json.dumps(epoch)))
        return epoch


def _row(rev: Revision) -> dict[str, Any]:
    return {
        "id": rev.id, "commit_id": rev.commit, "branch": rev.branch, "author": rev.author[:512],
        "message": rev.message, "trigger": rev.trigger, "status": str(rev.status),
        "detected_at": format_instant(rev.detected_at),
        "updated_at": format_instant(rev.updated_at),
        "signature": json.dumps(rev.signature, sort_keys=True),
        "findings": json.dumps(rev.findings, sort_keys=True),
        "plan": json.dumps(rev.plan, sort_keys=True),
        "deploy": json.dumps(rev.deploy, sort_keys=True),
        "reason": rev.reason,
    }


def _revision(row: Any) -> Revision:
    return Revision(
        id=int(row.id), commit=row.commit_id, branch=row.branch, author=row.author,
        message=row.message, trigger=row.trigger, status=RevisionStatus(row.status),
        detected_at=parse_instant(row.detected_at), updated_at=parse_instant(row.updated_at),
        signature=json.loads(row.signature), findings=json.loads(row.findings),
        plan=json.loads(row.plan), deploy=json.loads(row.deploy), reason=row.reason,
    )


def as_rows(revs: Sequence[Revision]) -> list[dict[str, Any]]:
    return [r.summary() for r in revs]


__all__ = ["RevisionStore", "as_rows"]
