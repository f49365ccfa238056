"""Rejected webhook deliveries, counted instead of recorded one by one.

Anyone who can reach `/webhooks/*` can send a delivery that is refused (bad signature,
unknown forge, malformed body). One hash-chained audit record per refusal would let anyone
write permanent rows. So a refused delivery is *counted* per (forge, reason, source) over an
interval, and one `webhook.rejected` summary record per interval carries the counts; only the
first few refusals of each interval are kept in full (`webhook.delivery`, `sampled: true`).
Accepted deliveries (and every other verified one) are still recorded one by one.

Pure: the caller passes the time (seconds) in and writes what `due` returns.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

OVERFLOW = ("*", "*", "*")  # past max_groups distinct keys in one interval


@dataclass
class _Window:
    start: float
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    sampled: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class RejectionSummary:
    """Counts refusals per interval; says which to keep in full; yields the summaries."""

    def __init__(self, *, interval_s: float = 60.0, samples: int = 5,
                 max_groups: int = 100) -> None:
        if interval_s <= 0 or samples < 0 or max_groups < 1:
            raise ValueError("interval_s > 0, samples >= 0 and max_groups >= 1")
        self.interval_s = interval_s
        self.samples = samples
        self.max_groups = max_groups
        self.total = 0  # refusals counted since start
        self._window: _Window | None = None

    def observe(self, forge: str, reason: str, source: str | None, now: float) -> bool:
        """Count one refusal; True if it should also be recorded in full (a sample)."""
        w = self._window
        if w is None:
            w = self._window = _Window(now)
        key = (forge, reason, source or "")
        if key not in w.counts and len(w.counts) >= self.max_groups:
            key = OVERFLOW
        w.counts[key] += 1
        self.total += 1
        if w.sampled < self.samples:
            w.sampled += 1
            return True
        return False

    def due(self, now: float, *, final: bool = False) -> dict[str, Any] | None:
        """The summary of the interval that ended by `now` (every pending count if `final`),
        as the data of one `webhook.rejected` record; None when nothing is due."""
        w = self._window
        if w is None or (not final and now < w.start + self.interval_s):
            return None
        self._window = None
        groups = sorted(w.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "from": _iso(w.start), "to": _iso(max(now, w.start)),
            "total": w.total, "sampled": w.sampled,
            "counts": [{"forge": f, "reason": r, "source": s, "count": n}
                       for (f, r, s), n in groups],
        }

    def pending(self) -> dict[str, Any]:
        """The open interval, for status pages: counts so far."""
        w = self._window
        return {"total": self.total, "interval_s": self.interval_s,
                "open": None if w is None else {"from": _iso(w.start), "count": w.total}}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
