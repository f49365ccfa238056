"""Forge webhook adapters: verify and parse a delivery into a RefUpdate.

Pure core (no I/O): `ADAPTERS[forge](headers, raw_body, secret) -> Push | Ping |
Ignored`, or a `Rejection`. The HTTP shell is `webhooks.receiver.make_router` (imports FastAPI, so it is
not re-exported here). See docs/webhooks.md.
"""

from __future__ import annotations

from webhooks.adapters import ADAPTERS, FORGES
from webhooks.errors import Rejection
from webhooks.model import DeliveryRecord, Ignored, Ping, Push, RefUpdate
from webhooks.repo_url import InvalidRepoUrl, canonical_repo_key, matches_repo

__all__ = [
    "ADAPTERS",
    "FORGES",
    "DeliveryRecord",
    "Ignored",
    "InvalidRepoUrl",
    "Ping",
    "Push",
    "RefUpdate",
    "Rejection",
    "canonical_repo_key",
    "matches_repo",
]
