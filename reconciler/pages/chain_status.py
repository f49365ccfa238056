"""The audit page's chain-verification badge, computed in the background and cached.

Verifying a million records takes a minute, so a page never waits for it. A worker thread
keeps the last verdict: between full passes it only verifies what was appended since (from
the last verified record on, anchored at that record's hash, so a rewrite of the record it
resumes from is caught too); every `full_every` seconds it recomputes the whole chain,
which is what catches an edit of an old record. The badge says what it knows and when it
was computed; a page request only starts a refresh when the verdict is older than `max_age`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from reconciler.audit import Anchor, AuditLog, VerifyResult


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    result: VerifyResult | None  # None: never computed yet
    computed_at: datetime | None
    full: bool  # the last pass covered the whole chain
    running: bool


@dataclass(frozen=True, slots=True)
class Badge:
    level: str  # ok | broken | unknown
    text: str
    detail: str


def badge_of(verdict: ChainVerdict) -> Badge:
    """What the badge says (in words: the colour only repeats it). Pure."""
    result = verdict.result
    when = verdict.computed_at.strftime("%Y-%m-%d %H:%M:%S UTC") if verdict.computed_at else ""
    if result is None:
        return Badge(
            "unknown",
            "Chain not verified yet",
            "verification is running" if verdict.running else "",
        )
    if not result.ok and result.broken_at is None:
        return Badge("unknown", "Chain not verified", f"{result.reason or ''} ({when})")
    if not result.ok:
        return Badge(
            "broken",
            f"Chain broken at seq {result.broken_at}",
            f"{result.reason or ''} (checked {when})",
        )
    scope = "full check" if verdict.full else "new records checked"
    if result.verified_up_to == 0:
        return Badge("ok", "Chain empty", f"no records yet ({when})")
    return Badge("ok", f"Chain verified up to seq {result.verified_up_to}", f"{scope} at {when}")


class ChainStatus:
    def __init__(
        self,
        audit: AuditLog,
        *,
        max_age: float = 10.0,
        full_every: float = 600.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._audit = audit
        self._max_age = max_age
        self._full_every = full_every
        self._clock = clock
        self._lock = threading.Lock()
        self._result: VerifyResult | None = None
        self._computed_at: datetime | None = None
        self._last_full: datetime | None = None
        self._full = False
        self._worker: threading.Thread | None = None

    def verdict(self) -> ChainVerdict:
        with self._lock:
            running = self._worker is not None and self._worker.is_alive()
            return ChainVerdict(self._result, self._computed_at, self._full, running)

    def refresh_if_stale(self) -> None:
        now = self._clock()
        with self._lock:
            fresh = (
                self._computed_at is not None
                and (now - self._computed_at).total_seconds() < self._max_age
            )
        if not fresh:
            self.refresh()

    def refresh(self, *, full: bool = False, wait: bool = False) -> None:
        """Start a pass unless one is running; `wait` blocks until the (running) pass ends."""
        with self._lock:
            worker = self._worker
            if worker is None or not worker.is_alive():
                worker = threading.Thread(
                    target=self._run, args=(full,), name="meshcd-audit-verify", daemon=True
                )
                self._worker = worker
                worker.start()
        if wait:
            worker.join()

    def _run(self, force_full: bool) -> None:
        started = self._clock()
        with self._lock:
            previous = self._result
            last_full = self._last_full
        due = last_full is None or (started - last_full).total_seconds() >= self._full_every
        full = force_full or due or previous is None or not previous.ok or previous.head is None
        try:
            if full:
                result = self._audit.verify()
            else:
                assert previous is not None and previous.head is not None
                head = previous.head
                step = self._audit.verify(start=head.seq + 1, anchor=Anchor(head.seq, head.hash))
                # An incremental pass that found nothing new still vouches for the old head.
                result = (
                    step
                    if step.head is not None or not step.ok
                    else VerifyResult(True, head.seq, None, None, 0, head)
                )
        except Exception as exc:  # a store outage shows as "unknown", not a crash
            with self._lock:
                self._result = VerifyResult(False, 0, None, f"verification failed: {exc}")
                self._computed_at = started
            return
        with self._lock:
            self._result = result
            self._computed_at = started
            self._full = full
            if full:
                self._last_full = started
