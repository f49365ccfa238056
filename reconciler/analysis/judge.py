"""The canary judge: one stage's evidence in, a verdict with every number it used out. Pure.

Signals and rules (docs/rollout.md has the reasoning):

- NACKs and disconnects of canaries running the new config: Failed at once.
- No stats window at all from the canaries: Error.
- Absolute guards on the canaries (no baseline needed):
  - error rate (5xx + connection failures) over `maxErrorRatePercent`, and significantly so:
    the exact binomial test of "true rate <= the limit" rejects at alpha;
  - p99 latency over `maxP99LatencyMs`, and significantly so: more than 1% of requests are
    certainly slower than the limit (binomial test against 1%);
  - denial rate over `maxErrorRatePercent` (only when there is no baseline to compare with).
- Relative checks against the baseline (proxies of the same service still on the old config,
  over the same seconds), only when the baseline has at least `minRequests` requests. Each
  fails only when the increase is both large (over `maxIncreaseOverBaselinePercent`) and
  statistically significant at alpha:
  - error rate and denial rate: Fisher's exact test (small counts) or the two-proportion
    z-test with continuity correction, widened by the overdispersion the baseline proxies
    show among themselves (quasi-binomial); the baseline rate is floored at RATE_FLOOR so
    that 0 -> 0.05% is not an "infinite" increase;
  - p99 latency: the canary's p99 over the baseline's by more than the allowed increase,
    and significantly more canary requests than baseline requests slower than that limit
    (a rate test on the histogram tails); Mann-Whitney U is reported alongside.
- alpha = (1 - confidence) / (number of statistical checks) (Bonferroni), so one look at a
  healthy stage fails with probability at most 1 - confidence whatever the number of signals.
- Any failed check: Failed. Otherwise fewer than `minRequests` canary requests:
  Inconclusive. Otherwise Successful.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from reconciler.analysis.sample import LATENCY_BUCKETS, Sample
from reconciler.analysis.stats import (
    binomial_sf,
    count_above,
    dispersion,
    histogram_quantile,
    mann_whitney_greater,
    rate_greater,
    ratio_greater,
)
from reconciler.language.model import Analysis

RATE_FLOOR = 0.001  # 0.1%: the smallest baseline rate a relative increase is measured from
P99_TAIL = 0.01


class Outcome(enum.StrEnum):
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


# Worst first: a stage's outcome is the worst of its services'.
_SEVERITY = {Outcome.FAILED: 3, Outcome.ERROR: 2, Outcome.INCONCLUSIVE: 1, Outcome.SUCCESSFUL: 0}


def worst(outcomes: list[Outcome]) -> Outcome:
    return max(outcomes, key=lambda o: _SEVERITY[o], default=Outcome.SUCCESSFUL)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    canary: float | None
    baseline: float | None
    threshold: float | None
    p_value: float | None
    alpha: float | None
    test: str
    failed: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 6)

        return {"name": self.name, "canary": r(self.canary), "baseline": r(self.baseline),
                "threshold": r(self.threshold), "pValue": None if self.p_value is None
                else float(f"{self.p_value:.6g}"), "alpha": r(self.alpha), "test": self.test,
                "failed": self.failed, "note": self.note}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Check:
        def f(v: Any) -> float | None:
            return None if v is None else float(v)

        return cls(str(d["name"]), f(d["canary"]), f(d["baseline"]), f(d["threshold"]),
                   f(d["pValue"]), f(d["alpha"]), str(d["test"]), bool(d["failed"]),
                   str(d.get("note", "")))


class Summary(TypedDict):
    """The numbers of one side (canary or baseline), as the audit and the page show them:
    rates in percent (None without requests), `seconds` counts proxy-seconds."""

    requests: int
    errors: int
    errorRatePercent: float | None
    denials: int
    denialRatePercent: float | None
    p99Ms: float | None
    seconds: int


class Thresholds(TypedDict):
    """The limits a service was judged by (its `Analysis`, in the API's words)."""

    maxErrorRatePercent: float
    maxP99LatencyMs: float
    maxIncreaseOverBaselinePercent: float
    minRequests: int
    confidence: float


def summary(s: Sample) -> Summary:
    """The numbers of one side, as the audit and the page show them."""
    p99 = histogram_quantile(0.99, LATENCY_BUCKETS, s.latency_buckets)
    return {
        "requests": s.total,
        "errors": s.errors,
        "errorRatePercent": round(100.0 * s.errors / s.total, 4) if s.total else None,
        "denials": s.denied,
        "denialRatePercent": round(100.0 * s.denied / s.total, 4) if s.total else None,
        "p99Ms": None if p99 is None else round(p99 * 1000.0, 3),
        "seconds": s.seconds,
    }


def _summary_from(d: Mapping[str, Any]) -> Summary:
    return {"requests": d["requests"], "errors": d["errors"],
            "errorRatePercent": d["errorRatePercent"], "denials": d["denials"],
            "denialRatePercent": d["denialRatePercent"], "p99Ms": d["p99Ms"],
            "seconds": d["seconds"]}


def _thresholds_from(d: Mapping[str, Any]) -> Thresholds:
    return {"maxErrorRatePercent": d["maxErrorRatePercent"],
            "maxP99LatencyMs": d["maxP99LatencyMs"],
            "maxIncreaseOverBaselinePercent": d["maxIncreaseOverBaselinePercent"],
            "minRequests": d["minRequests"], "confidence": d["confidence"]}


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str
    checks: tuple[Check, ...]
    canary: Summary
    baseline: Summary | None
    thresholds: Thresholds

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": str(self.outcome), "reason": self.reason,
                "canary": dict(self.canary),
                "baseline": None if self.baseline is None else dict(self.baseline),
                "thresholds": dict(self.thresholds),
                "checks": [c.to_dict() for c in self.checks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        """Read `to_dict`'s form back (a stored rollout state's last verdict)."""
        baseline = d["baseline"]
        return cls(Outcome(d["outcome"]), str(d["reason"]),
                   tuple(Check.from_dict(c) for c in d["checks"]), _summary_from(d["canary"]),
                   None if baseline is None else _summary_from(baseline),
                   _thresholds_from(d["thresholds"]))


def thresholds(a: Analysis) -> Thresholds:
    return {"maxErrorRatePercent": a.max_error_rate_percent,
            "maxP99LatencyMs": a.max_p99_latency_ms,
            "maxIncreaseOverBaselinePercent": a.max_increase_over_baseline_percent,
            "minRequests": a.min_requests, "confidence": a.confidence}


def _rate(n: int, total: int) -> float | None:
    return n / total if total else None


def _abs_rate_check(name: str, events: int, total: int, limit: float, alpha: float) -> Check:
    rate = _rate(events, total)
    if rate is None:
        return Check(name, None, None, limit, None, alpha, "binomial", False, "no requests")
    p = binomial_sf(events, total, limit)
    failed = rate > limit and p < alpha
    return Check(name, rate, None, limit, p, alpha, "binomial", failed)


def _rel_rate_check(name: str, c_events: int, c_total: int, b_events: int, b_total: int,
                    increase: float, alpha: float, phi: float) -> Check:
    cr, br = _rate(c_events, c_total), _rate(b_events, b_total)
    if cr is None or br is None:
        return Check(name, cr, br, None, None, alpha, "none", False, "no requests")
    limit = max(br, RATE_FLOOR) * (1.0 + increase)
    p, test = ratio_greater(c_events, c_total, b_events, b_total, 1.0 + increase,
                            dispersion=phi)
    failed = cr > limit and p < alpha
    return Check(name, cr, br, limit, p, alpha, test, failed,
                 f"{c_events}/{c_total} vs {b_events}/{b_total}, dispersion {phi:.2f}")


def _tail_check(canary: Sample, baseline: Sample, parts: Sequence[Sample], increase: float,
                alpha: float) -> Check:
    """p99 vs baseline: the canary's p99 is over the baseline's by more than `increase`, and
    significantly more of the canary's requests are slower than that limit (rounded up to a
    bucket bound, where counts are exact) than the baseline's. Mann-Whitney U (a shift of
    the whole distribution) is reported alongside."""
    bounds = LATENCY_BUCKETS
    p99_c = histogram_quantile(0.99, bounds, canary.latency_buckets)
    p99_b = histogram_quantile(0.99, bounds, baseline.latency_buckets)
    _, z, p_mw = mann_whitney_greater(canary.latency_buckets, baseline.latency_buckets)
    if p99_c is None or p99_b is None:
        return Check("p99_vs_baseline", None, None, None, None, alpha, "none", False,
                     "no latencies")
    limit = p99_b * (1.0 + increase)
    edge = next((b for b in bounds if b >= limit - 1e-12), None)
    c_n, b_n = sum(canary.latency_buckets), sum(baseline.latency_buckets)
    if edge is None:
        return Check("p99_vs_baseline", p99_c * 1000, p99_b * 1000, limit * 1000, None, alpha,
                     "none", False, "limit beyond the last bucket")
    c_ex = count_above(edge, bounds, canary.latency_buckets)
    b_ex = count_above(edge, bounds, baseline.latency_buckets)
    phi = dispersion([count_above(edge, bounds, s.latency_buckets) for s in parts],
                     [sum(s.latency_buckets) for s in parts])
    p, test = rate_greater(c_ex, c_n, b_ex, b_n, dispersion=phi)
    failed = p99_c > limit and c_ex > P99_TAIL * c_n and p < alpha
    return Check("p99_vs_baseline", p99_c * 1000, p99_b * 1000, limit * 1000, p, alpha,
                 f"tail-exceedance {test}", failed,
                 f"over {edge * 1000:g} ms: {c_ex}/{c_n} vs {b_ex}/{b_n}, dispersion "
                 f"{phi:.2f}; mann-whitney z={z:.2f} p={p_mw:.3g}")


def judge(canary: Sample, baseline: Sample | None, analysis: Analysis, *, nacks: int = 0,
          disconnects: int = 0, alpha: float | None = None,
          baseline_parts: Sequence[Sample] = ()) -> Verdict:
    """Judge one service's canaries against its baseline. `alpha` overrides the family-wise
    level 1 - confidence (the engine passes a stricter one for looks before the bake ends).
    `baseline_parts`: the baseline per proxy, to measure how much healthy proxies differ
    (overdispersion); without it the tests assume they do not."""
    a = analysis
    th = thresholds(a)
    c_sum = summary(canary)
    use_baseline = baseline is not None and baseline.total >= a.min_requests
    b_sum = summary(baseline) if baseline is not None else None
    if nacks or disconnects:
        why = []
        if nacks:
            why.append(f"{nacks} canary NACK(s)")
        if disconnects:
            why.append(f"{disconnects} canary disconnect(s) on the new config")
        return Verdict(Outcome.FAILED, "; ".join(why), (), c_sum, b_sum, th)
    if canary.seconds == 0:
        return Verdict(Outcome.ERROR, "no stats from the canaries", (), c_sum, b_sum, th)

    family = (1.0 - a.confidence) if alpha is None else alpha
    n_checks = 2 + (3 if use_baseline else 1)
    level = family / n_checks
    inc = a.max_increase_over_baseline_percent / 100.0
    checks: list[Check] = [
        _abs_rate_check("error_rate", canary.errors, canary.total,
                        a.max_error_rate_percent / 100.0, level),
    ]
    # p99 over the limit <=> more than 1% of requests slower than the limit.
    limit_s = a.max_p99_latency_ms / 1000.0
    p99_c = histogram_quantile(0.99, LATENCY_BUCKETS, canary.latency_buckets)
    slow = count_above(limit_s, LATENCY_BUCKETS, canary.latency_buckets)
    lat_n = sum(canary.latency_buckets)
    p_slow = binomial_sf(slow, lat_n, P99_TAIL) if lat_n else None
    checks.append(Check(
        "p99_latency", None if p99_c is None else p99_c * 1000.0, None, a.max_p99_latency_ms,
        p_slow, level, "binomial", p99_c is not None and p99_c > limit_s
        and p_slow is not None and p_slow < level, f"{slow} of {lat_n} requests over the limit"))
    if use_baseline:
        assert baseline is not None
        parts = list(baseline_parts)
        phi_e = dispersion([s.errors for s in parts], [s.total for s in parts])
        phi_d = dispersion([s.denied for s in parts], [s.total for s in parts])
        checks.append(_rel_rate_check("error_rate_vs_baseline", canary.errors, canary.total,
                                      baseline.errors, baseline.total, inc, level, phi_e))
        checks.append(_rel_rate_check("denial_rate_vs_baseline", canary.denied, canary.total,
                                      baseline.denied, baseline.total, inc, level, phi_d))
        checks.append(_tail_check(canary, baseline, parts, inc, level))
    else:
        checks.append(_abs_rate_check("denial_rate", canary.denied, canary.total,
                                      a.max_error_rate_percent / 100.0, level))
    bad = [c for c in checks if c.failed]
    if bad:
        return Verdict(Outcome.FAILED, "; ".join(_why(c) for c in bad), tuple(checks),
                       c_sum, b_sum, th)
    if canary.total < a.min_requests:
        return Verdict(Outcome.INCONCLUSIVE,
                       f"{canary.total} canary requests, fewer than minRequests {a.min_requests}",
                       tuple(checks), c_sum, b_sum, th)
    note = "" if use_baseline else " (no baseline: absolute guards only)"
    return Verdict(Outcome.SUCCESSFUL, f"all checks passed{note}", tuple(checks), c_sum, b_sum, th)


def _why(c: Check) -> str:
    def fmt(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:.2f} ms" if "p99" in c.name else f"{100.0 * v:.3f}%"

    base = f" vs baseline {fmt(c.baseline)}" if c.baseline is not None else ""
    return (f"{c.name}: canary {fmt(c.canary)}{base} over {fmt(c.threshold)} "
            f"(p={c.p_value:.3g} < {c.alpha:.3g}, {c.test})")
