"""Proxy diff: which proxies' snapshots a revision changes (the blast radius), per service, and
what each distinct change is, as a unified diff of the pretty canonical JSON."""

from __future__ import annotations

import difflib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from renderers import RenderedSnapshot, RenderResult


@dataclass(frozen=True, slots=True)
class ProxyChange:
    proxy: str
    service: str  # name.namespace
    change: str  # added | changed | removed
    old: str | None  # versions
    new: str | None


@dataclass(frozen=True, slots=True)
class SnapshotDiff:
    """One distinct (old version -> new version) change and every proxy it applies to."""

    old: str | None
    new: str | None
    services: tuple[str, ...]
    proxies: int
    diff: str  # unified diff, folded to `max_lines`
    lines: int  # lines of the whole diff
    truncated: bool


@dataclass(frozen=True, slots=True)
class ServiceCount:
    service: str
    proxies: int  # proxies of the service in the target fleet (or the old one, if removed)
    added: int
    changed: int
    removed: int


@dataclass(frozen=True)
class ProxyDiff:
    total: int  # proxies in the target fleet
    unchanged: int
    changes: tuple[ProxyChange, ...]
    services: tuple[ServiceCount, ...]  # services with at least one change
    diffs: tuple[SnapshotDiff, ...]  # most proxies first, at most `max_diffs`
    distinct_changes: int  # before the cap (version pairs beyond the diffed ones count one each)

    def to_json(self, max_proxies: int | None = None) -> dict[str, Any]:
        changes = self.changes if max_proxies is None else self.changes[:max_proxies]
        return {
            "total": self.total,
            "unchanged": self.unchanged,
            "changed": sum(1 for c in self.changes if c.change == "changed"),
            "added": sum(1 for c in self.changes if c.change == "added"),
            "removed": sum(1 for c in self.changes if c.change == "removed"),
            "services": [vars_of(s) for s in self.services],
            "proxies": [vars_of(c) for c in changes],
            "proxies_left_out": len(self.changes) - len(changes),
            "distinct_changes": self.distinct_changes,
            "diffs": [vars_of(d) for d in self.diffs],
        }


def vars_of(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__slots__}


def _pretty(s: RenderedSnapshot | None) -> list[str]:
    """The pretty JSON without `version` (it always changes; the header names both)."""
    if s is None:
        return []
    body = {k: v for k, v in s.json.items() if k != "version"}
    return (json.dumps(body, sort_keys=True, indent=2, ensure_ascii=False) + "\n").splitlines(keepends=True)


def _full_diff(old: RenderedSnapshot | None, new: RenderedSnapshot | None) -> list[str]:
    return list(difflib.unified_diff(
        _pretty(old), _pretty(new),
        fromfile=f"a/{old.version[:12]}" if old else "/dev/null",
        tofile=f"b/{new.version[:12]}" if new else "/dev/null",
        n=3,
    ))


def _body(lines: list[str]) -> tuple[str, ...]:
    """What a diff changes, without file names and hunk positions: proxies whose snapshots
    differ elsewhere (static ports) but change the same way show as one change."""
    return tuple(x for x in lines[2:] if not x.startswith("@@"))


def _fold(lines: list[str], max_lines: int) -> tuple[str, int, bool]:
    if len(lines) <= max_lines:
        return "".join(lines), len(lines), False
    kept = lines[:max_lines]
    kept.append(f"... {len(lines) - max_lines} more lines of this diff not shown\n")
    return "".join(kept), len(lines), True


def proxy_diff(
    old: RenderResult | None, new: RenderResult, *, max_diffs: int = 20, max_lines: int = 200
) -> ProxyDiff:
    old_snaps = old.snapshots if old is not None else {}
    new_snaps = new.snapshots
    changes: list[ProxyChange] = []
    pairs: dict[tuple[str | None, str | None], list[ProxyChange]] = {}
    by_version: dict[str, RenderedSnapshot] = {}
    for pid in sorted(old_snaps.keys() | new_snaps.keys()):
        o, n = old_snaps.get(pid), new_snaps.get(pid)
        if o is not None and n is not None and (o is n or o.version == n.version):
            continue
        svc = n.service if n is not None else o.service if o is not None else None
        kind = "added" if o is None else "removed" if n is None else "changed"
        c = ProxyChange(pid, str(svc), kind, o.version if o else None, n.version if n else None)
        changes.append(c)
        pairs.setdefault((c.old, c.new), []).append(c)
        for s in (o, n):
            if s is not None:
                by_version[s.version] = s
    total_by_service = Counter(str(s.service) for s in new_snaps.values())
    old_by_service = Counter(str(s.service) for s in old_snaps.values())
    per: dict[str, Counter[str]] = {}
    for c in changes:
        per.setdefault(c.service, Counter())[c.change] += 1
    services = tuple(
        ServiceCount(s, total_by_service.get(s) or old_by_service.get(s, 0),
                     cnt["added"], cnt["changed"], cnt["removed"])
        for s, cnt in sorted(per.items())
    )
    # One diff per distinct version pair, then pairs that change the same way are merged.
    merged: dict[tuple[str, ...], tuple[list[str], tuple[str | None, str | None], list[ProxyChange]]] = {}
    # Diffing is the costly part: only the version pairs covering the most proxies are diffed.
    by_size = sorted(pairs.items(), key=lambda kv: (-len(kv[1]), kv[0][0] or "", kv[0][1] or ""))
    for (ov, nv), members in by_size[: max(100, 5 * max_diffs)]:
        lines = _full_diff(by_version.get(ov) if ov else None, by_version.get(nv) if nv else None)
        hit = merged.setdefault(_body(lines), (lines, (ov, nv), []))
        hit[2].extend(members)
    ranked = sorted(merged.values(), key=lambda m: (-len(m[2]), m[1][0] or "", m[1][1] or ""))
    diffs = []
    for lines, (ov, nv), members in ranked[:max_diffs]:
        text, count, cut = _fold(lines, max_lines)
        diffs.append(SnapshotDiff(ov, nv, tuple(sorted({m.service for m in members})),
                                  len(members), text, count, cut))
    return ProxyDiff(
        total=len(new_snaps),
        unchanged=len(new_snaps) - sum(1 for c in changes if c.change != "removed"),
        changes=tuple(changes),
        services=services,
        diffs=tuple(diffs),
        distinct_changes=len(merged) + max(0, len(by_size) - max(100, 5 * max_diffs)),
    )


__all__ = ["ProxyChange", "ProxyDiff", "ServiceCount", "SnapshotDiff", "proxy_diff"]
