"""What a listener admits and when it gives up on a connection: the pure part of the
controller's listeners (API/pages/webhooks, fleet, bootstrap). No sockets, no clock: the shell
(`reconciler.net.listener`) passes the time in and does what these answer.

* `ListenerLimits`: the settings of one listener (caps and timeouts).
* `ConnectionTable`: the open connections by address; says whether one more may be admitted
  (total and per-address caps) and which have waited too long for a request head.
* `AcceptBackoff`: what to do after `accept()` failed. Out of descriptors (EMFILE, ENFILE) or
  memory, the listener is *not accepting*: wait (doubling, capped) and try again, never give
  up. Errors of one half-open connection (ECONNABORTED, EPROTO, ...) retry at once.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# accept() failed because the process or system has no room: nothing to do but wait
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True)
class ListenerLimits:
    """Caps and timeouts of one listener; 0 / None switch a limit off."""

    max_connections: int = 512          # open connections in all
    max_per_address: int = 64           # open connections from one client address
    header_timeout_s: float | None = None  # a request head must be complete within this of
    #                                        the connection opening or the previous response
    idle_timeout_s: float | None = None  # an idle keep-alive connection is closed after this

    def __post_init__(self) -> None:
        if self.max_connections < 0 or self.max_per_address < 0:
            raise ValueError("connection caps must be >= 0 (0: no cap)")
        for t in (self.header_timeout_s, self.idle_timeout_s):
            if t is not None and t <= 0:
                raise ValueError("timeouts must be > 0 (or null: none)")


# The defaults of meshcd serve's three listeners (settings: api/fleet/bootstrap).
API_LIMITS = ListenerLimits(max_connections=512, max_per_address=64, header_timeout_s=10.0,
                            idle_timeout_s=5.0)
# Proxies of a whole host may share one address (NAT, the demo); the TLS handshake timeout
# ends connections that never present a certificate.
FLEET_LIMITS = ListenerLimits(max_connections=20000, max_per_address=1000)
# one request per connection, each answered within 15 s: a few per address are plenty
BOOTSTRAP_LIMITS = ListenerLimits(max_connections=256, max_per_address=32)


@dataclass
class _Conn:
    host: str
    last: float       # opened, or the last request ended
    in_request: int   # requests in flight on it


class ConnectionTable(Generic[K]):
    """Open connections of one listener, by an opaque key (the shell's socket or peer)."""

    def __init__(self, limits: ListenerLimits) -> None:
        self.limits = limits
        self._conns: dict[K, _Conn] = {}
        self._by_host: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._conns)

    def __contains__(self, key: object) -> bool:
        return key in self._conns

    def keys(self) -> list[K]:
        return list(self._conns)

    def refusal(self, host: str) -> str | None:
        """None if one more connection from `host` may be admitted, else why not:
        `max_connections` or `max_per_address`."""
        lim = self.limits
        if lim.max_connections and len(self._conns) >= lim.max_connections:
            return "max_connections"
        if lim.max_per_address and self._by_host[host] >= lim.max_per_address:
            return "max_per_address"
        return None

    def opened(self, key: K, host: str, now: float) -> None:
        if key in self._conns:
            self.closed(key)
        self._conns[key] = _Conn(host, now, 0)
        self._by_host[host] += 1

    def closed(self, key: K) -> None:
        conn = self._conns.pop(key, None)
        if conn is None:
            return
        self._by_host[conn.host] -= 1
        if self._by_host[conn.host] <= 0:
            del self._by_host[conn.host]

    def closed_all(self, keys: Iterable[K]) -> None:
        for key in keys:
            self.closed(key)

    def request_started(self, key: K, now: float) -> None:
        conn = self._conns.get(key)
        if conn is not None:
            conn.in_request += 1
            conn.last = now

    def request_ended(self, key: K, now: float) -> None:
        conn = self._conns.get(key)
        if conn is not None:
            conn.in_request = max(0, conn.in_request - 1)
            conn.last = now

    def overdue(self, now: float) -> list[K]:
        """Connections with no request in flight whose request head has not come within
        `header_timeout_s` of the connection opening or the last request ending."""
        limit = self.limits.header_timeout_s
        if limit is None:
            return []
        return [k for k, c in self._conns.items() if not c.in_request and now - c.last > limit]

    def busiest(self, n: int = 5) -> list[tuple[str, int]]:
        """The addresses holding the most connections (for the status page and logs)."""
        return self._by_host.most_common(n)


class AcceptBackoff:
    """The accept loop's decision after each `accept()`.

    `failed(err)` returns the seconds to wait before the next try; `accepting` is False from
    the first resource error until an accept works again (`succeeded`)."""

    def __init__(self, *, first_s: float = 0.05, max_s: float = 1.0,
                 other_errors_before_backoff: int = 10) -> None:
        self.first_s, self.max_s = first_s, max_s
        self.other_limit = other_errors_before_backoff
        self.accepting = True
        self.since: float | None = None   # when it stopped accepting
        self.last_error: int | None = None
        self._streak = 0

    def failed(self, err: int | None, now: float) -> float:
        self._streak += 1
        self.last_error = err
        if err in RESOURCE_ERRNOS:
            if self.accepting:
                self.accepting, self.since = False, now
            return float(min(self.max_s, self.first_s * 2 ** (self._streak - 1)))
        if self._streak <= self.other_limit:
            return 0.0
        return float(min(self.max_s, self.first_s * 2 ** (self._streak - self.other_limit - 1)))

    def succeeded(self, now: float) -> float | None:
        """An accept worked; returns how long the listener was not accepting (None if it was)."""
        self._streak = 0
        if self.accepting:
            return None
        self.accepting = True
        down = now - (self.since if self.since is not None else now)
        self.since = None
        return down
