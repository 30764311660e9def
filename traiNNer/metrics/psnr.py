"""Peak signal-to-noise ratio on 8-bit-quantised images."""

from __future__ import annotations

import math

from torch import Tensor

from traiNNer.metrics.base import register_metric
from traiNNer.metrics.preprocess import prepare_pair


@register_metric(better="higher")
def calculate_psnr(
    sr: Tensor, gt: Tensor, crop_border: int = 0, test_y_channel: bool = False
) -> float:
    """PSNR in dB of CHW / 1xCHW images in [0, 1], computed on the 0-255 scale.

    Identical images (after quantisation and cropping) give float('inf').
    """
    sr_255, gt_255 = prepare_pair("calculate_psnr", sr, gt, crop_border, test_y_channel)
    mse = (sr_255 - gt_255).square().mean().item()
    if mse == 0:
        return math.inf
    return 10 * math.log10(255.0**2 / mse)
