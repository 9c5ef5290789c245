"""The statistics of the tables, over seeds: mean and sample std, Student's t intervals for a mean and, by
Welch's t, for the difference of two means."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Two-sided 95% quantiles of Student's t by degrees of freedom (1..30); beyond, the normal 1.96.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131)
_T975 += (2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; nan for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std


def t975(df: float) -> float:
    """The two-sided 95% quantile of Student's t with `df` >= 1 degrees of freedom. A fractional df (Welch's)
    is rounded down: the quantile falls with df, so the interval comes out wider, never narrower. Beyond 30
    degrees of freedom, the normal 1.96."""
    whole = math.floor(df + 1e-9)  # 4 computed as 3.9999999999 is still 4
    if whole < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    return _T975[whole - 1] if whole <= len(_T975) else 1.96


def confidence_interval(values: Sequence[float]) -> tuple[float, float]:
    """The 95% confidence interval of the mean of `values` (Student's t, n - 1 degrees of freedom; n >= 2)."""
    if len(values) < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {len(values)}")
    mean, std = mean_std(values)
    half = t975(len(values) - 1) * std / math.sqrt(len(values))
    return mean - half, mean + half


def welch_interval(a: tuple[float, float, int], b: tuple[float, float, int]) -> tuple[float, float, float]:
    """The difference of two means, a - b, with its 95% interval by Welch's t: (difference, low, high).

    Args:
      a, b: (mean, sample std, n) of each sample, n >= 2 (the std of one value is undefined).

    With v = std² / n for each sample, the interval is difference ± t975(df) sqrt(v_a + v_b), where df are the
    Welch-Satterthwaite degrees of freedom (v_a + v_b)² / (v_a² / (n_a - 1) + v_b² / (n_b - 1)), fractional,
    between min(n_a, n_b) - 1 and n_a + n_b - 2, rounded down (`t975`). Two samples without spread give the
    difference itself as the interval.
    """
    (mean_a, std_a, n_a), (mean_b, std_b, n_b) = a, b
    if min(n_a, n_b) < 2:
        raise ValueError(f"Welch's interval needs at least 2 values in each sample, got {n_a} and {n_b}")
    var_a, var_b = std_a**2 / n_a, std_b**2 / n_b
    difference = mean_a - mean_b
    if var_a + var_b == 0:
        return difference, difference, difference
    df = (var_a + var_b) ** 2 / (var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1))
    half = t975(df) * math.sqrt(var_a + var_b)
    return difference, difference - half, difference + half
