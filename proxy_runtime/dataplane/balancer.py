"""Endpoint choice by load-balancing policy, and outlier ejection. Deterministic: time and
randomness are passed in, so the decisions are tested without sockets or clocks."""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import gcd
from typing import Any


@dataclass
class EndpointState:
    """One endpoint of a cluster, with the counters the policies and the ejector read."""

    address: str
    port: int
    weight: int = 1
    active_requests: int = 0
    consecutive_5xx: int = 0
    ejected_until: float = 0.0
    times_ejected: int = 0
    label: str = ""
    pool: Any = None  # the UpstreamPool of this endpoint in the current config

    def __post_init__(self) -> None:
        self.label = f"{self.address}:{self.port}"

    @property
    def key(self) -> tuple[str, int]:
        return (self.address, self.port)



def _smooth_weighted_order(weights: Sequence[int]) -> list[int]:
    """nginx's smooth weighted round robin, unrolled once: an interleaved index sequence
    in which index i appears weights[i] times (weights reduced by their gcd)."""
    g = 0
    for w in weights:
        g = gcd(g, w)
    reduced = [max(w // (g or 1), 0) for w in weights]
    total = sum(reduced)
    if total > 10_000:  # keep the table small; proportions stay within 1e-4
        reduced = [max(1, round(w * 10_000 / total)) if w else 0 for w in reduced]
        total = sum(reduced)
    current = [0] * len(reduced)
    order: list[int] = []
    for _ in range(total):
        best = -1
        for i, w in enumerate(reduced):
            current[i] += w
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        order.append(best)
    return order


class Balancer:
    """Chooses an endpoint for one request. policy: round_robin | least_request | random |
    consistent_hash. Ejected endpoints are skipped unless every endpoint is ejected (then
    the proxy still tries: Envoy's panic mode)."""

    def __init__(
        self,
        endpoints: list[EndpointState],
        policy: str,
        rand: random.Random | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.policy = policy
        self.rand = rand or random.Random()
        self._order = _smooth_weighted_order([e.weight for e in endpoints]) or [0]
        self._next = 0
        self._cum: list[int] = []
        total = 0
        for e in endpoints:
            total += max(e.weight, 0)
            self._cum.append(total)
        self._total = total
        self._ring: list[tuple[int, int]] = []
        if policy == "consistent_hash":
            for i, e in enumerate(endpoints):
                for v in range(max(1, e.weight) * 64):
                    h = hashlib.blake2b(f"{e.address}:{e.port}#{v}".encode(), digest_size=8)
                    self._ring.append((int.from_bytes(h.digest(), "big"), i))
            self._ring.sort()

    def _healthy(self, i: int, now: float) -> bool:
        return self.endpoints[i].ejected_until <= now

    def pick(self, now: float, hash_key: bytes | None = None) -> EndpointState:
        eps = self.endpoints
        n = len(eps)
        if n == 1:
            return eps[0]
        all_ejected = not any(e.ejected_until <= now for e in eps)
        ok: Callable[[int], bool] = (lambda i: True) if all_ejected else (lambda i: self._healthy(i, now))
        policy = self.policy
        if policy == "least_request":
            # power of two choices, weighted by nothing: Envoy's default for least request
            candidates = [i for i in range(n) if ok(i)]
            a = candidates[self.rand.randrange(len(candidates))]
            b = candidates[self.rand.randrange(len(candidates))]
            return eps[a] if eps[a].active_requests <= eps[b].active_requests else eps[b]
        if policy == "random":
            for _ in range(8):
                i = bisect.bisect_right(self._cum, self.rand.randrange(self._total or 1))
                if ok(min(i, n - 1)):
                    return eps[min(i, n - 1)]
            return eps[next((i for i in range(n) if ok(i)), 0)]
        if policy == "consistent_hash" and hash_key is not None and self._ring:
            h = int.from_bytes(hashlib.blake2b(hash_key, digest_size=8).digest(), "big")
            pos = bisect.bisect_left(self._ring, (h, -1))
            for step in range(len(self._ring)):
                i = self._ring[(pos + step) % len(self._ring)][1]
                if ok(i):
                    return eps[i]
        # round robin (also consistent_hash without a key)
        order = self._order
        for _ in range(len(order)):
            i = order[self._next % len(order)]
            self._next += 1
            if ok(i):
                return eps[i]
        return eps[0]


@dataclass(frozen=True)
class OutlierPolicy:
    consecutive_5xx: int = 5
    base_ejection_seconds: float = 30.0
    max_ejection_percent: int = 10


def record_result(
    policy: OutlierPolicy | None,
    endpoints: Sequence[EndpointState],
    endpoint: EndpointState,
    status: int,
    now: float,
) -> bool:
    """Feed one response status (or 503 for a connection failure); True if this ejected
    the endpoint. Ejection time grows with each ejection, as in Envoy."""
    if status < 500:
        endpoint.consecutive_5xx = 0
        return False
    endpoint.consecutive_5xx += 1
    if policy is None or endpoint.consecutive_5xx < policy.consecutive_5xx:
        return False
    if endpoint.ejected_until > now:
        return False
    ejected = sum(1 for e in endpoints if e.ejected_until > now)
    # at least one endpoint may always be ejected, as in Envoy
    if ejected >= max(1, len(endpoints) * policy.max_ejection_percent // 100):
        return False
    endpoint.times_ejected += 1
    endpoint.ejected_until = now + policy.base_ejection_seconds * endpoint.times_ejected
    endpoint.consecutive_5xx = 0
    return True
