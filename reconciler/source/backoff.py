"""When to try the next fetch after failures, and the fetch status shown to people. Pure.

The delay doubles with each consecutive failure from `base` up to `cap`, then a random
share of it (`jitter`, 0..1) is taken off so that many controllers that failed together
do not retry together. The random source is passed in; time is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class BackoffPolicy:
    base: float = 60.0  # seconds; the first retry waits about one poll interval
    factor: float = 2.0
    cap: float = 900.0
    jitter: float = 0.2  # up to this share of the delay is removed at random

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("backoff needs 0 < base <= cap")
        if self.factor < 1:
            raise ValueError("backoff factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter is a share between 0 and 1")


def backoff_delay(failures: int, policy: BackoffPolicy, random: Callable[[], float]) -> float:
    """Seconds to wait after `failures` consecutive failures (0 failures: no wait).

    `random()` returns a float in [0, 1), like `random.Random().random`.
    """
    if failures <= 0:
        return 0.0
    # Exponent capped so a long outage cannot overflow the float.
    raw = min(policy.cap, policy.base * policy.factor ** min(failures - 1, 64))
    return raw * (1.0 - policy.jitter * random())


@dataclass(frozen=True)
class FetchStatus:
    """The source's health for `status`, the API and /metrics. Times are unix seconds."""

    last_attempt: float | None = None
    last_success: float | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_temporary: bool | None = None
    next_attempt_not_before: float | None = None  # set while backing off
    total_fetches: int = 0
    total_failures: int = 0

    @property
    def healthy(self) -> bool:
        return self.consecutive_failures == 0

    def to_dict(self) -> dict[str, Any]:
        """For the status API and the audit (the error text is already scrubbed)."""
        return {**asdict(self), "healthy": self.healthy}

    def succeeded(self, now: float) -> FetchStatus:
        return replace(
            self,
            last_attempt=now,
            last_success=now,
            consecutive_failures=0,
            last_error=None,
            last_error_temporary=None,
            next_attempt_not_before=None,
            total_fetches=self.total_fetches + 1,
        )

    def failed(
        self,
        now: float,
        error: str,
        *,
        temporary: bool,
        policy: BackoffPolicy,
        random: Callable[[], float],
    ) -> FetchStatus:
        failures = self.consecutive_failures + 1
        return replace(
            self,
            last_attempt=now,
            consecutive_failures=failures,
            last_error=error,
            last_error_temporary=temporary,
            next_attempt_not_before=now + backoff_delay(failures, policy, random),
            total_fetches=self.total_fetches + 1,
            total_failures=self.total_failures + 1,
        )

    def due(self, now: float) -> bool:
        """May a scheduled poll fetch at `now`? False while backing off."""
        return self.next_attempt_not_before is None or now >= self.next_attempt_not_before
