"""Text for `meshcd rollout status` / `watch`: a rollout's `RolloutEngine.status()` as a few
lines (a progress bar for the stage, canary vs baseline numbers per service). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _bar(done: float, total: float, width: int) -> str:
    frac = 0.0 if total <= 0 else max(0.0, min(1.0, done / total))
    full = round(frac * width)
    return "[" + "#" * full + "-" * (width - full) + "]"


def _side(d: Mapping[str, Any] | None) -> str:
    if not d:
        return "-"
    err = d.get("errorRatePercent")
    den = d.get("denialRatePercent")
    p99 = d.get("p99Ms")
    return (f"{d.get('requests', 0)} req, "
            f"{'-' if err is None else f'{err:.2f}%'} err, "
            f"{'-' if den is None else f'{den:.2f}%'} denied, "
            f"p99 {'-' if p99 is None else f'{p99:.1f} ms'}")


def render_status(status: Mapping[str, Any], width: int = 30) -> str:
    s = status
    stages = s.get("stages", [])
    head = f"rollout {s['revision']}"
    if s.get("previous"):
        head += f" (replacing {s['previous']})"
    lines = [head]
    n, k = len(stages), int(s.get("stage", 1))
    label = stages[k - 1] if 0 < k <= n else "?"
    phase = s.get("phase", "")
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
    lines.append(line)
    lines.append(f"  canaries: {', '.join(s.get('canaries', [])) or '-'}; "
                 f"baseline: {len(s.get('baseline', []))} proxies")
    verdict = s.get("live") or s.get("lastVerdict")
    if verdict:
        for svc, v in sorted(verdict.get("services", {}).items()):
            lines.append(f"  {svc:<20} canary {_side(v.get('canary'))} | "
                         f"baseline {_side(v.get('baseline'))}  -> {v.get('outcome', '')}")
    for h in s.get("history", []):
        lines.append(f"  stage {h['stage']}: {h['outcome']} ({h['reason'][:100]})")
    if s.get("outcome"):
        o = s["outcome"]
        lines.append(f"  finished: {o['outcome']} (revision {o['revisionStatus']}): {o['reason']}")
    if s.get("next"):
        lines.append(f"  next: {s['next']}")
    return "\n".join(lines)

