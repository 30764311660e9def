"""Validation metrics. Importing this package registers them in METRIC_REGISTRY.

Each metric is a function `(sr, gt, crop_border=0, test_y_channel=False) -> float`
with a `better` attribute ('higher' or 'lower'); see `metric_better`. The learned
metrics (lpips, dists, topiq) also take their weight files (see `metrics.networks`).
"""

from __future__ import annotations

from traiNNer.metrics.base import metric_better, register_metric
from traiNNer.metrics.color import rgb_to_y
from traiNNer.metrics.dists import calculate_dists
from traiNNer.metrics.lpips import calculate_lpips
from traiNNer.metrics.psnr import calculate_psnr
from traiNNer.metrics.ssim import calculate_ssim
from traiNNer.metrics.topiq import calculate_topiq
from traiNNer.utils.registry import METRIC_REGISTRY

__all__ = [
    "METRIC_REGISTRY",
    "calculate_dists",
    "calculate_lpips",
    "calculate_psnr",
    "calculate_ssim",
    "calculate_topiq",
    "metric_better",
    "register_metric",
    "rgb_to_y",
]
