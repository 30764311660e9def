"""A straight line through (iteration, value) points: its gain over a span and the
standard error of that gain, from the fit's own residuals. The metric rules that must
not follow noise (early stopping, the overfitting check) decide on it."""

from __future__ import annotations

import math
import statistics
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


class NoiseFloor:
    """A floor under one fit's standard error: the median residual variance of the last
    `size` fits of the same signal.

    A short fit can have small residuals by chance and then looks confident; rules that
    check a sliding window at every validation would be fooled by that sooner or later.
    The median of recent fits is a steadier estimate of the signal's noise (a median, so
    the curvature of a fast early phase does not linger in it).
    """

    def __init__(self, size: int = 12) -> None:
        self.size = size
        self.variances: list[float] = []

    def fitted_gain(
        self, points: Sequence[tuple[int, float]], span: float
    ) -> tuple[float, float] | None:
        """`fitted_gain`, with the error raised to what the recent noise gives."""
        fit = fitted_gain(points, span)
        if fit is None or not math.isfinite(fit[1]) or span == 0:
            return fit
        gain, error = fit
        xs = [float(it) for it, _ in points]
        mean_x = sum(xs) / len(xs)
        sxx = sum((x - mean_x) ** 2 for x in xs)
        self.variances = [*self.variances, (error / span) ** 2 * sxx][-self.size :]
        pooled = math.sqrt(statistics.median(self.variances) / sxx) * abs(span)
        return gain, max(error, pooled)

    def state_dict(self) -> list[float]:
        return list(self.variances)

    def load_state_dict(self, state: Sequence[float]) -> None:
        self.variances = [float(v) for v in state]
