"""Structural similarity (Wang et al. 2004) on 8-bit-quantised images."""

from __future__ import annotations

import torch
from pytorch_msssim import ssim
from torch import Tensor

from traiNNer.metrics.base import register_metric
from traiNNer.metrics.preprocess import prepare_pair
from traiNNer.utils.errors import UserError

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
SSIM_K = (0.01, 0.03)


def gaussian_window(channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 11-tap Gaussian (sigma 1.5), shaped for pytorch-msssim's separable filter."""
    offsets = torch.arange(WINDOW_SIZE, dtype=dtype, device=device) - WINDOW_SIZE // 2
    taps = torch.exp(-(offsets**2) / (2 * WINDOW_SIGMA**2))
    return (taps / taps.sum()).view(1, 1, 1, WINDOW_SIZE).repeat(channels, 1, 1, 1)


@register_metric(better="higher")
def calculate_ssim(
    sr: Tensor, gt: Tensor, crop_border: int = 0, test_y_channel: bool = False
) -> float:
    """Mean SSIM over channels of CHW / 1xCHW images in [0, 1], on the 0-255 scale.

    Gaussian window 11 / sigma 1.5, K1 0.01, K2 0.03, averaged over the positions
    where the window fits entirely (no padding). Identical images give 1.
    """
    sr_255, gt_255 = prepare_pair("calculate_ssim", sr, gt, crop_border, test_y_channel)
    channels, height, width = sr_255.shape
    if min(height, width) < WINDOW_SIZE:
        raise UserError(
            f"calculate_ssim: needs images of at least {WINDOW_SIZE}x{WINDOW_SIZE} px "
            f"after crop_border, got {height}x{width}"
        )
    window = gaussian_window(channels, sr_255.dtype, sr_255.device)
    similarity = ssim(sr_255[None], gt_255[None], data_range=255, win=window, K=SSIM_K)
    return similarity.item()
