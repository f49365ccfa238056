"""The agent's decisions, without sockets or clocks: is a snapshot acceptable, what does the
proxy apply, how long to back off, when to renew the certificate."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proxy_runtime.protocol.canonical import compute_version
from proxy_runtime.protocol.fleet import Snapshot

STALE_EPOCH = "stale epoch"


@dataclass(frozen=True, slots=True)
class Refuse:
    """Do not apply; answer NACK with `error` and keep serving the current config."""

    error: str


@dataclass(frozen=True, slots=True)
class Apply:
    """Apply `document` (the config with our identity and the revision)."""

    document: dict[str, Any]
    epoch: int


def judge_snapshot(msg: Snapshot, newest_epoch: int, identity: dict[str, str] | None) -> Refuse | Apply:
    """Refuse snapshots from an older leadership epoch, whose content does not hash to their
    version, or that carry an identity of their own; else the document to apply."""
    if msg.epoch < newest_epoch:
        return Refuse(f"{STALE_EPOCH} {msg.epoch}: this proxy has seen epoch {newest_epoch}")
    if "identity" in msg.config:
        return Refuse("the snapshot carries an identity; the proxy uses its own")
    try:
        actual = compute_version(msg.config)
    except (TypeError, ValueError) as exc:
        return Refuse(f"the config cannot be hashed: {exc}")
    if actual != msg.version:
        return Refuse(f"version mismatch: the config hashes to {actual}, not {msg.version}")
    return Apply(with_identity(msg.config, msg.revision, identity), msg.epoch)


def with_identity(config: dict[str, Any], revision: str | None,
                  identity: dict[str, str] | None) -> dict[str, Any]:
    """The document the runtime applies: the config without its `version` (the runtime's
    version covers the identity too), with the revision and our identity."""
    doc = {k: v for k, v in config.items() if k not in ("version", "identity")}
    if revision:
        doc["revision"] = revision
    else:
        doc.pop("revision", None)
    if identity is not None:
        doc["identity"] = dict(identity)
    return doc


def backoff_delay(attempt: int, rng: random.Random, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2.0 ** min(attempt, 32)))
    return rng.uniform(0.0, ceiling)


def renew_delay(not_before: datetime, not_after: datetime, now: datetime, rng: random.Random,
                *, jitter: float = 0.05) -> float:
    """Seconds until renewal: half-life, moved by up to ±`jitter` of the lifetime so proxies
    bootstrapped together do not renew together. Never negative."""
    lifetime = (not_after - not_before).total_seconds()
    at = lifetime / 2 + rng.uniform(-jitter, jitter) * lifetime
    return max(0.0, (not_before - now).total_seconds() + at)


def new_windows(windows: list[dict[str, Any]], last_sent: int) -> list[dict[str, Any]]:
    """The per-second windows not sent yet (second > last_sent)."""
    return [w for w in windows if isinstance(w.get("second"), int) and w["second"] > last_sent]
