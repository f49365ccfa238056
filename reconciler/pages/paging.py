"""Audit-log filters and keyset paging, from and back to query strings. Pure.

Paging never uses OFFSET: a page is "the newest `limit` records before seq N", which the
audit store answers with one index range scan at any size. The next page's link carries
the last seq shown; the filters ride along unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urlencode

AUDIT_PAGE = 50
_TIME_FORMATS = (
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    kind: str | None = None
    actor: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None

    def params(self, *, before: int | None = None) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in ("kind", "actor", "subject"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.since is not None:
            out["since"] = format_time_field(self.since)
        if self.until is not None:
            out["until"] = format_time_field(self.until)
        if before is not None:
            out["before"] = str(before)
        return out

    def link(self, *, before: int | None = None) -> str:
        params = self.params(before=before)
        return "?" + urlencode(params) if params else "?"

    @property
    def filtered(self) -> bool:
        return any((self.kind, self.actor, self.subject, self.since, self.until))

    def first_page(self) -> AuditQuery:
        return replace(self, before=None)


def format_time_field(when: datetime) -> str:
    """The value of a `datetime-local` input for an instant (UTC, to the second)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def parse_time(text: str) -> datetime:
    """A time filter: ISO-8601 with a zone, or a zone-less value read as UTC."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    parsed: datetime | None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
        for fmt in _TIME_FORMATS:
            try:
                parsed = datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
        if parsed is None:
            raise ValueError(f"not a time: {text!r} (use YYYY-MM-DDTHH:MM[:SS], UTC)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_audit_query(params: Mapping[str, str]) -> tuple[AuditQuery, list[str]]:
    """Filters from a query string; bad values are dropped and explained in the errors."""
    errors: list[str] = []

    def text(key: str, limit: int) -> str | None:
        value = (params.get(key) or "").strip()
        if not value:
            return None
        if len(value) > limit or not value.isprintable():
            errors.append(f"{key}: at most {limit} printable characters")
            return None
        return value

    def when(key: str) -> datetime | None:
        value = (params.get(key) or "").strip()
        if not value:
            return None
        try:
            return parse_time(value)
        except ValueError as exc:
            errors.append(f"{key}: {exc}")
            return None

    before: int | None = None
    raw_before = (params.get("before") or "").strip()
    if raw_before:
        if raw_before.isdigit() and 0 < int(raw_before) < 2**62:
            before = int(raw_before)
        else:
            errors.append("before: a positive record number")
    query = AuditQuery(
        kind=text("kind", 64),
        actor=text("actor", 256),
        subject=text("subject", 1024),
        since=when("since"),
        until=when("until"),
        before=before,
    )
    if query.since and query.until and query.since >= query.until:
        errors.append("since must be earlier than until")
    return query, errors


def parse_positive(text: str | None, *, default: int, maximum: int) -> int:
    """A non-negative int query parameter, clamped to `maximum`; `default` when absent/bad."""
    if text is None or not text.strip().isdigit():
        return default
    return min(int(text), maximum)
