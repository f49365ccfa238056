"""What the controller's status says about its database: the last write that failed for
want of space or because the file is damaged, until a write succeeds again.

`watch(engine, health, clock)` hooks the engine: every driver error is classified (see
`engine.classify_error`), and every committed write transaction clears a disk-full problem.
`StoreHealth` itself is pure: the time is passed in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from reconciler.store.engine import _WRITE_OPTION, classify_error
from reconciler.store.errors import StoreCorrupt, StoreFull


class StoreHealth:
    def __init__(self) -> None:
        self.problem: str | None = None
        self.since: float | None = None
        self.failures = 0
        self.corrupt = False

    def failed(self, problem: str, now: float, *, corrupt: bool = False) -> None:
        self.failures += 1
        if self.problem is None:
            self.since = now
        self.problem = problem
        self.corrupt = self.corrupt or corrupt

    def wrote(self) -> None:
        """A write committed: space is back (a damaged file stays reported)."""
        if self.problem is not None and not self.corrupt:
            self.problem, self.since = None, None

    def problems(self) -> list[str]:
        return [] if self.problem is None else [f"storage: {self.problem}"]


def watch(engine: Engine, health: StoreHealth, clock: Callable[[], float]) -> StoreHealth:
    @event.listens_for(engine, "handle_error")
    def _on_error(ctx: Any) -> None:
        exc = ctx.sqlalchemy_exception
        if not isinstance(exc, sa.exc.DBAPIError):
            return
        kind = classify_error(exc)
        if isinstance(kind, StoreFull | StoreCorrupt):
            health.failed(str(kind), clock(), corrupt=isinstance(kind, StoreCorrupt))

    @event.listens_for(engine, "commit")
    def _on_commit(conn: Any) -> None:
        if conn.get_execution_options().get(_WRITE_OPTION, False):
            health.wrote()

    return health
