"""Pure retry decisions (Envoy's retry_on semantics, the subset the snapshot allows)."""

from __future__ import annotations

from collections.abc import Iterable

GATEWAY_ERRORS = frozenset({502, 503, 504})
RETRIABLE_4XX = frozenset({409})


def should_retry_status(status: int, retry_on: Iterable[str]) -> bool:
    for cond in retry_on:
        if cond == "5xx" and status >= 500:
            return True
        if cond == "gateway-error" and status in GATEWAY_ERRORS:
            return True
        if cond == "retriable-4xx" and status in RETRIABLE_4XX:
            return True
    return False


def should_retry_failure(kind: str, retry_on: Iterable[str]) -> bool:
    """kind: connect-failure | reset | timeout (a per-try timeout)."""
    conds = set(retry_on)
    if kind == "connect-failure":
        return bool(conds & {"connect-failure", "5xx", "gateway-error"})
    if kind == "reset":
        return bool(conds & {"reset", "5xx", "gateway-error"})
    if kind == "timeout":
        return bool(conds & {"5xx", "gateway-error"})
    return False


def failure_status(kind: str) -> int:
    """What the client sees when an upstream failure is final."""
    return {"connect-failure": 503, "reset": 502, "timeout": 504}.get(kind, 502)
