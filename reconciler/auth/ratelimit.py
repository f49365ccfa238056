"""Failed sign-ins per client address: after `max_failures` failures within `window_s`
seconds the client is refused (HTTP 429 with Retry-After) until the oldest of them is
`window_s` old. Pure: the caller passes the time in (monotonic seconds).

A refused attempt is not checked at all (not even a valid token signs in), so guessing
stays at `max_failures` per window. A successful sign-in forgets the client's failures.
`refuse()` says whether a refusal is the first of its burst, so the caller audits a burst
once, not every refused request. At most `max_clients` addresses are tracked; the least
recently seen go first (an attacker with many addresses gains nothing over fresh ones).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

DEFAULT_MAX_FAILURES = 10
DEFAULT_WINDOW_S = 60.0
DEFAULT_MAX_CLIENTS = 10_000


@dataclass
class _Client:
    failures: deque[float] = field(default_factory=deque)
    announced: bool = False  # the current burst of refusals has been reported


@dataclass(frozen=True, slots=True)
class Refusal:
    retry_after: int  # whole seconds, at least 1 (the Retry-After header)
    failures: int  # failures within the window
    first_of_burst: bool  # audit this one; later refusals of the same burst are not


class SignInLimiter:
    def __init__(self, max_failures: int = DEFAULT_MAX_FAILURES,
                 window_s: float = DEFAULT_WINDOW_S,
                 max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        if max_failures < 1 or window_s <= 0 or max_clients < 1:
            raise ValueError("max_failures, window_s and max_clients must be positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def _get(self, client: str, now: float) -> _Client | None:
        entry = self._clients.get(client)
        if entry is None:
            return None
        while entry.failures and entry.failures[0] <= now - self.window_s:
            entry.failures.popleft()
        if len(entry.failures) < self.max_failures:
            entry.announced = False  # the burst is over
        if not entry.failures:
            del self._clients[client]
            return None
        self._clients.move_to_end(client)
        return entry

    def refuse(self, client: str, now: float) -> Refusal | None:
        """Before checking a sign-in: a Refusal when the client must wait, else None."""
        entry = self._get(client, now)
        if entry is None or len(entry.failures) < self.max_failures:
            return None
        first = not entry.announced
        entry.announced = True
        wait = entry.failures[0] + self.window_s - now
        return Refusal(max(1, math.ceil(wait)), len(entry.failures), first)

    def failed(self, client: str, now: float) -> int:
        """Record a failed sign-in; returns the failures within the window."""
        entry = self._get(client, now)
        if entry is None:
            entry = _Client()
            self._clients[client] = entry
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
        entry.failures.append(now)
        # Failures while refused cannot happen (refused attempts are not checked), so the
        # deque stays at most max_failures long.
        while len(entry.failures) > self.max_failures:
            entry.failures.popleft()
        return len(entry.failures)

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    def __len__(self) -> int:
        return len(self._clients)
