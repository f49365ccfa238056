"""From the controller's JSON shapes to the pages' read model. Pure.

The controller already has dict forms of its state (what the JSON API answers):
`Revision.to_dict()` (docs/controller.md), `LedgerEntry.to_dict()` (docs/fleet.md), the
revision's stored `findings` and `plan` summaries. These functions turn them into the
`readmodel` dataclasses, so a `PagesData` implementation is mostly plumbing. They read the
dicts by key (no import of the controller's packages) and tolerate missing keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from reconciler.pages.readmodel import AccessChange, Finding, ProxyRow, RevisionRow


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 string (with `Z` or an offset) or a datetime, as an aware UTC datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def signature_text(signature: Mapping[str, Any]) -> str:
    """One line for the signature check: `{"verdict": {...}, "deployable", "reason"}`."""
    verdict = signature.get("verdict") if signature else None
    if not verdict:
        return "not checked"
    kind = verdict.get("kind", "?")
    if kind == "verified":
        return f"verified: {verdict.get('principal', '?')} ({verdict.get('fingerprint', '')})"
    if kind == "unsigned":
        return "unsigned"
    if kind == "unknown_key":
        return f"unknown key {verdict.get('fingerprint', '')}"
    if kind == "bad_signature":
        return f"bad signature: {verdict.get('reason', '')}"
    return str(kind).replace("_", " ")


def revision_row(rev: Mapping[str, Any]) -> RevisionRow:
    """A revision's API form (`Revision.summary()`/`to_dict()`) as a list row."""
    return RevisionRow(
        id=int(rev["id"]),
        commit=str(rev.get("commit", "")),
        author=str(rev.get("author", "")),
        message=str(rev.get("message", "")),
        trigger=str(rev.get("trigger", "")),
        signature=signature_text(rev.get("signature") or {}),
        outcome=str(rev.get("status", rev.get("outcome", ""))),
        detected_at=parse_time(rev.get("detectedAt")) or datetime.fromtimestamp(0, UTC),
    )


def findings(items: Sequence[Mapping[str, Any]]) -> tuple[Finding, ...]:
    """Stored findings (`{code, severity, message, file, line, column}`)."""
    return tuple(
        Finding(
            severity=str(f.get("severity", "")),
            code=str(f.get("code", "")),
            message=str(f.get("message", "")),
            file=str(f.get("file", "")),
            line=int(f["line"]) if f.get("line") is not None else None,
        )
        for f in items
    )


def proxy_row(entry: Mapping[str, Any]) -> ProxyRow:
    """A fleet ledger entry's API form (`LedgerEntry.to_dict()`)."""
    return ProxyRow(
        proxy_id=str(entry.get("proxyId", "")),
        service=str(entry.get("service", "")),
        version=entry.get("ackedVersion") or entry.get("desiredVersion"),
        state=str(entry.get("state", "")),
        last_seen=parse_time(entry.get("lastSeen")),
        last_error=entry.get("lastError"),
    )


def access_changes(access: Mapping[str, Any]) -> tuple[AccessChange, ...]:
    """A plan's access diff `{"granted": [...], "revoked": [...]}`; entries are dicts with
    `source`/`from` and `destination`/`to` (plus anything else, shown as detail) or strings."""
    out: list[AccessChange] = []
    for key, change in (("granted", "now allowed"), ("revoked", "now denied")):
        for item in access.get(key, []) or []:
            if isinstance(item, Mapping):
                source = str(item.get("source", item.get("from", "")))
                destination = str(item.get("destination", item.get("to", "")))
                rest = {
                    k: v
                    for k, v in item.items()
                    if k not in ("source", "from", "destination", "to")
                }
                detail = ", ".join(f"{k}={v}" for k, v in sorted(rest.items()))
                out.append(AccessChange(source, destination, change, detail))
            else:
                out.append(AccessChange(str(item), "", change))
    return tuple(out)
