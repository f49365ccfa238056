"""Canonical JSON and the snapshot version (SHA-256 of the canonical content)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Top-level keys that describe the snapshot rather than being part of it: not hashed.
UNHASHED_KEYS = frozenset({"version", "revision"})


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (not \\u-escaped), NaN/Infinity rejected."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def compute_version(obj: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a snapshot object without `version`/`revision`."""
    content = {k: v for k, v in obj.items() if k not in UNHASHED_KEYS}
    return hashlib.sha256(canonical_json(content)).hexdigest()
