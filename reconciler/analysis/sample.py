"""The judge's input: proxies' per-second stats windows summed into one `Sample`.

A window is what the agent streams (`proxy_runtime.stats_window.SecondStats.as_dict`):
`{"second", "requests": {"2xx","3xx","4xx","5xx"}, "connection_failures", "denials",
"latency_buckets": [14 counts, the last +Inf], "latency_sum_seconds"}`. The bucket bounds
are repeated here (a test keeps them equal to the proxy's) so the judge needs nothing of
the proxy runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.errors import MeshcdError

LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
CLASSES: tuple[str, ...] = ("2xx", "3xx", "4xx", "5xx")
_NBUCKETS = len(LATENCY_BUCKETS) + 1


class BadWindow(MeshcdError, ValueError):
    """A stats window that does not have the agent's shape."""


@dataclass(frozen=True, slots=True)
class Sample:
    """Counts summed over some proxies and seconds. `seconds` counts proxy-seconds seen
    (a window with no traffic still counts: the proxy was there and reporting)."""

    requests: tuple[int, int, int, int] = (0, 0, 0, 0)  # by CLASSES
    connection_failures: int = 0
    denials: int = 0
    latency_buckets: tuple[int, ...] = (0,) * _NBUCKETS
    latency_sum: float = 0.0
    seconds: int = 0

    @property
    def total(self) -> int:
        return sum(self.requests)

    @property
    def errors(self) -> int:
        """5xx plus connection failures, at most the requests (a failed connect usually
        also ends as a 5xx; the cap keeps the rate a rate)."""
        return min(self.requests[3] + self.connection_failures, max(self.total, 0))

    @property
    def denied(self) -> int:
        return min(self.denials, self.total)

    def __add__(self, other: Sample) -> Sample:
        return Sample(
            tuple(a + b for a, b in zip(self.requests, other.requests, strict=True)),  # type: ignore[arg-type]
            self.connection_failures + other.connection_failures,
            self.denials + other.denials,
            tuple(a + b for a, b in zip(self.latency_buckets, other.latency_buckets, strict=True)),
            self.latency_sum + other.latency_sum,
            self.seconds + other.seconds,
        )

    @classmethod
    def from_window(cls, window: Mapping[str, Any]) -> Sample:
        try:
            req = window["requests"]
            requests = tuple(int(req.get(c, 0)) for c in CLASSES)
            buckets = tuple(int(v) for v in window["latency_buckets"])
            conn = int(window.get("connection_failures", 0))
            den = int(window.get("denials", 0))
            lsum = float(window.get("latency_sum_seconds", 0.0))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BadWindow(f"not a stats window: {e}") from None
        if len(buckets) != _NBUCKETS:
            raise BadWindow(f"latency_buckets has {len(buckets)} entries, want {_NBUCKETS}")
        if min((*requests, *buckets, conn, den)) < 0:
            raise BadWindow("negative count")
        return cls(requests, conn, den, buckets, lsum, 1)  # type: ignore[arg-type]

    @classmethod
    def of(cls, windows: Iterable[Mapping[str, Any]]) -> Sample:
        out = cls()
        for w in windows:
            out = out + cls.from_window(w)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(zip(CLASSES, self.requests, strict=True)),
            "connection_failures": self.connection_failures,
            "denials": self.denials,
            "latency_buckets": list(self.latency_buckets),
            "latency_sum_seconds": round(self.latency_sum, 6),
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Sample:
        s = cls.from_window(d)
        return Sample(s.requests, s.connection_failures, s.denials, s.latency_buckets,
                      s.latency_sum, int(d.get("seconds", 1)))
