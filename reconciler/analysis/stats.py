"""The statistics the canary judge needs, written out (no scipy): normal tail, binomial
tail, Fisher's exact test and the two-proportion z-test for rates, Mann-Whitney U over
histogram buckets for latency, and Prometheus-style quantiles from histograms.

Every test here is one-sided in the direction "the canary is worse" and returns a p-value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Below this expected count in any cell of the 2x2 table the z approximation is poor; use
# Fisher's exact test there (it is exact but its cost grows with the counts).
FISHER_MIN_EXPECTED = 5.0


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def binomial_sf(x: int, n: int, p: float) -> float:
    """P(X >= x) for X ~ Binomial(n, p), exact (summed in log space, stopped once the
    terms no longer matter)."""
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)

    def term(k: int) -> float:
        return math.exp(_log_comb(n, k) + k * lp + (n - k) * lq)

    mode = int((n + 1) * p)
    if x > mode:  # upper tail: terms fall from x on
        total = 0.0
        for k in range(x, n + 1):
            t = term(k)
            total += t
            if t < total * 1e-17:
                break
        return min(1.0, total)
    lower = 0.0  # 1 - P(X <= x-1); the lower tail below the mode is short
    for k in range(x - 1, -1, -1):
        t = term(k)
        lower += t
        if t < lower * 1e-17:
            break
    return max(0.0, 1.0 - lower)


def fisher_greater(a: int, n1: int, c: int, n2: int) -> float:
    """Fisher's exact test, one-sided: p-value for "group 1's rate is greater", with a
    events of n1 in group 1 and c events of n2 in group 2 (hypergeometric upper tail)."""
    k = a + c  # events in total
    n = n1 + n2
    if n1 == 0 or n2 == 0 or k == 0:
        return 1.0
    top = min(k, n1)
    log_den = _log_comb(n, k)
    total = 0.0
    for x in range(a, top + 1):
        t = math.exp(_log_comb(n1, x) + _log_comb(n2, k - x) - log_den)
        total += t
        if x > a and t < total * 1e-17:
            break
    return min(1.0, total)


def two_proportion_greater(a: int, n1: int, c: int, n2: int, *, continuity: bool = True,
                           dispersion: float = 1.0) -> float:
    """Pooled two-proportion z-test, one-sided ("group 1's rate is greater"), with Yates'
    continuity correction by default. `dispersion` > 1 widens the variance (quasi-binomial:
    the events vary more between proxies than a binomial would)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    p1, p2 = a / n1, c / n2
    pooled = (a + c) / (n1 + n2)
    var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2) * max(1.0, dispersion)
    if var <= 0.0:
        return 1.0  # no events (or all events) on both sides: no evidence either way
    diff = p1 - p2
    if continuity:
        diff -= 0.5 * (1.0 / n1 + 1.0 / n2)
    return normal_sf(diff / math.sqrt(var))


def dispersion(events: Sequence[int], totals: Sequence[int]) -> float:
    """Overdispersion of event counts over groups (proxies): Pearson's chi-square over its
    degrees of freedom, at least 1. Proxies differ (hardware, callers, neighbours), so their
    error rates vary more than binomially; ignoring that makes a large canary-vs-baseline
    comparison "significant" for differences that any two healthy proxies show."""
    parts = [(e, n) for e, n in zip(events, totals, strict=True) if n > 0]
    if len(parts) < 2:
        return 1.0
    n_all = sum(n for _, n in parts)
    p = sum(e for e, _ in parts) / n_all
    if p <= 0.0 or p >= 1.0:
        return 1.0
    chi2 = sum((e - n * p) ** 2 / (n * p * (1.0 - p)) for e, n in parts)
    return max(1.0, chi2 / (len(parts) - 1))


def rate_greater(a: int, n1: int, c: int, n2: int, *, dispersion: float = 1.0
                 ) -> tuple[float, str]:
    """One-sided p-value that rate a/n1 exceeds c/n2, and the name of the test used:
    Fisher's exact test when a cell's expected count is small, else the z-test; with a
    dispersion over 1, the quasi-binomial z-test."""
    n = n1 + n2
    if n1 == 0 or n2 == 0:
        return 1.0, "none"
    k = a + c
    expected_min = min(n1, n2) * min(k, n - k) / n
    if expected_min < FISHER_MIN_EXPECTED:
        # Few events: counting noise dwarfs the spread between proxies, and the normal
        # approximation would be far too eager.
        return fisher_greater(a, n1, c, n2), "fisher"
    if dispersion > 1.0:
        return two_proportion_greater(a, n1, c, n2, dispersion=dispersion), "quasi-binomial-z"
    return two_proportion_greater(a, n1, c, n2), "two-proportion-z"


def ratio_greater(a: int, n1: int, c: int, n2: int, ratio: float = 1.0, *,
                  dispersion: float = 1.0) -> tuple[float, str]:
    """One-sided p-value for "rate a/n1 is more than `ratio` times rate c/n2".

    The conditional test for two Poisson rates (Przyborowski and Wilenski): given the k =
    a + c events, a is Binomial(k, pi0) under H0 with pi0 = ratio*n1 / (ratio*n1 + n2).
    Exact (binomial tail) when the rates are binomial; with `dispersion` > 1 (proxies differ
    more than binomially), the normal approximation with its variance widened by it. Testing
    against `ratio` rather than equality means a healthy canary that happens to look 50%
    worse on a handful of events does not fail; a real regression is many times worse."""
    k = a + c
    if n1 == 0 or n2 == 0 or k == 0:
        return 1.0, "none"
    pi0 = ratio * n1 / (ratio * n1 + n2)
    if dispersion <= 1.0 or k * pi0 * (1.0 - pi0) < FISHER_MIN_EXPECTED:
        return binomial_sf(a, k, pi0), "conditional-binomial"
    z = (a - k * pi0 - 0.5) / math.sqrt(k * pi0 * (1.0 - pi0) * dispersion)
    return normal_sf(z), "conditional-binomial-z"


def mann_whitney_greater(x: Sequence[int], y: Sequence[int]) -> tuple[float, float, float]:
    """Mann-Whitney U over two histograms with the same ordered buckets (x, y: counts per
    bucket). Every value in a bucket is a tie, so ranks are the bucket's midrank and the
    variance carries the tie correction. Normal approximation with continuity correction.

    Returns (U of x, z, one-sided p-value for "x tends to be larger than y")."""
    if len(x) != len(y):
        raise ValueError("histograms must have the same buckets")
    n1, n2 = sum(x), sum(y)
    if n1 == 0 or n2 == 0:
        return 0.0, 0.0, 1.0
    n = n1 + n2
    rank_sum_x = 0.0
    ties = 0.0
    below = 0
    for cx, cy in zip(x, y, strict=True):
        t = cx + cy
        if t == 0:
            continue
        midrank = below + (t + 1) / 2.0
        rank_sum_x += cx * midrank
        ties += t * t * t - t
        below += t
    u = rank_sum_x - n1 * (n1 + 1) / 2.0
    mean = n1 * n2 / 2.0
    var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0.0:
        return u, 0.0, 1.0  # every value in one bucket: nothing to tell apart
    z = (u - mean - 0.5) / math.sqrt(var)
    return u, z, normal_sf(z)


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The q-quantile of a histogram, interpolated linearly inside its bucket as
    Prometheus' histogram_quantile does. `counts` has one more entry than `bounds` (the +Inf
    bucket); a quantile in the +Inf bucket is the last finite bound. None when empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0.0
    for i, count in enumerate(counts):
        if count and cumulative + count >= rank:
            if i >= len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * ((rank - cumulative) / count)
        cumulative += count
    return bounds[-1]


def count_above(threshold: float, bounds: Sequence[float], counts: Sequence[int]) -> int:
    """Observations certainly above `threshold`: those in buckets whose lower bound is at
    or over it (a bucket straddling the threshold is not counted; conservative)."""
    out = 0
    for i, count in enumerate(counts):
        lower = bounds[i - 1] if i > 0 else 0.0
        if lower >= threshold:
            out += count
    return out
