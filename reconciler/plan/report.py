"""A plan as text (terminal), markdown (a pull-request comment) or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .access import AccessFlip
from .plan import Plan
from .proxies import ProxyDiff

MAX_FLIP_LINES = 200
MAX_FIELD_LINES = 200
MAX_RESOURCE_LINES = 300


def _value(v: Any) -> str:
    if v is None:
        return "(none)"
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def _short(version: str | None) -> str:
    return version[:12] if version else "(none)"


def _rev(r: str | None) -> str:
    return r if r is not None else "(nothing)"


_SIGN = {"added": "+", "changed": "~", "removed": "-"}


def _folded_flips(flips: Iterable[AccessFlip]) -> list[tuple[AccessFlip, list[str]]]:
    """Flips that differ only in port/method/path/host, folded into one line each."""
    groups: dict[tuple[Any, ...], tuple[AccessFlip, list[str]]] = {}
    for f in flips:
        k = (f.granted, f.destination, f.sources, f.source_count, f.before, f.after)
        what = f"{f.port} {f.method} {f.path}" + (f" host={f.host}" if f.host != "*" else "")
        groups.setdefault(k, (f, []))[1].append(what)
    return list(groups.values())


def _sources(f: AccessFlip) -> str:
    more = f.source_count - len(f.sources)
    text = ", ".join(f.sources)
    return f"{text} (+{more} more)" if more > 0 else text


def _counts(plan: Plan) -> tuple[int, int, int]:
    rs = plan.resources
    return (sum(r.change == "added" for r in rs), sum(r.change == "changed" for r in rs),
            sum(r.change == "removed" for r in rs))


def _proxy_counts(pd: ProxyDiff) -> str:
    """"N of TOTAL change" counts the target fleet's proxies only; proxies that leave the
    fleet (a removed service) are not among TOTAL, so they are counted apart."""
    removed = sum(1 for c in pd.changes if c.change == "removed")
    text = f"{len(pd.changes) - removed} of {pd.total} change"
    return text + (f", {removed} removed" if removed else "")


def format_text(plan: Plan) -> str:
    out: list[str] = [f"Plan: {_rev(plan.from_rev)} -> {_rev(plan.to_rev)}", ""]
    a, c, r = _counts(plan)
    out.append(f"Resources: {a} added, {c} changed, {r} removed")
    field_lines = 0
    for rc in plan.resources[:MAX_RESOURCE_LINES]:
        out.append(f"  {_SIGN[rc.change]} {rc.kind} {rc.namespace}/{rc.name}  ({rc.file})")
        for fc in rc.fields:
            field_lines += 1
            if field_lines > MAX_FIELD_LINES:
                continue
            out.append(f"      {fc.path}: {_value(fc.old)} -> {_value(fc.new)}  ({fc.location})")
    if field_lines > MAX_FIELD_LINES:
        out.append(f"      ... {field_lines - MAX_FIELD_LINES} more field changes not shown")
    if len(plan.resources) > MAX_RESOURCE_LINES:
        out.append(f"  ... {len(plan.resources) - MAX_RESOURCE_LINES} more resources not shown "
                   "(use --format json)")
    pd = plan.proxies
    n_changed = len(pd.changes)
    out += ["", f"Proxies: {_proxy_counts(pd)}; {pd.unchanged} unchanged"]
    for sc in pd.services:
        parts = [f"{n} {k}" for k, n in (("changed", sc.changed), ("added", sc.added),
                                         ("removed", sc.removed)) if n]
        out.append(f"  {sc.service:<40} {', '.join(parts)} (of {sc.proxies})")
    if pd.changes:
        listed = pd.changes[: plan.limits.max_proxies]
        out.append("  proxies: " + ", ".join(f"{_SIGN[p.change]}{p.proxy}" for p in listed)
                   + (f" ... (+{n_changed - len(listed)} more)" if n_changed > len(listed) else ""))
        out.append(f"  distinct snapshot changes: {pd.distinct_changes}"
                   + (f" (first {len(pd.diffs)} shown)" if pd.distinct_changes > len(pd.diffs) else ""))
    for i, d in enumerate(pd.diffs, 1):
        out.append(f"  --- change {i}: {d.proxies} prox{'y' if d.proxies == 1 else 'ies'} of "
                   f"{', '.join(d.services)}: {_short(d.old)} -> {_short(d.new)}")
        out.extend("    " + line for line in d.diff.rstrip("\n").splitlines())
    ad = plan.access
    out += ["", f"Access: {len(ad.granted)} granted, {len(ad.revoked)} revoked "
            f"({ad.changed_destinations} of {ad.destinations} destinations with changed inputs, "
            f"{ad.groups} groups, {ad.evaluations} evaluations)"]
    folded = _folded_flips(ad.flips)
    for f, whats in folded[:MAX_FLIP_LINES]:
        sign = "+" if f.granted else "-"
        out.append(f"  {sign} {_sources(f)} -> {f.destination} [{'; '.join(whats)}]")
        out.append(f"      {f.before} => {f.after}")
    if len(folded) > MAX_FLIP_LINES:
        out.append(f"  ... {len(folded) - MAX_FLIP_LINES} more not shown (use --format json)")
    if ad.conditional:
        out.append("  note: policies of " + ", ".join(ad.conditional) + " use header/IP "
                   "conditions; the matrix assumes requests without those headers and addresses")
    return "\n".join(out) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


# GitHub refuses comments over 65,536 characters: the markdown stays under this, each section
# within its share, the access matrix first in line (it is what security review reads).
MAX_MARKDOWN_CHARS = 60000
_SHARES = {"access": 24000, "resources": 14000, "proxies": 4000}


def _within(lines: list[str], budget: int) -> tuple[list[str], int]:
    """The first lines that fit in `budget` characters, and how many did not."""
    size = 0
    for i, line in enumerate(lines):
        size += len(line) + 1
        if size > budget:
            return lines[:i], len(lines) - i
    return lines, 0


def format_markdown(plan: Plan) -> str:
    a, c, r = _counts(plan)
    pd, ad = plan.proxies, plan.access
    head = [f"### meshcd plan `{_rev(plan.from_rev)}` \u2192 `{_rev(plan.to_rev)}`", "",
            f"**Resources:** {a} added, {c} changed, {r} removed  ",
            f"**Proxies:** {_proxy_counts(pd)}  ",
            f"**Access:** {len(ad.granted)} granted, {len(ad.revoked)} revoked"]

    resources: list[str] = []
    if plan.resources:
        rows = [f"| {_SIGN[rc.change]} | {rc.kind} | {rc.namespace}/{rc.name} | `{rc.file}` |"
                for rc in plan.resources[:MAX_RESOURCE_LINES]]
        rows, left = _within(rows, _SHARES["resources"] // 2)
        left += max(0, len(plan.resources) - MAX_RESOURCE_LINES)
        resources += ["", "#### Resources", "", "| | kind | resource | file |", "|---|---|---|---|", *rows]
        if left:
            resources.append(f"\n{left} more resources not shown.")
        fields = [(rc, fc) for rc in plan.resources for fc in rc.fields]
        if fields:
            frows = [f"| {rc.kind} {rc.namespace}/{rc.name} | `{fc.path}` | "
                     f"`{_md_escape(_value(fc.old))}` | `{_md_escape(_value(fc.new))}` | `{fc.location}` |"
                     for rc, fc in fields[:MAX_FIELD_LINES]]
            frows, fleft = _within(frows, _SHARES["resources"] // 2)
            fleft += max(0, len(fields) - MAX_FIELD_LINES)
            resources += ["", f"<details><summary>Field changes ({len(fields)})</summary>", "",
                          "| resource | field | old | new | at |", "|---|---|---|---|---|", *frows]
            if fleft:
                resources.append(f"\n{fleft} more not shown.")
            resources += ["", "</details>"]

    access: list[str] = []
    if ad.flips:
        folded = _folded_flips(ad.flips)
        rows = []
        for f, whats in folded[:MAX_FLIP_LINES]:
            sign = "\u2705 granted" if f.granted else "\u26d4 revoked"
            rows.append(f"| {sign} | {_md_escape(_sources(f))} | {f.destination} | "
                        f"{_md_escape('; '.join(whats))} | {f.before} | {f.after} |")
        rows, left = _within(rows, _SHARES["access"])
        left += max(0, len(folded) - MAX_FLIP_LINES)
        access += ["", "#### Access matrix", "", "| | source | destination | requests | before | after |",
                   "|---|---|---|---|---|---|", *rows]
        if left:
            access.append(f"\n{left} more not shown (`--format json` has them all).")
    if ad.conditional:
        access.append("\n_Policies of " + ", ".join(ad.conditional) + " use header/IP conditions; the "
                      "matrix assumes requests without those headers and addresses._")

    proxies: list[str] = []
    if pd.changes:
        rows = [f"| {sc.service} | {sc.proxies} | {sc.changed} | {sc.added} | {sc.removed} |"
                for sc in pd.services]
        rows, left = _within(rows, _SHARES["proxies"])
        proxies += ["", "#### Proxies", "", "| service | proxies | changed | added | removed |",
                    "|---|---|---|---|---|", *rows]
        if left:
            proxies.append(f"\n{left} more services not shown.")
        used = sum(len(x) + 1 for x in (*head, *resources, *access, *proxies))
        budget = MAX_MARKDOWN_CHARS - used - 200
        shown = 0
        for i, d in enumerate(pd.diffs, 1):
            block = ["", f"<details><summary>Change {i}: {d.proxies} prox{'y' if d.proxies == 1 else 'ies'}"
                     f" of {', '.join(d.services)} (<code>{_short(d.old)}</code> \u2192 "
                     f"<code>{_short(d.new)}</code>, {d.lines} diff lines)</summary>", "", "```diff",
                     d.diff.rstrip("\n"), "```", "", "</details>"]
            size = sum(len(x) + 1 for x in block)
            if size > budget:
                break
            budget -= size
            proxies += block
            shown += 1
        if pd.distinct_changes > shown:
            proxies.append(f"\n{pd.distinct_changes - shown} more distinct changes not shown.")
    return "\n".join([*head, *resources, *proxies, *access]) + "\n"


def format_plan(plan: Plan, fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps(plan.to_json(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    if fmt == "markdown":
        return format_markdown(plan)
    return format_text(plan)


__all__ = ["format_markdown", "format_plan", "format_text"]
