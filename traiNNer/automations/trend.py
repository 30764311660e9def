"""A straight line through (iteration, value) points: its gain over a span and the
standard error of that gain, from the fit's own residuals. The metric rules that must
not follow noise (early stopping, the overfitting check) decide on it."""

from __future__ import annotations

import math
from collections.abc import Sequence


def fitted_gain(points: Sequence[tuple[int, float]], span: float) -> tuple[float, float] | None:
    """(slope x span, its standard error), or None with fewer than 2 distinct iterations.

    Two points leave no residual to measure noise with: their error is infinite.
    """
    n = len(points)
    if n < 2:
        return None
    xs = [float(it) for it, _ in points]
    ys = [v for _, v in points]
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    if n == 2:
        return slope * span, math.inf
    residual = sum(
        (y - mean_y - slope * (x - mean_x)) ** 2 for x, y in zip(xs, ys, strict=True)
    ) / (n - 2)
    return slope * span, math.sqrt(residual / sxx) * span
