"""Text for `meshcd rollout status` / `watch`: a rollout's status (`RolloutEngine.status()`,
plus the API's `revisionId`, `commit`, `startedAt`, `series`) as a few lines: the stage with
a progress bar, one bar per stage, canary vs baseline numbers per service, the error rate
second by second, the stage history and the outcome. Pure: the time is the status's `now`."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

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
    p99 = d.get("p99Ms")
    return (f"{d.get('requests', 0)} req, "
            f"{_pct(d.get('errorRatePercent'))} err, "
            f"{_pct(d.get('denialRatePercent'))} denied, "
            f"p99 {'-' if p99 is None else f'{float(p99):.1f} ms'}")


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _head(s: Mapping[str, Any]) -> str:
    if s.get("revisionId") is None:
        head = f"rollout {s['revision']}"
    else:
        head = f"rollout of revision {s['revisionId']} ({short(s.get('commit') or s['revision'])})"
    if s.get("previous"):
        head += (f" (replacing {short(s['previous'])})" if s.get("revisionId") is None
                 else f", replacing {short(s['previous'])}")
    if s.get("startedAt") is not None and s.get("now") is not None:
        head += f", started {_ago(float(s['now']) - float(s['startedAt']))} ago"
    return head


def _stage_line(s: Mapping[str, Any], width: int) -> str:
    stages = s.get("stages", [])
    n, k = len(stages), int(s.get("stage", 1))
    label = stages[k - 1] if 0 < k <= n else "?"
    phase = str(s.get("phase", ""))
    line = f"  stage {k} of {n} ({label}): {phase.replace('_', ' ')}"
    if phase == "baking" and s.get("bakeElapsed") is not None and s.get("bakeEnds") is not None:
        elapsed = float(s["bakeElapsed"])
        total = elapsed + max(0.0, float(s["bakeEnds"]) - float(s["now"]))
        line += f" {elapsed:.0f}/{total:.0f}s {_bar(elapsed, total, width)}"
    elif phase == "pushing" and s.get("waitingForAck"):
        line += f", waiting for {len(s['waitingForAck'])} ACK(s)"
    elif phase == "paused" and s.get("paused"):
        line += f": {s['paused'].get('reason', '')}"
    if s.get("extensions"):
        line += f" (extended {s['extensions']}x)"
    return line


def _stage_progress(s: Mapping[str, Any]) -> tuple[float, str]:
    """The current stage's fraction done and a word for it."""
    phase = str(s.get("phase", ""))
    if phase == "baking" and s.get("bakeElapsed") is not None and s.get("bakeEnds") is not None:
        elapsed = float(s["bakeElapsed"])
        total = elapsed + max(0.0, float(s["bakeEnds"]) - float(s["now"]))
        return (elapsed / total if total > 0 else 1.0), f"baking {elapsed:.0f}/{total:.0f}s"
    if phase == "pushing":
        acked, waiting = len(s.get("canaries", [])), len(s.get("waitingForAck", []))
        frac = acked / (acked + waiting) if acked + waiting else 0.0
        return frac, (f"pushing, {acked}/{acked + waiting} ACKed" if waiting else "pushing")
    if phase == "paused":
        return 0.0, "paused"
    if phase == "rolling_back":
        return 0.0, "rolling back"
    return 0.0, phase.replace("_", " ")


def stage_bars(s: Mapping[str, Any], width: int = 20) -> list[str]:
    """One line per stage: its bar, and how it went (history) or where it is (current)."""
    stages: Sequence[str] = s.get("stages", [])
    current = int(s.get("stage", 1))
    outcome = (s.get("outcome") or {}).get("outcome")
    judged = {int(h["stage"]): str(h["outcome"]) for h in s.get("history", [])}
    label_w = max((len(x) for x in stages), default=0)
    lines = []
    for i, label in enumerate(stages, start=1):
        if i in judged and i != current:
            frac, word = 1.0, judged[i]
        elif i < current:
            frac, word = 1.0, "skipped"  # a stage that would have added no proxy
        elif i == current and outcome == "promoted":
            frac, word = 1.0, judged.get(i, "promoted")
        elif i == current and (outcome or s.get("phase") == "rolling_back"):
            frac, word = 0.0, judged.get(i, "stopped")
            if outcome:
                word += f", {str(outcome).replace('_', ' ')}"
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


def render_status(status: Mapping[str, Any], width: int = 30) -> str:
    s = status
    lines = [_head(s), _stage_line(s, width)]
    lines.append(f"  canaries: {', '.join(s.get('canaries', [])) or '-'}; "
                 f"baseline: {len(s.get('baseline', []))} proxies")
    verdict = s.get("live") or s.get("lastVerdict")
    if verdict:
        for svc, v in sorted(verdict.get("services", {}).items()):
            outcome = v.get("outcome", "")
            if outcome == "Error" and not (v.get("canary") or {}).get("requests"):
                outcome = "no stats yet"  # the bake's first second: nothing to judge
            lines.append(f"  {svc:<20} canary {_side(v.get('canary'))} | "
                         f"baseline {_side(v.get('baseline'))}  -> {outcome}")
    if s.get("stages"):
        lines.append("  stages:")
        lines.extend(stage_bars(s, max(10, width * 2 // 3)))
    lines.extend(series_lines(s.get("series") or []))
    for h in s.get("history", []):
        lines.append(f"  stage {h['stage']}: {h['outcome']} ({_cut(h['reason'], 100)})")
    if s.get("phase") == "paused":
        lines.append("  waiting for an operator: `meshcd rollout resume` bakes the stage again, "
                     "`promote` passes it, `abort` rolls back")
    if s.get("outcome"):
        o = s["outcome"]
        lines.append(f"  finished: {o['outcome']} (revision {o['revisionStatus']}): {o['reason']}")
    if s.get("next"):
        lines.append(f"  next: {short(s['next'])}")
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


def _check_value(name: str, v: Any) -> str:
    if v is None:
        return "-"
    return f"{float(v):.2f} ms" if "p99" in name else f"{100.0 * float(v):.3f}%"


def _check_line(c: Mapping[str, Any]) -> str:
    name = str(c.get("name", "?"))
    text = f"{name}: canary {_check_value(name, c.get('canary'))}"
    if c.get("baseline") is not None:
        text += f" vs baseline {_check_value(name, c.get('baseline'))}"
    text += f", limit {_check_value(name, c.get('threshold'))}"
    if c.get("pValue") is not None and c.get("alpha") is not None:
        text += f" (p={float(c['pValue']):.3g} < alpha {float(c['alpha']):.3g}, {c.get('test')})"
    return text


def _thresholds(th: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in th.items())


def verdict_lines(verdict: Mapping[str, Any]) -> list[str]:
    """The failing (or deciding) services of a verdict: their numbers, failed checks and
    thresholds; a fleet signal (NACK, ACK timeout, disconnect) by its reason."""
    lines = [f"  decided at stage {verdict.get('stage', '?')}: {verdict.get('outcome')}"
             + (" (early look)" if verdict.get("interim") else "")]
    if verdict.get("signal"):
        lines.append(f"    {verdict['signal']}: {verdict.get('reason', '')}")
    services: Mapping[str, Any] = verdict.get("services") or {}
    for svc, v in sorted(services.items()):
        if verdict.get("outcome") == "Failed" and v.get("outcome") != "Failed" \
                and not verdict.get("signal"):
            continue
        lines.append(f"    {svc}: {v.get('outcome')}: canary {_side(v.get('canary'))} | "
                     f"baseline {_side(v.get('baseline'))}")
        for c in v.get("checks", []):
            if c.get("failed"):
                lines.append(f"      failed {_check_line(c)}")
        if v.get("thresholds"):
            lines.append(f"      thresholds: {_thresholds(v['thresholds'])}")
    return lines


def render_final(status: Mapping[str, Any], width: int = 30) -> str:
    """A finished rollout (`GET /api/revisions/{id}/rollout`): outcome, every stage, and the
    check that decided it with canary vs baseline numbers and thresholds."""
    s = status
    o = s.get("outcome") or {}
    lines = [_head({k: v for k, v in s.items() if k != "startedAt"})]
    if o:
        lines.append(f"  outcome: {str(o.get('outcome', '?')).replace('_', ' ')} "
                     f"(revision {o.get('revisionStatus', '?')}): {o.get('reason', '')}")
    else:
        lines.append(f"  not finished: {str(s.get('phase', '?')).replace('_', ' ')}")
    if s.get("stages"):
        lines.append("  stages:")
        lines.extend(stage_bars(s, max(10, width * 2 // 3)))
    for h in s.get("history", []):
        lines.append(f"  stage {h['stage']}: {h['outcome']} ({_cut(h['reason'], 200)})")
    verdict = s.get("lastVerdict")
    if verdict and o.get("outcome") != "promoted":
        lines.extend(verdict_lines(verdict))
    lines.extend(series_lines(s.get("series") or []))
    if s.get("next"):
        lines.append(f"  next: {short(s['next'])}")
    return "\n".join(lines)


def watch_key(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    """What has to change for a non-terminal `watch` to print a new block: the rollout's
    place and verdicts, not the bake clock ticking."""
    s = doc.get("rollout") or {}
    live = s.get("live") or {}
    return (
        repr(doc.get("pin")), s.get("revisionId"), s.get("revision"), s.get("phase"),
        s.get("stage"), tuple(s.get("canaries", [])), tuple(s.get("waitingForAck", [])),
        repr(s.get("paused")), s.get("extensions"), len(s.get("history", [])),
        tuple(sorted((k, v.get("outcome")) for k, v in (live.get("services") or {}).items())),
        repr(s.get("outcome")), s.get("next"),
    )
