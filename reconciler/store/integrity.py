"""Is the database file itself sound? `PRAGMA integrity_check` (or the faster
`quick_check`) on SQLite: a damaged page is found even where no record was read yet, which a
hash-chain check of the audit table alone cannot see. PostgreSQL keeps its own checksums;
meshcd does not check its pages (use the amcheck extension)."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from reconciler.store.engine import is_sqlite

MAX_PROBLEMS = 20


@dataclass(frozen=True)
class IntegrityResult:
    checked: bool  # False: this backend is not checked (PostgreSQL)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {"checked": self.checked, "ok": self.ok, "problems": list(self.problems)}


def check_integrity(engine: Engine, *, quick: bool = False) -> IntegrityResult:
    """Run SQLite's integrity check; a file too damaged to open is one problem, not an
    exception."""
    if not is_sqlite(engine):
        return IntegrityResult(checked=False)
    pragma = "quick_check" if quick else "integrity_check"
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(f"PRAGMA {pragma}({MAX_PROBLEMS})").fetchall()
    except sa.exc.DBAPIError as exc:
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return IntegrityResult(checked=True, problems=[text[0] if text else type(exc).__name__])
    problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
    return IntegrityResult(checked=True, problems=problems)
