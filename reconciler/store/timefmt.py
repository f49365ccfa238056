"""The one way meshcd writes instants into the store.

Times are stored as fixed-width UTC ISO-8601 text with microseconds and a `Z`
(`2026-11-25T17:38:01.000000Z`). Fixed width makes text order equal time order on every
backend, and the exact string is what the audit hash covers, so it must not depend on a
driver's datetime handling.
"""

from __future__ import annotations

from datetime import UTC, datetime

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_instant(when: datetime) -> str:
    """UTC text for an aware datetime. Naive datetimes are refused: their zone is a guess."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware (got a naive datetime)")
    return when.astimezone(UTC).strftime(_FORMAT)


def parse_instant(text: str) -> datetime:
    """The aware UTC datetime of a string written by `format_instant`."""
    return datetime.strptime(text, _FORMAT).replace(tzinfo=UTC)
