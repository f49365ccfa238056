"""The pipeline's decisions, as pure functions over plain data (no store, no sockets, no clock).

- which fleet a revision is rendered for (`render_fleet`),
- what each proxy should run and which proxies a deploy waits for (`deploy_targets`),
- what a deploy's ACK/NACK outcomes mean (`deploy_verdict`),
- which queued revisions a newer commit supersedes (`superseded_by`),
- what to do with unfinished revisions after a restart (`recovery_plan`),
- the stored/audited summaries of findings and plans.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.language.findings import Finding
from reconciler.language.model import ConfigModel, FrozenDict, ServiceRef
from reconciler.revisions.model import SUPERSEDABLE, Revision, RevisionStatus
from renderers import Fleet, Proxy, default_fleet

MAX_FINDINGS_STORED = 200
MAX_PLAN_TEXT = 20_000
MAX_DIFF_TEXT = 200 * 1024  # the revision page folds it further; /diff.txt serves it whole
MAX_ACCESS_CHANGES = 500


@dataclass(frozen=True, slots=True)
class KnownProxy:
    """A proxy the fleet ledger knows (connected now or earlier)."""

    proxy_id: str
    service: str
    namespace: str
    labels: Mapping[str, str]
    connected: bool


def render_fleet(model: ConfigModel, known: Iterable[KnownProxy]) -> Fleet:
    """The static-endpoint fleet of `model`, plus every proxy the ledger knows.

    A known proxy whose id and service match a static endpoint's proxy keeps that proxy's
    ports (it runs where the endpoint says); any other known proxy is rendered with the
    managed layout (no ports of its own). A known proxy's labels come from its hello."""
    static = {p.id: p for p in default_fleet(model)}
    proxies = dict(static)
    for k in known:
        ref = ServiceRef(k.service, k.namespace)
        base = static.get(k.proxy_id)
        if base is not None and base.service == ref:
            proxies[k.proxy_id] = Proxy(base.id, ref, FrozenDict(dict(k.labels)) if k.labels
                                        else base.labels, base.ports)
        else:
            proxies[k.proxy_id] = Proxy(k.proxy_id, ref, FrozenDict(dict(k.labels)))
    return Fleet.of(proxies.values())


@dataclass(frozen=True, slots=True)
class DeployTargets:
    """`assign`: proxy id -> version it should run (known proxies with a snapshot);
    `wait_for`: the connected ones among them, whose answer the deploy waits for;
    `absent`: known but not connected (they get it when they connect)."""

    assign: Mapping[str, str]
    wait_for: tuple[str, ...]
    absent: tuple[str, ...]


def deploy_targets(versions: Mapping[str, str], known: Iterable[KnownProxy]) -> DeployTargets:
    """`versions`: the render's proxy id -> snapshot version."""
    assign: dict[str, str] = {}
    wait: list[str] = []
    absent: list[str] = []
    for k in sorted(known, key=lambda k: k.proxy_id):
        version = versions.get(k.proxy_id)
        if version is None:
            continue  # its service is not in this revision: it keeps what it runs
        assign[k.proxy_id] = version
        (wait if k.connected else absent).append(k.proxy_id)
    return DeployTargets(assign, tuple(wait), tuple(absent))


@dataclass(frozen=True, slots=True)
class DeployVerdict:
    status: RevisionStatus  # DEPLOYED or FAILED; a canary rollout also REJECTED or SUPERSEDED
    acked: tuple[str, ...]
    nacked: dict[str, str]  # proxy id -> error
    timed_out: tuple[str, ...]
    reason: str
    outcome: str | None = None  # a canary rollout's: promoted | rolled_back | aborted | superseded
    details: Mapping[str, Any] | None = None  # stored with the revision (e.g. stage history)

    def to_dict(self) -> dict[str, Any]:
        out = {"status": str(self.status), "acked": list(self.acked),
               "nacked": dict(self.nacked), "timedOut": list(self.timed_out),
               "reason": self.reason}
        if self.outcome is not None:
            out["outcome"] = self.outcome
        if self.details:
            out.update(self.details)
        return out


def deploy_verdict(outcomes: Mapping[str, tuple[str, str | None]]) -> DeployVerdict:
    """`outcomes`: proxy id -> (status acked|nacked|timeout, error). Deployed only when every
    proxy waited for acked; a NACK or a timeout fails the revision (the proxies that NACKed
    keep serving their previous config)."""
    acked = tuple(sorted(p for p, (s, _) in outcomes.items() if s == "acked"))
    nacked = {p: (e or "") for p, (s, e) in sorted(outcomes.items()) if s == "nacked"}
    timed_out = tuple(sorted(p for p, (s, _) in outcomes.items() if s not in ("acked", "nacked")))
    if not nacked and not timed_out:
        return DeployVerdict(RevisionStatus.DEPLOYED, acked, nacked, timed_out,
                             f"{len(acked)} proxies acked")
    parts = []
    if nacked:
        parts.append(f"{len(nacked)} proxies refused it ({', '.join(list(nacked)[:5])})")
    if timed_out:
        parts.append(f"{len(timed_out)} did not answer in time ({', '.join(timed_out[:5])})")
    return DeployVerdict(RevisionStatus.FAILED, acked, nacked, timed_out, "; ".join(parts))


def superseded_by(queued: Sequence[Revision], newest: Revision) -> list[Revision]:
    """The revisions `newest` replaces: every other one that has not started deploying."""
    return [r for r in queued if r.id != newest.id and r.status in SUPERSEDABLE]


@dataclass(frozen=True, slots=True)
class Recovery:
    """After a restart: `resume` the newest unfinished revision (re-run from its start, or
    redo its deploy), and close the older unfinished ones as superseded."""

    resume: Revision | None
    supersede: tuple[Revision, ...]


def recovery_plan(unfinished: Sequence[Revision]) -> Recovery:
    if not unfinished:
        return Recovery(None, ())
    ordered = sorted(unfinished, key=lambda r: r.id)
    newest = ordered[-1]
    # An older revision caught mid-deploy is not superseded (it already reached proxies):
    # it is marked failed by the caller; superseded is only for those never deployed.
    return Recovery(newest, tuple(ordered[:-1]))


def findings_summary(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """What is stored and audited: the first MAX_FINDINGS_STORED findings, errors first."""
    ordered = sorted(findings, key=lambda f: (f.severity.value != "error", f.sort_key()))
    return [
        {"code": f.code, "severity": f.severity.value, "message": f.message,
         "file": f.location.file, "line": f.location.line, "column": f.location.column}
        for f in ordered[:MAX_FINDINGS_STORED]
    ]


def plan_summary(plan_json: Mapping[str, Any], text: str) -> dict[str, Any]:
    """Counts and names from a plan's JSON (`Plan.to_json()`), plus its text (capped).

    For the revision page also: `blastRadius`, [[service, proxies affected], ...] for every
    service with a changed proxy, biggest first (the page shows the top ones and sums the
    rest); `accessChanges`, the access flips (granted first, then revoked; each with its
    `granted` flag), at most MAX_ACCESS_CHANGES, with `accessChangesTruncated` the number
    left out; `diffText`, the plan text capped at MAX_DIFF_TEXT on a line boundary (`text`
    keeps its smaller cap for the API and the audit)."""
    resources = plan_json.get("resources", [])
    proxies = plan_json.get("proxies", {})
    access = plan_json.get("access", {})
    by_change: dict[str, int] = {}
    for r in resources:
        by_change[r["change"]] = by_change.get(r["change"], 0) + 1
    flips = [*access.get("granted", []), *access.get("revoked", [])]
    return {
        "from": plan_json.get("from"),
        "to": plan_json.get("to"),
        "resources": by_change,
        "resourceNames": [f"{r['change']} {r['kind']} {r['namespace']}/{r['name']}"
                          for r in resources[:50]],
        "proxies": {k: proxies.get(k, 0) for k in ("total", "unchanged", "changed", "added",
                                                   "removed")},
        "access": {"granted": len(access.get("granted", [])),
                   "revoked": len(access.get("revoked", []))},
        "text": text if len(text) <= MAX_PLAN_TEXT else text[:MAX_PLAN_TEXT] + "\n[cut]\n",
        "blastRadius": blast_radius(proxies.get("services", [])),
        "accessChanges": [dict(f) for f in flips[:MAX_ACCESS_CHANGES]],
        "accessChangesTruncated": max(0, len(flips) - MAX_ACCESS_CHANGES),
        "diffText": cap_text(text, MAX_DIFF_TEXT),
    }


def blast_radius(services: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    """[[service, proxies added + changed + removed], ...], biggest first, then by name;
    services the plan lists without an affected proxy are left out."""
    counted: list[tuple[str, int]] = []
    for s in services:
        n = int(s.get("added", 0)) + int(s.get("changed", 0)) + int(s.get("removed", 0))
        if n > 0:
            counted.append((str(s.get("service", "")), n))
    counted.sort(key=lambda item: (-item[1], item[0]))
    return [[name, n] for name, n in counted]


def cap_text(text: str, limit: int) -> str:
    """`text` when it has at most `limit` characters, else its whole lines that fit plus a
    line saying how much was cut."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit) + 1 or limit
    rest = text[cut:]
    return text[:cut] + f"[cut: {rest.count(chr(10)) + 1} more lines, {len(rest)} characters]\n"
