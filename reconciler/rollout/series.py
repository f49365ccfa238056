"""Per-second canary vs baseline numbers of a rollout, for the page's chart. Pure.

The controller shell feeds every stats window it receives (`add`, with the engine's role of
that proxy: "canary" on the new config, "baseline" still on the old one); `to_list()` is the
contract's POINT list: `{"t", "stage", "canary": SIG, "baseline": SIG | None}` with t in
seconds since the rollout started. Windows are parsed and summarised exactly as the judge
does (reconciler.analysis.sample / judge), so the chart shows the judge's numbers.
Memory is bounded: at most `max_points` seconds are kept, the oldest dropped first.
Each second's point is summarised once and kept until a window for that second arrives
again, so `to_list()` (asked for on every overview poll) redoes only the last few seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from reconciler.analysis.judge import summary
from reconciler.analysis.sample import BadWindow, Sample

ROLES: tuple[str, ...] = ("canary", "baseline")


class Sig(TypedDict):
    """SIG: one side's numbers in one second (rates in percent, 0.0 without requests)."""

    requests: int
    errors: int
    denials: int
    errorRatePercent: float
    denialRatePercent: float
    p99Ms: float | None


class Point(TypedDict):
    """POINT: one second since the rollout started, its stage and both sides."""

    t: int
    stage: int
    canary: Sig
    baseline: Sig | None


def signals(s: Sample) -> Sig:
    """SIG: the judge's summary of one side, rates 0.0 (not None) without requests."""
    d = summary(s)
    return {"requests": d["requests"], "errors": d["errors"], "denials": d["denials"],
            "errorRatePercent": d["errorRatePercent"] or 0.0,
            "denialRatePercent": d["denialRatePercent"] or 0.0,
            "p99Ms": d["p99Ms"]}


class SeriesRecorder:
    def __init__(self, max_points: int = 900) -> None:
        if max_points < 1:
            raise ValueError("max_points must be at least 1")
        self.max_points = max_points
        # t -> [stage, {role: Sample}]; dict order is not relied on (t may arrive late).
        self._points: dict[int, tuple[int, dict[str, Sample]]] = {}
        self._oldest_dropped: int | None = None
        self._rendered: dict[int, Point] = {}  # t -> its POINT, until t changes

    def add(self, proxy_id: str, role: str, window: Mapping[str, Any], *, started_at: float,
            stage: int) -> None:
        """Add one proxy's one-second window. Raises reconciler.analysis.sample.BadWindow
        for a window of the wrong shape, ValueError for an unknown role. Windows from
        before the rollout started, or older than the kept seconds, are ignored."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        sample = Sample.from_window(window)
        try:
            second = int(window["second"])
        except (KeyError, TypeError, ValueError):
            raise BadWindow(f"window of {proxy_id} has no second") from None
        t = second - int(started_at)
        if t < 0 or (self._oldest_dropped is not None and t <= self._oldest_dropped):
            return
        entry = self._points.get(t)
        if entry is None:
            entry = (stage, {})
            self._points[t] = entry
            if len(self._points) > self.max_points:
                oldest = min(self._points)
                del self._points[oldest]
                self._rendered.pop(oldest, None)
                self._oldest_dropped = oldest
                if oldest == t:
                    return
        # A second that straddles a stage change is labelled with the later stage.
        st, sides = entry
        if stage > st:
            self._points[t] = (stage, sides)
        prev = sides.get(role)
        sides[role] = sample if prev is None else prev + sample
        self._rendered.pop(t, None)

    def __len__(self) -> int:
        return len(self._points)

    def to_list(self) -> list[Point]:
        """The POINTs, oldest first (fresh outer dicts; the SIG dicts are shared: read only)."""
        out: list[Point] = []
        for t in sorted(self._points):
            point = self._rendered.get(t)
            if point is None:
                stage, sides = self._points[t]
                canary = sides.get("canary")
                baseline = sides.get("baseline")
                point = {"t": t, "stage": stage,
                         "canary": signals(canary if canary is not None else Sample()),
                         "baseline": None if baseline is None else signals(baseline)}
                self._rendered[t] = point
            out.append(point.copy())
        return out
