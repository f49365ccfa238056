"""Rolling per-second stats window: what the agent (#5) streams to the controller for canary
analysis. Pure: the caller passes the current time in; nothing here reads a clock."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

# Upper bounds (seconds) of the latency buckets; the last bucket is +Inf.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
CLASSES: tuple[str, ...] = ("2xx", "3xx", "4xx", "5xx")


def bucket_index(seconds: float) -> int:
    """Index of the first bucket whose upper bound holds `seconds` (len(LATENCY_BUCKETS) = +Inf)."""
    return bisect_left(LATENCY_BUCKETS, seconds)


def status_class(status: int) -> str:
    if status < 300:
        return "2xx"
    if status < 400:
        return "3xx"
    if status < 500:
        return "4xx"
    return "5xx"


@dataclass
class SecondStats:
    second: int
    classes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    connection_failures: int = 0
    denials: int = 0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "second": self.second,
            "requests": dict(self.classes),
            "connection_failures": self.connection_failures,
            "denials": self.denials,
            "latency_buckets": list(self.latency_buckets),
            "latency_sum_seconds": round(self.latency_sum, 6),
        }


class StatsWindow:
    """The last `size` whole seconds, oldest first. Seconds with no traffic read as zeros."""

    def __init__(self, size: int = 60) -> None:
        self.size = size
        self._slots: dict[int, SecondStats] = {}
        self._last_second = -1
        self._last = SecondStats(-1)

    def _slot(self, now: float) -> SecondStats:
        second = int(now)
        if second == self._last_second:
            return self._last
        slot = self._slots.get(second)
        if slot is None:
            slot = SecondStats(second)
            self._slots[second] = slot
            if len(self._slots) > self.size + 1:
                for old in sorted(self._slots)[: len(self._slots) - self.size - 1]:
                    del self._slots[old]
        self._last_second = second
        self._last = slot
        return slot

    def record(self, now: float, status: int, latency: float, bucket: int | None = None) -> None:
        slot = self._slot(now)
        slot.classes[status_class(status)] += 1
        slot.latency_buckets[bisect_left(LATENCY_BUCKETS, latency) if bucket is None else bucket] += 1
        slot.latency_sum += latency

    def record_denial(self, now: float) -> None:
        self._slot(now).denials += 1

    def record_connection_failure(self, now: float) -> None:
        self._slot(now).connection_failures += 1

    def window(self, now: float, seconds: int | None = None) -> list[dict[str, Any]]:
        """Completed seconds up to (not including) the current one, oldest first."""
        count = min(seconds or self.size, self.size)
        current = int(now)
        out = []
        for second in range(current - count, current):
            slot = self._slots.get(second)
            out.append((slot or SecondStats(second)).as_dict())
        return out

    def as_document(self, now: float, seconds: int | None = None) -> dict[str, Any]:
        return {
            "latency_bucket_bounds_seconds": list(LATENCY_BUCKETS),
            "classes": list(CLASSES),
            "seconds": self.window(now, seconds),
        }
