"""The audit table (SQLAlchemy Core), and the triggers that make it append-only.

seq is the primary key, so the database itself refuses a second record with the same seq:
two writers that both read the same tail cannot both extend it (one gets an integrity
error and retries). Secondary indexes lead with the filter column and end with seq, so
"newest first, filtered by kind/actor/subject, before seq N" is one index range scan at any
table size. `data` is stored as its canonical JSON text (not a JSON/JSONB column) so the
bytes the hash covers come back exactly as written.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

metadata = sa.MetaData()

audit_records = sa.Table(
    "audit_records",
    metadata,
    # Integer on SQLite makes seq the rowid (the table's own B-tree key).
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("time", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(1024), nullable=False),
    sa.Column("data", sa.Text(), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_audit_records_kind_seq", "kind", "seq"),
    sa.Index("ix_audit_records_actor_seq", "actor", "seq"),
    sa.Index("ix_audit_records_subject_seq", "subject", "seq"),
    sa.Index("ix_audit_records_time_seq", "time", "seq"),
)

# Key of the PostgreSQL advisory lock that serialises appends ("meshcd audit" in ASCII).
APPEND_LOCK_KEY = 0x6D657368_61756474 & 0x7FFFFFFFFFFFFFFF

# Refuse UPDATE and DELETE. This stops accidents and careless tools, not an attacker with
# the database owner's rights (who can drop the trigger); verify() is what catches those.
_SQLITE_TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
       BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
       BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END""",
]
_POSTGRES_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION audit_records_append_only() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'audit records are append-only'; END $$""",
    """DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                        WHERE t.tgname = 'audit_records_append_only'
                          AND c.oid = 'audit_records'::regclass) THEN
           CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
             ON audit_records FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only();
         END IF;
       END $$""",
]


def create_audit_schema(connection: Connection) -> None:
    """Create the table, indexes and append-only triggers if missing (idempotent)."""
    metadata.create_all(connection, tables=[audit_records], checkfirst=True)
    statements = _POSTGRES_TRIGGERS if connection.dialect.name == "postgresql" else _SQLITE_TRIGGERS
    for statement in statements:
        connection.exec_driver_sql(statement)
