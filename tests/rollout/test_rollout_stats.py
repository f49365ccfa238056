"""The judge's statistics against textbook values and brute force."""

from __future__ import annotations

import itertools
import math

import pytest

from proxy_runtime.stats_window import CLASSES, LATENCY_BUCKETS
from reconciler.analysis.sample import LATENCY_BUCKETS as JUDGE_BUCKETS
from reconciler.analysis.stats import (
    binomial_sf,
    count_above,
    dispersion,
    fisher_greater,
    histogram_quantile,
    mann_whitney_greater,
    normal_sf,
    rate_greater,
    ratio_greater,
    two_proportion_greater,
)


def test_judge_buckets_are_the_proxies_buckets() -> None:
    assert JUDGE_BUCKETS == LATENCY_BUCKETS
    assert CLASSES == ("2xx", "3xx", "4xx", "5xx")


@pytest.mark.parametrize(("z", "tail"), [
    (0.0, 0.5), (1.0, 0.158655), (1.644854, 0.05), (1.959964, 0.025), (2.575829, 0.005),
    (-1.959964, 0.975),
])
def test_normal_tail(z: float, tail: float) -> None:
    assert normal_sf(z) == pytest.approx(tail, abs=1e-6)


def test_fisher_lady_tasting_tea() -> None:
    # Fisher (1935): 3 of 4 cups right: p = 17/70; all 4 right: p = 1/70.
    assert fisher_greater(3, 4, 1, 4) == pytest.approx(17 / 70, rel=1e-12)
    assert fisher_greater(4, 4, 0, 4) == pytest.approx(1 / 70, rel=1e-12)
    assert fisher_greater(0, 4, 4, 4) == pytest.approx(1.0)


def test_fisher_equals_the_hypergeometric_sum() -> None:
    a, n1, c, n2 = 7, 40, 2, 60
    k, n = a + c, n1 + n2
    exact = sum(math.comb(n1, x) * math.comb(n2, k - x) for x in range(a, k + 1)) / math.comb(n, k)
    assert fisher_greater(a, n1, c, n2) == pytest.approx(exact, rel=1e-9)


def test_two_proportion_z_test() -> None:
    # 30/100 vs 20/100: pooled 0.25, se = 0.0612372; z = 1.633 without, 1.470 with Yates.
    assert two_proportion_greater(30, 100, 20, 100, continuity=False) == pytest.approx(
        normal_sf(0.1 / math.sqrt(0.25 * 0.75 * 0.02)), rel=1e-12)
    assert two_proportion_greater(30, 100, 20, 100, continuity=False) == pytest.approx(0.05124, abs=1e-4)
    assert two_proportion_greater(30, 100, 20, 100) == pytest.approx(0.07082, abs=1e-4)
    assert two_proportion_greater(0, 100, 0, 100) == 1.0


def test_rate_test_picks_fisher_for_small_counts_and_z_for_large() -> None:
    assert rate_greater(3, 100, 0, 100)[1] == "fisher"
    p, test = rate_greater(300, 10_000, 200, 10_000)
    assert test == "two-proportion-z" and p < 1e-4
    # The two agree roughly where both apply.
    assert rate_greater(60, 1000, 40, 1000)[0] == pytest.approx(fisher_greater(60, 1000, 40, 1000), rel=0.15)


def test_binomial_tail() -> None:
    # P(X >= 3 | n=50, p=0.01) = 1 - (0.99^50 + 50*0.01*0.99^49 + 1225*1e-4*0.99^48)
    want = 1 - (0.99 ** 50 + 50 * 0.01 * 0.99 ** 49 + 1225 * 1e-4 * 0.99 ** 48)
    assert binomial_sf(3, 50, 0.01) == pytest.approx(want, rel=1e-9)
    assert binomial_sf(3, 50, 0.01) == pytest.approx(0.013817, abs=1e-6)
    assert binomial_sf(0, 10, 0.5) == 1.0
    assert binomial_sf(11, 10, 0.5) == 0.0
    assert binomial_sf(6, 10, 0.5) == pytest.approx(386 / 1024, rel=1e-12)  # below the mode
    assert binomial_sf(5000, 10_000, 0.01) < 1e-300 or binomial_sf(5000, 10_000, 0.01) == 0.0


def _u_brute(x: list[float], y: list[float]) -> float:
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(x, y))


def test_mann_whitney_without_ties() -> None:
    # x = {4,5,6} over y = {1,2,3}: U = 9, mean 4.5, var 3*3*7/12 = 5.25.
    u, z, p = mann_whitney_greater([0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0])
    assert u == 9.0
    assert z == pytest.approx((9 - 4.5 - 0.5) / math.sqrt(5.25))
    assert p == pytest.approx(0.040428, abs=1e-6)


def test_mann_whitney_with_ties_matches_brute_force_u_and_tie_corrected_variance() -> None:
    x_hist = [1, 3, 0, 4, 2]
    y_hist = [3, 2, 2, 1, 0]
    xs = [float(i) for i, c in enumerate(x_hist) for _ in range(c)]
    ys = [float(i) for i, c in enumerate(y_hist) for _ in range(c)]
    u, z, _ = mann_whitney_greater(x_hist, y_hist)
    assert u == pytest.approx(_u_brute(xs, ys))
    n1, n2 = len(xs), len(ys)
    n = n1 + n2
    ties = sum(t ** 3 - t for t in (a + b for a, b in zip(x_hist, y_hist, strict=True)))
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    assert z == pytest.approx((u - n1 * n2 / 2 - 0.5) / math.sqrt(var))


def test_mann_whitney_degenerate() -> None:
    assert mann_whitney_greater([5, 0], [7, 0])[2] == 1.0  # all tied
    assert mann_whitney_greater([0, 0], [1, 2])[2] == 1.0  # empty side
    with pytest.raises(ValueError):
        mann_whitney_greater([1], [1, 2])


def test_histogram_quantile_like_prometheus() -> None:
    bounds = [0.1, 0.2, 0.4]
    # 100 observations: 50 in (0, 0.1], 40 in (0.1, 0.2], 10 in (0.2, 0.4]
    counts = [50, 40, 10, 0]
    assert histogram_quantile(0.5, bounds, counts) == pytest.approx(0.1)
    assert histogram_quantile(0.7, bounds, counts) == pytest.approx(0.15)
    assert histogram_quantile(0.99, bounds, counts) == pytest.approx(0.2 + 0.2 * 0.9)
    assert histogram_quantile(0.99, bounds, [0, 0, 0, 5]) == 0.4  # +Inf: the last bound
    assert histogram_quantile(0.99, bounds, [0, 0, 0, 0]) is None


def test_count_above_is_conservative_about_the_straddling_bucket() -> None:
    bounds = [0.1, 0.5, 1.0]
    counts = [10, 5, 3, 2]
    assert count_above(0.5, bounds, counts) == 5  # (0.5,1] and +Inf
    assert count_above(0.3, bounds, counts) == 5  # (0.1,0.5] straddles 0.3: not counted
    assert count_above(0.0, bounds, counts) == 20


def test_ratio_test_is_the_conditional_binomial() -> None:
    # 10 events vs 2 over equal exposure, H0 ratio 1: P(X >= 10 | 12, 1/2) = 79/4096.
    p, test = ratio_greater(10, 1000, 2, 1000)
    assert test == "conditional-binomial"
    assert p == pytest.approx(79 / 4096, rel=1e-12)
    # H0 ratio 1.5 with exposures 300 vs 5700: pi0 = 450 / 6150.
    pi0 = 450 / 6150
    want = sum(math.comb(24, x) * pi0 ** x * (1 - pi0) ** (24 - x) for x in range(7, 25))
    assert ratio_greater(7, 300, 17, 5700, 1.5)[0] == pytest.approx(want, rel=1e-9)
    # Testing against a larger allowed ratio can only weaken the evidence.
    assert ratio_greater(7, 300, 17, 5700, 1.5)[0] > ratio_greater(7, 300, 17, 5700, 1.0)[0]
    assert ratio_greater(0, 10, 0, 10) == (1.0, "none")


def test_ratio_test_with_overdispersion_is_wider() -> None:
    plain, _ = ratio_greater(150, 10_000, 300, 50_000, 1.5)
    wide, test = ratio_greater(150, 10_000, 300, 50_000, 1.5, dispersion=4.0)
    assert test == "conditional-binomial-z"
    assert plain < 1e-6 < wide < 0.01  # 2.5x the baseline: still clear, with less certainty


def test_dispersion_is_pearson_chi_square_over_df() -> None:
    # 10/1000 and 30/1000: p = 0.02, chi2 = 2 * 100 / 19.6
    assert dispersion([10, 30], [1000, 1000]) == pytest.approx(200 / 19.6)
    assert dispersion([20, 20, 20], [1000, 1000, 1000]) == 1.0  # never below 1
    assert dispersion([5], [100]) == 1.0
    assert dispersion([0, 0], [100, 100]) == 1.0
