"""From the controller's JSON shapes to the pages' read model. Pure.

The controller already has dict forms of its state (what the JSON API answers):
`Revision.to_dict()` (docs/controller.md), `LedgerEntry.to_dict()` (docs/fleet.md), the
revision's stored `findings` and `plan` summaries. These functions turn them into the
`readmodel` dataclasses, so a `PagesData` implementation is mostly plumbing. They read the
dicts by key (no import of the controller's packages). A rollout's status is read once into
the typed `reconciler.rollout.RolloutStatus` (its `from_json` refuses a malformed one by
name) and the rollout views are built from that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.pages.readmodel import (
    AccessChange,
    Finding,
    ProxyRow,
    RevisionRow,
    RolloutView,
    SeriesPoint,
    Signals,
    StageView,
)
from reconciler.rollout import (
    Phase,
    RolloutOutcome,
    RolloutStatus,
    StageOutcome,
    StageResult,
    StageVerdict,
)


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
    """A plan's access diff `{"granted": [...], "revoked": [...]}`. Entries are the plan's
    access flips (`{destination, port, method, path, host, sources, source_count, before,
    after}`, reconciler/plan/access.py), other dicts with `source`/`from` and
    `destination`/`to` (anything else shown as detail), or strings."""
    out: list[AccessChange] = []
    for key, change in (("granted", "now allowed"), ("revoked", "now denied")):
        for item in access.get(key, []) or []:
            if isinstance(item, Mapping) and "sources" in item:
                out.append(_flip(item, change))
            elif isinstance(item, Mapping):
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


@dataclass(frozen=True, slots=True)
class PlanParts:
    """What the revision page shows of a stored plan summary."""

    diff: str
    blast_radius: tuple[tuple[str, int], ...]
    access: tuple[AccessChange, ...]
    access_more: int


def plan_parts(plan: Mapping[str, Any]) -> PlanParts:
    """A revision's stored plan summary (`reconciler.revisions.decisions.plan_summary`):
    `diffText` (else the shorter `text`), `blastRadius`, `accessChanges` (flips with their
    `granted` flag) and `accessChangesTruncated`. Summaries stored before these keys existed
    give an empty blast radius and whatever access lists they hold."""
    blast = tuple(
        (str(item[0]), int(item[1]))
        for item in plan.get("blastRadius") or []
        if isinstance(item, Sequence) and len(item) == 2
    )
    flips = plan.get("accessChanges")
    if isinstance(flips, list):
        split: dict[str, list[Any]] = {"granted": [], "revoked": []}
        for f in flips:
            granted = f.get("granted", True) if isinstance(f, Mapping) else True
            split["granted" if granted else "revoked"].append(f)
        access = access_changes(split)
    else:
        stored = plan.get("access") or {}
        access = access_changes({k: v for k, v in stored.items() if isinstance(v, list)})
    return PlanParts(
        diff=str(plan.get("diffText") or plan.get("text") or ""),
        blast_radius=blast,
        access=access,
        access_more=int(plan.get("accessChangesTruncated") or 0),
    )


def _flip(item: Mapping[str, Any], change: str) -> AccessChange:
    """One access flip: callers (identities, capped by the planner) -> destination:port,
    with the request class it applies to and the decisions before and after."""
    sources = [str(x) for x in item.get("sources") or []]
    count = int(item.get("source_count", len(sources)) or len(sources))
    caller = ", ".join(sources) or "-"
    if count > len(sources):
        caller += f" and {count - len(sources)} more"
    dest = str(item.get("destination", ""))
    if item.get("port") is not None:
        dest += f":{item['port']}"
    request = " ".join(
        str(item[k]) for k in ("method", "path") if item.get(k) not in (None, "", "*")
    )
    host = item.get("host")
    if host not in (None, "", "*"):
        request += f" host {host}"
    detail = f"{request or 'any request'}: {item.get('before', '?')} -> {item.get('after', '?')}"
    return AccessChange(caller, dest, change, detail)


# -- rollouts: the controller's STATUS (RolloutEngine.status + revisionId, commit, startedAt,
#    series; docs/rollout.md), typed, as the pages' RolloutView / StageView / Signals --------

_FAILED = (StageOutcome.FAILED, StageOutcome.ERROR)
_END_STATE = {RolloutOutcome.PROMOTED: "done", RolloutOutcome.ROLLED_BACK: "rolled_back",
              RolloutOutcome.ABORTED: "aborted", RolloutOutcome.SUPERSEDED: "superseded"}


def typed_status(status: RolloutStatus | Mapping[str, Any]) -> RolloutStatus:
    """The STATUS dict read once into the typed status (a ValueError names what is wrong)."""
    return status if isinstance(status, RolloutStatus) else RolloutStatus.from_json(status)


def rollout_state(status: RolloutStatus | Mapping[str, Any]) -> str:
    """pushing/baking -> running, paused -> paused, rolling_back -> rolling_back, done ->
    done (promoted) / rolled_back / aborted / superseded."""
    s = typed_status(status)
    if s.phase in (Phase.PUSHING, Phase.BAKING):
        return "running"
    if s.phase is Phase.DONE and s.outcome is not None:
        return _END_STATE[s.outcome.outcome]
    return s.phase.value


def point_signals(sig: Mapping[str, Any]) -> Signals:
    """A series point's SIG (one second, summed over the group's proxies): its denials are
    the denied requests of that second, i.e. per second."""
    requests = int(sig.get("requests") or 0)
    return Signals(
        error_rate=float(sig.get("errorRatePercent") or 0.0) / 100.0,
        p99_ms=_float_or_none(sig.get("p99Ms")),
        denials=float(sig.get("denials") or 0),
        denial_rate=float(sig.get("denialRatePercent") or 0.0) / 100.0,
        requests=requests,
    )


def series_points(points: Sequence[Mapping[str, Any]]) -> tuple[SeriesPoint, ...]:
    """STATUS["series"] (SeriesRecorder.to_list()) as SeriesPoints, in order of t."""
    out = [
        SeriesPoint(
            t=int(p.get("t", 0)),
            canary=point_signals(p.get("canary") or {}),
            baseline=point_signals(p["baseline"]) if p.get("baseline") else None,
            stage=int(p.get("stage") or 0),
        )
        for p in points
    ]
    out.sort(key=lambda p: p.t)
    return tuple(out)


def stage_signals(verdict: StageVerdict, side: str) -> Signals | None:
    """One side ("canary" / "baseline") of a stage verdict, over its services: requests,
    errors and denials summed; p99 is the worst service's (a p99 cannot be merged from
    summaries). Denials per second: the side's proxy-seconds over its proxy count is the
    wall time covered."""
    parts = [p for v in verdict.services.values()
             if (p := v.canary if side == "canary" else v.baseline)]
    if not parts:
        return None
    requests = sum(int(p["requests"]) for p in parts)
    errors = sum(int(p["errors"]) for p in parts)
    denials = sum(int(p["denials"]) for p in parts)
    proxy_seconds = sum(int(p["seconds"]) for p in parts)
    p99s = [float(p["p99Ms"]) for p in parts if p["p99Ms"] is not None]
    proxies = len(verdict.canaries if side == "canary" else verdict.baseline) or 1
    wall = proxy_seconds / proxies
    return Signals(
        error_rate=errors / requests if requests else 0.0,
        p99_ms=max(p99s) if p99s else None,
        denials=denials / wall if wall > 0 else 0.0,
        denial_rate=denials / requests if requests else 0.0,
        requests=requests,
    )


# check name -> the page's threshold key; rates stay fractions (0..1), latencies ms.
_THRESHOLD_KEYS = {
    "error_rate": "error_rate",
    "p99_latency": "p99_ms",
    "denial_rate": "denial_rate",
    "error_rate_vs_baseline": "error_rate_vs_baseline",
    "denial_rate_vs_baseline": "denial_rate_vs_baseline",
    "p99_vs_baseline": "p99_vs_baseline_ms",
}


def verdict_thresholds(verdict: StageVerdict) -> dict[str, float]:
    """The limits the judge applied, from its checks; with several services the strictest
    (services can have their own RolloutPolicy)."""
    out: dict[str, float] = {}
    for svc in verdict.services.values():
        for check in svc.checks:
            key = _THRESHOLD_KEYS.get(check.name)
            limit = check.threshold
            if key is None or limit is None:
                continue
            out[key] = min(out.get(key, limit), limit)
    return out


def _float_or_none(v: Any) -> float | None:
    return None if v is None else float(v)


def _epoch(v: float) -> datetime:
    return datetime.fromtimestamp(v, UTC)


def _stage_size(label: str, index: int, count: int, eligible: int, all_targets: int) -> int:
    """Proxies a stage puts on the new config, from its label ("1 proxy, bake 3s",
    "50%, bake 3s"); the last stage is every target (reconciler.rollout.stages)."""
    if index == count - 1:
        return all_targets
    head = label.split(",", 1)[0].strip()
    try:
        if head.endswith("%"):
            want = math.ceil(float(head[:-1]) / 100.0 * eligible - 1e-9)
        else:
            want = int(head.split()[0])
    except (ValueError, IndexError):
        return 0
    return max(1, min(eligible, want)) if eligible else 0


def _detail(s: RolloutStatus, state: str) -> str:
    if s.phase is Phase.PUSHING:
        waiting = s.waiting_for_ack
        return f"waiting for {len(waiting)} ACK(s)" if waiting else "pushing"
    if s.phase is Phase.BAKING:
        bake = _bake(s)
        return f"baking {bake[0]:.0f} of {bake[1]:.0f} s" if bake else "baking"
    if s.phase is Phase.PAUSED:
        return f"paused: {s.paused.reason if s.paused else ''}".rstrip(": ")
    if s.phase is Phase.ROLLING_BACK:
        return "rolling back: canaries go back to the previous config"
    if s.outcome is not None:  # the state already says how it ended: say why
        return s.outcome.reason or s.outcome.outcome.value
    return ""


def rollout_view(status: RolloutStatus | Mapping[str, Any]) -> RolloutView:
    """A rollout's status (typed, or the STATUS dict, read once) as the overview's /
    revision page's RolloutView.

    Stage statuses: stages before the current one are passed or failed by their last
    history entry (none: skipped, as by a promote --full or a stage with nobody to add);
    the current one is running / paused, or ended by the outcome; later ones are pending,
    or not-run once the rollout ended early. Each stage's numbers and thresholds come from
    the verdict about it: the live one while baking, else the last verdict."""
    s = typed_status(status)
    labels = s.stages
    count = len(labels)
    current = max(0, min(s.stage - 1, max(count - 1, 0)))
    state = rollout_state(s)
    last: dict[int, StageResult] = {h.stage - 1: h for h in s.history}
    verdicts: dict[int, StageVerdict] = {}
    for v in (s.last_verdict, s.live):
        if v is not None:
            verdicts[v.stage - 1] = v
    canaries = len(s.canaries) + len(s.waiting_for_ack)
    eligible = canaries + len(s.baseline)
    now = _epoch(s.now)
    started = now if s.started_at is None else _epoch(s.started_at)
    bake_started = None if s.bake_elapsed is None else _epoch(s.now - s.bake_elapsed)
    outcome = s.outcome.outcome.value if s.outcome is not None and state != "rolling_back" \
        else None

    stages: list[StageView] = []
    for i, label in enumerate(labels):
        h = last.get(i)
        decision = f"{h.outcome.value}: {h.reason}" if h else None
        if i < current:
            st = "failed" if h and h.outcome in _FAILED else "passed" if h else "skipped"
        elif i == current:
            if h and h.outcome in _FAILED:
                st = "failed"
            elif state in ("running", "paused"):
                st = state
            elif state == "done":
                st = "passed"
            elif state in ("aborted", "superseded"):
                st = state
            elif state == "rolled_back":
                st = "failed"
            else:  # rolling_back without a failed verdict: aborted or superseded
                st = "aborted"
            if decision is None and state not in ("running", "paused"):
                decision = _detail(s, state)
        else:
            st = "pending" if state in ("running", "paused") else "not-run"
        size = canaries if i == current and state in ("running", "paused") else _stage_size(
            label, i, count, eligible, eligible)
        verdict = verdicts.get(i)
        stages.append(StageView(
            index=i,
            name=label,
            proxies=size,
            status=st,
            decision=decision,
            thresholds=verdict_thresholds(verdict) if verdict else {},
            canary=stage_signals(verdict, "canary") if verdict else None,
            baseline=stage_signals(verdict, "baseline") if verdict else None,
            started_at=bake_started if i == current else None,
        ))
    return RolloutView(
        revision_id=s.revision_id or 0,
        commit=s.commit or s.revision,
        state=state,
        current_stage=current,
        stages=tuple(stages),
        started_at=started,
        updated_at=now,
        detail=_detail(s, state),
        outcome=outcome,
        bake=_bake(s),
    )


def _bake(s: RolloutStatus) -> tuple[float, float] | None:
    """(elapsed, total) seconds of the bake in progress; None unless baking."""
    if s.phase is not Phase.BAKING or s.bake_elapsed is None or s.bake_ends is None:
        return None
    return s.bake_elapsed, s.bake_elapsed + max(0.0, s.bake_ends - s.now)


def pinned_text(pin: Mapping[str, Any] | None) -> str | None:
    """The pinned banner: `{"revision", "commit", "actor", "at", "reason"}`."""
    if not pin:
        return None
    text = (f"the fleet is pinned to revision {pin.get('revision', '?')} "
            f"({str(pin.get('commit') or '')[:12]}) by {pin.get('actor', '?')}")
    at = parse_time(pin.get("at"))
    if at is not None:
        text += f" at {at.strftime('%Y-%m-%d %H:%M:%S UTC')}"
    if pin.get("reason"):
        text += f": {pin['reason']}"
    return text + "; new revisions are held until an operator resumes"


def rollback_message(answer: Mapping[str, Any]) -> str:
    """One line for the controller's rollback answer (`POST /api/rollback`'s body)."""
    msg = str(answer.get("message") or "")
    parts = [f"rolling back to revision {answer.get('target', '?')}"]
    if answer.get("revision") is not None:
        parts.append(f"as revision {answer['revision']}")
    if answer.get("commit"):
        parts.append(f"(commit {str(answer['commit'])[:12]})")
    if answer.get("revertCommit"):
        parts.append(f"with revert commit {str(answer['revertCommit'])[:12]}")
    head = " ".join(parts)
    return f"{head}: {msg}" if msg else head
