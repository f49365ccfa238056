"""Text for `meshcd rollout status` / `watch`: a rollout's status (`RolloutEngine.status()`,
plus the API's `revisionId`, `commit`, `startedAt`, `series`) as a few lines: the stage with
a progress bar, one bar per stage, canary vs baseline numbers per service, the error rate
second by second, the stage history and the outcome. Pure: the time is the status's `now`.
The status is read once into the typed `RolloutStatus` (the `series` beside it)."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.analysis.judge import Check, Outcome
from reconciler.rollout.status import RolloutStatus
from reconciler.rollout.values import Phase, RolloutOutcome, StageVerdict

# Per-second sparkline (ASCII: any terminal, any log): " " no requests that second, "_" none
# failed, then nine levels up to the larger maximum of canary and baseline.
_SPARK = ".:-=+*#%@"
SPARK_SECONDS = 30


def _cut(text: str, n: int) -> str:
    """`text` up to `n` characters, with an ellipsis when cut (a cut must not look whole)."""
    return text if len(text) <= n else text[: n - 1] + "…"


def _bar(done: float, total: float, width: int) -> str:
    frac = 0.0 if total <= 0 else max(0.0, min(1.0, done / total))
    full = round(frac * width)
    return "[" + "#" * full + "-" * (width - full) + "]"


def short(ref: Any) -> str:
    """A commit sha cut to 12 characters; anything else as is."""
    text = "" if ref is None else str(ref)
    if len(text) == 40 and all(c in string.hexdigits for c in text):
        return text[:12]
    return text


def _pct(v: Any) -> str:
    return "-" if v is None else f"{float(v):.2f}%"


def _side(d: Mapping[str, Any] | None) -> str:
    if not d:
        return "-"
    p99 = d["p99Ms"]
    return (f"{d['requests']} req, "
            f"{_pct(d['errorRatePercent'])} err, "
            f"{_pct(d['denialRatePercent'])} denied, "
            f"p99 {'-' if p99 is None else f'{float(p99):.1f} ms'}")


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _head(s: RolloutStatus, *, age: bool = True) -> str:
    if s.revision_id is None:
        head = f"rollout {s.revision}"
    else:
        head = f"rollout of revision {s.revision_id} ({short(s.commit or s.revision)})"
    if s.previous:
        head += (f" (replacing {short(s.previous)})" if s.revision_id is None
                 else f", replacing {short(s.previous)}")
    if age and s.started_at is not None:
        head += f", started {_ago(s.now - s.started_at)} ago"
    return head


def _bake_of(s: RolloutStatus) -> tuple[float, float] | None:
    """(elapsed, total) seconds of the bake in progress."""
    if s.phase is not Phase.BAKING or s.bake_elapsed is None or s.bake_ends is None:
        return None
    return s.bake_elapsed, s.bake_elapsed + max(0.0, s.bake_ends - s.now)


def _stage_line(s: RolloutStatus, width: int) -> str:
    n, k = len(s.stages), s.stage
    label = s.stages[k - 1] if 0 < k <= n else "?"
    line = f"  stage {k} of {n} ({label}): {s.phase.replace('_', ' ')}"
    bake = _bake_of(s)
    if bake is not None:
        elapsed, total = bake
        line += f" {elapsed:.0f}/{total:.0f}s {_bar(elapsed, total, width)}"
    elif s.phase is Phase.PUSHING and s.waiting_for_ack:
        line += f", waiting for {len(s.waiting_for_ack)} ACK(s)"
    elif s.phase is Phase.PAUSED and s.paused is not None:
        line += f": {s.paused.reason}"
    if s.extensions:
        line += f" (extended {s.extensions}x)"
    return line


def _stage_progress(s: RolloutStatus) -> tuple[float, str]:
    """The current stage's fraction done and a word for it."""
    bake = _bake_of(s)
    if bake is not None:
        elapsed, total = bake
        return (elapsed / total if total > 0 else 1.0), f"baking {elapsed:.0f}/{total:.0f}s"
    if s.phase is Phase.PUSHING:
        acked, waiting = len(s.canaries), len(s.waiting_for_ack)
        frac = acked / (acked + waiting) if acked + waiting else 0.0
        return frac, (f"pushing, {acked}/{acked + waiting} ACKed" if waiting else "pushing")
    if s.phase is Phase.PAUSED:
        return 0.0, "paused"
    if s.phase is Phase.ROLLING_BACK:
        return 0.0, "rolling back"
    return 0.0, s.phase.replace("_", " ")


def stage_bars(s: RolloutStatus, width: int = 20) -> list[str]:
    """One line per stage: its bar, and how it went (history) or where it is (current)."""
    stages = s.stages
    current = s.stage
    outcome = None if s.outcome is None else s.outcome.outcome
    judged = {h.stage: h.outcome.value for h in s.history}
    label_w = max((len(x) for x in stages), default=0)
    lines = []
    for i, label in enumerate(stages, start=1):
        if i in judged and i != current:
            frac, word = 1.0, judged[i]
        elif i < current:
            frac, word = 1.0, "skipped"  # a stage that would have added no proxy
        elif i == current and outcome is RolloutOutcome.PROMOTED:
            frac, word = 1.0, judged.get(i, "promoted")
        elif i == current and (outcome or s.phase is Phase.ROLLING_BACK):
            frac, word = 0.0, judged.get(i, "stopped")
            if outcome:
                word += f", {outcome.replace('_', ' ')}"
            else:
                word += ", rolling back"
        elif i == current:
            frac, word = _stage_progress(s)
            if i in judged:
                word = f"{judged[i]}; {word}"
        else:
            frac, word = 0.0, ""
        lines.append(f"    {i}  {label:<{label_w}}  {_bar(frac, 1.0, width)} {word}".rstrip())
    return lines


def _spark(values: Sequence[float | None], top: float) -> str:
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif v <= 0 or top <= 0:
            out.append("_")
        else:
            out.append(_SPARK[max(0, min(8, round(8 * v / top)))])
    return "".join(out)


def series_lines(series: Sequence[Mapping[str, Any]], seconds: int = SPARK_SECONDS) -> list[str]:
    """The last `seconds` seconds of canary vs baseline error rate, one character a second
    (scaled to the larger maximum of the two; "_": no errors, blank: no requests)."""
    pts = list(series)[-seconds:]
    if not pts:
        return []

    def rate(side: Mapping[str, Any] | None) -> float | None:
        if not side or not side.get("requests"):
            return None
        return float(side.get("errorRatePercent") or 0.0)

    can = [rate(p.get("canary")) for p in pts]
    base = [rate(p.get("baseline")) for p in pts]
    if all(v is None for v in can + base):
        return [f"  error rate per second: no requests in t={pts[0]['t']}..{pts[-1]['t']}s"]
    top = max([v for v in can + base if v is not None], default=0.0)
    span = f"t={pts[0]['t']}..{pts[-1]['t']}s"
    cmax = max([v for v in can if v is not None], default=0.0)
    bmax = max([v for v in base if v is not None], default=0.0)
    return [f"  error rate per second ({span}, scale 0..{top:.2f}%):",
            f"    canary   |{_spark(can, top)}| max {cmax:.2f}%",
            f"    baseline |{_spark(base, top)}| max {bmax:.2f}%"]


def _series(status: RolloutStatus | Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    return [] if isinstance(status, RolloutStatus) else status.get("series") or []


def _typed(status: RolloutStatus | Mapping[str, Any]) -> RolloutStatus:
    return status if isinstance(status, RolloutStatus) else RolloutStatus.from_json(status)


def render_status(status: RolloutStatus | Mapping[str, Any], width: int = 30) -> str:
    s = _typed(status)
    lines = [_head(s), _stage_line(s, width)]
    lines.append(f"  canaries: {', '.join(s.canaries) or '-'}; "
                 f"baseline: {len(s.baseline)} proxies")
    verdict = s.live or s.last_verdict
    if verdict:
        for svc, v in sorted(verdict.services.items()):
            outcome = v.outcome.value
            if v.outcome is Outcome.ERROR and not v.canary.get("requests"):
                outcome = "no stats yet"  # the bake's first second: nothing to judge
            lines.append(f"  {svc:<20} canary {_side(v.canary)} | "
                         f"baseline {_side(v.baseline)}  -> {outcome}")
    if s.stages:
        lines.append("  stages:")
        lines.extend(stage_bars(s, max(10, width * 2 // 3)))
    lines.extend(series_lines(_series(status)))
    for h in s.history:
        lines.append(f"  stage {h.stage}: {h.outcome.value} ({_cut(h.reason, 100)})")
    if s.phase is Phase.PAUSED:
        lines.append("  waiting for an operator: `meshcd rollout resume` bakes the stage again, "
                     "`promote` passes it, `abort` rolls back")
    if s.outcome is not None:
        o = s.outcome
        lines.append(f"  finished: {o.outcome.value} (revision {o.revision_status.value}): "
                     f"{o.reason}")
    if s.next:
        lines.append(f"  next: {short(s.next)}")
    return "\n".join(lines)


def pin_banner(pin: Mapping[str, Any]) -> str:
    reason = pin.get("reason") or "no reason given"
    return (f"PINNED to revision {pin['revision']} ({short(pin.get('commit'))}) by "
            f"{pin.get('actor', '?')}: {reason}; new commits are held until "
            "`meshcd rollout resume`")


def render_rollout(doc: Mapping[str, Any], width: int = 30) -> str:
    """`GET /api/rollout` (`{"rollout": STATUS | None, "pin": PIN | None}`) as text."""
    lines = []
    if doc.get("pin"):
        lines.append(pin_banner(doc["pin"]))
    status = doc.get("rollout")
    lines.append(render_status(status, width) if status else "no rollout in progress")
    return "\n".join(lines)


def _check_value(name: str, v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f} ms" if "p99" in name else f"{100.0 * v:.3f}%"


def _check_line(c: Check) -> str:
    text = f"{c.name}: canary {_check_value(c.name, c.canary)}"
    if c.baseline is not None:
        text += f" vs baseline {_check_value(c.name, c.baseline)}"
    text += f", limit {_check_value(c.name, c.threshold)}"
    if c.p_value is not None and c.alpha is not None:
        text += f" (p={c.p_value:.3g} < alpha {c.alpha:.3g}, {c.test})"
    return text


def _thresholds(th: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in th.items())


def verdict_lines(verdict: StageVerdict) -> list[str]:
    """The failing (or deciding) services of a verdict: their numbers, failed checks and
    thresholds; a fleet signal (NACK, ACK timeout, disconnect) by its reason."""
    lines = [f"  decided at stage {verdict.stage}: {verdict.outcome.value}"
             + (" (early look)" if verdict.interim else "")]
    if verdict.signal is not None:
        lines.append(f"    {verdict.signal.value}: {verdict.reason}")
    for svc, v in sorted(verdict.services.items()):
        if verdict.outcome is Outcome.FAILED and v.outcome is not Outcome.FAILED \
                and verdict.signal is None:
            continue
        lines.append(f"    {svc}: {v.outcome.value}: canary {_side(v.canary)} | "
                     f"baseline {_side(v.baseline)}")
        for c in v.checks:
            if c.failed:
                lines.append(f"      failed {_check_line(c)}")
        if v.thresholds:
            lines.append(f"      thresholds: {_thresholds(v.thresholds)}")
    return lines


def render_final(status: RolloutStatus | Mapping[str, Any], width: int = 30) -> str:
    """A finished rollout (`GET /api/revisions/{id}/rollout`): outcome, every stage, and the
    check that decided it with canary vs baseline numbers and thresholds."""
    s = _typed(status)
    o = s.outcome
    lines = [_head(s, age=False)]
    if o is not None:
        lines.append(f"  outcome: {o.outcome.replace('_', ' ')} "
                     f"(revision {o.revision_status.value}): {o.reason}")
    else:
        lines.append(f"  not finished: {s.phase.replace('_', ' ')}")
    if s.stages:
        lines.append("  stages:")
        lines.extend(stage_bars(s, max(10, width * 2 // 3)))
    for h in s.history:
        lines.append(f"  stage {h.stage}: {h.outcome.value} ({_cut(h.reason, 200)})")
    verdict = s.last_verdict
    if verdict and (o is None or o.outcome is not RolloutOutcome.PROMOTED):
        lines.extend(verdict_lines(verdict))
    lines.extend(series_lines(_series(status)))
    if s.next:
        lines.append(f"  next: {short(s.next)}")
    return "\n".join(lines)


def watch_key(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """What has to change for a non-terminal `watch` to print a new block: the rollout's
    place and verdicts, not the bake clock ticking."""
    raw = doc.get("rollout")
    if not raw:
        return (repr(doc.get("pin")),)
    s = RolloutStatus.from_json(raw)
    live = {} if s.live is None else s.live.services
    return (
        repr(doc.get("pin")), s.revision_id, s.revision, s.phase, s.stage, s.canaries,
        s.waiting_for_ack, s.paused, s.extensions, len(s.history),
        tuple(sorted((k, v.outcome) for k, v in live.items())), s.outcome, s.next,
    )
