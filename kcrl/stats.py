"""Statistics for comparing runs over seeds: mean with a 95% t interval, and permutation tests."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

# two-sided 97.5% quantiles of Student's t, df = 1..30
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (Student t; 0 for one value).

    >>> mean_ci95([1.0, 2.0, 3.0])
    (2.0, 2.484338)
    """
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    return mean, round(t * sd / math.sqrt(n), 6)


def permutation_test(a: Sequence[float], b: Sequence[float], alternative: str = "less", rounds: int = 20_000, seed: int = 0) -> float:
    """p-value that mean(a) - mean(b) is as extreme as observed under exchangeability.

    ``alternative="less"`` tests mean(a) < mean(b); ``"greater"`` the reverse; ``"two-sided"``.
    Exact (all splits) when there are at most 20,000 of them, else Monte Carlo.

    >>> permutation_test([1, 2, 3], [4, 5, 6])
    0.05
    """
    pooled, n_a = list(a) + list(b), len(a)
    observed = sum(a) / n_a - sum(b) / len(b)

    def stat(idx: tuple[int, ...]) -> float:
        chosen = set(idx)
        xa = [pooled[i] for i in idx]
        xb = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        return sum(xa) / len(xa) - sum(xb) / len(xb)

    def extreme(s: float) -> bool:
        if alternative == "less":
            return s <= observed + 1e-12
        if alternative == "greater":
            return s >= observed - 1e-12
        return abs(s) >= abs(observed) - 1e-12

    if math.comb(len(pooled), n_a) <= rounds:
        splits = list(itertools.combinations(range(len(pooled)), n_a))
        return sum(extreme(stat(s)) for s in splits) / len(splits)
    rng = random.Random(seed)
    hits = sum(extreme(stat(tuple(rng.sample(range(len(pooled)), n_a)))) for _ in range(rounds))
    return (hits + 1) / (rounds + 1)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given), for a family of comparisons.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = round(running, 12)
    return adjusted


def difference_ci95(a: Sequence[float], b: Sequence[float], rounds: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Effect size mean(a) - mean(b) with a 95% percentile-bootstrap interval (seeds resampled
    within each group): ``(difference, low, high)``.

    >>> difference_ci95([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    (1.0, 1.0, 1.0)
    """
    rng = random.Random(seed)
    diffs = sorted(
        sum(rng.choices(a, k=len(a))) / len(a) - sum(rng.choices(b, k=len(b))) / len(b) for _ in range(rounds)
    )
    return sum(a) / len(a) - sum(b) / len(b), diffs[int(0.025 * rounds)], diffs[int(0.975 * rounds) - 1]


def compare(a: Sequence[float], b: Sequence[float], better: str) -> dict[str, float]:
    """One comparison of variant a against b over seeds: the difference of means with its 95% CI
    and the one-sided permutation p-value in the direction ``better`` ("less" or "greater")."""
    diff, low, high = difference_ci95(a, b)
    return {"difference": diff, "ci_low": low, "ci_high": high, "p": permutation_test(a, b, alternative=better)}
