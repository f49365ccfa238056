"""The fleet ledger's table (`fleet_ledger`), so a restarted controller knows every proxy's
last acked version. SQLAlchemy Core over `reconciler.store` engines (SQLite or PostgreSQL).

Writes are batched by the caller (the fleet server flushes changed rows every half second in
one transaction); `save` is an upsert of many rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from reconciler.fleet.ledger import LedgerEntry, ProxyState
from reconciler.store.engine import open_engine, read_transaction, write_transaction
from reconciler.store.timefmt import format_instant, parse_instant

SCHEMA_LOCK_KEY = 0x6D657368_666C7400

metadata = sa.MetaData()

fleet_ledger = sa.Table(
    "fleet_ledger",
    metadata,
    sa.Column("proxy_id", sa.String(253), primary_key=True),
    sa.Column("service", sa.String(253), nullable=False),
    sa.Column("namespace", sa.String(253), nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("desired_version", sa.String(128), nullable=True),
    sa.Column("desired_revision", sa.String(256), nullable=True),
    sa.Column("sent_nonce", sa.String(256), nullable=True),
    sa.Column("acked_version", sa.String(128), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("connected_at", sa.String(32), nullable=True),
    sa.Column("last_seen", sa.String(32), nullable=True),
)
_T = fleet_ledger
_UPDATABLE = [c.name for c in _T.columns if c.name != "proxy_id"]


class LedgerStore:
    """Load and save ledger entries. Database trouble raises `StoreUnavailable` (temporary)."""

    def __init__(self, engine: Engine, *, create_schema: bool = True) -> None:
        self.engine = engine
        if create_schema:
            with write_transaction(engine, lock_key=SCHEMA_LOCK_KEY) as connection:
                metadata.create_all(connection, checkfirst=True)

    @classmethod
    def open(cls, url: str) -> LedgerStore:
        return cls(open_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    def load(self) -> list[LedgerEntry]:
        with read_transaction(self.engine) as connection:
            rows = connection.execute(sa.select(_T).order_by(_T.c.proxy_id)).all()
        return [_entry(row) for row in rows]

    def save(self, entries: Sequence[LedgerEntry]) -> None:
        if not entries:
            return
        rows = [_row(e) for e in entries]
        with write_transaction(self.engine) as connection:
            insert: Any = (postgresql.insert(_T) if connection.dialect.name == "postgresql"
                           else sqlite.insert(_T))
            stmt = insert.on_conflict_do_update(
                index_elements=[_T.c.proxy_id],
                set_={name: insert.excluded[name] for name in _UPDATABLE},
            )
            connection.execute(stmt, rows)

    def delete(self, proxy_id: str) -> None:
        with write_transaction(self.engine) as connection:
            connection.execute(_T.delete().where(_T.c.proxy_id == proxy_id))


def _row(e: LedgerEntry) -> dict[str, Any]:
    return {
        "proxy_id": e.proxy_id, "service": e.service, "namespace": e.namespace,
        "labels": json.dumps(e.labels, sort_keys=True), "desired_version": e.desired_version,
        "desired_revision": e.desired_revision, "sent_nonce": e.sent_nonce,
        "acked_version": e.acked_version, "last_error": e.last_error, "state": str(e.state),
        "connected_at": format_instant(e.connected_at) if e.connected_at else None,
        "last_seen": format_instant(e.last_seen) if e.last_seen else None,
    }


def _entry(row: Any) -> LedgerEntry:
    try:
        labels = json.loads(row.labels)
    except ValueError:
        labels = {}
    return LedgerEntry(
        proxy_id=row.proxy_id, service=row.service, namespace=row.namespace,
        labels=labels if isinstance(labels, dict) else {},
        desired_version=row.desired_version, desired_revision=row.desired_revision,
        sent_nonce=row.sent_nonce, acked_version=row.acked_version, last_error=row.last_error,
        state=ProxyState(row.state) if row.state in ProxyState.__members__ else ProxyState.DISCONNECTED,
        connected_at=parse_instant(row.connected_at) if row.connected_at else None,
        last_seen=parse_instant(row.last_seen) if row.last_seen else None,
    )
