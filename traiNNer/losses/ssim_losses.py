"""Structural similarity losses: 1-SSIM, 1-MS-SSIM and the MS-SSIM + L1 mix.

The SSIM core (Gaussian filtering, the luminance and contrast-structure maps)
comes from pytorch-msssim. Its `ms_ssim` insists on images larger than
(win_size-1)*2^4 = 160 px whatever the number of levels, which rules out most
training crops, so the pyramid is assembled here from its per-level `_ssim`:

Small crops: MS-SSIM uses as many of its 5 levels as fit, i.e. the largest L with
min(H, W) > (win_size-1) * 2^(L-1) (the condition the library applies to 5
levels), and rescales the first L level weights to the sum of all of them. With
the default win_size 11, the smaller side gets: >= 161 px all 5 levels, 81-160
px 4, 41-80 px 3, 21-40 px 2, 11-20 px 1 (plain SSIM). Images smaller than
`win_size` raise a UserError.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim
from torch import Tensor, nn

from traiNNer.losses.fp32 import fp32_forward
from traiNNer.utils.errors import ConfigError, UserError
from traiNNer.utils.registry import LOSS_REGISTRY

# Level weights of Wang, Simoncelli & Bovik (2003), finest level first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_K = (0.01, 0.03)
ColorSpace = Literal["yiq", "ycbcr", "lhm"]
YIQ_Y_WEIGHTS = (0.299, 0.587, 0.114)
LHM_L_WEIGHTS = (0.2989, 0.587, 0.114)
# BT.601 Y' on the 0-255 scale: 16 + RGB . YCBCR_Y_WEIGHTS.
YCBCR_Y_WEIGHTS = (65.481, 128.553, 24.966)
# Inputs are images in [0, 1].
DATA_RANGE = 1.0
# Keeps the fractional powers of MS-SSIM differentiable when a level's
# contrast-structure term reaches 0 (d/dx x^w is infinite there).
MIN_LEVEL_TERM = 1e-6


def check_window(loss_name: str, win_size: int, win_sigma: float) -> None:
    if win_size < 3 or win_size % 2 == 0:
        raise ConfigError(f"{loss_name}: win_size must be an odd integer >= 3, got {win_size}")
    if not win_sigma > 0:
        raise ConfigError(f"{loss_name}: win_sigma must be > 0, got {win_sigma}")


def check_level_weights(loss_name: str, weights: list[float]) -> None:
    if not weights or any(not w > 0 for w in weights):
        raise ConfigError(
            f"{loss_name}: weights must be a non-empty list of positive numbers "
            f"(one per MS-SSIM level, finest first), got {weights}"
        )


def gaussian_window(win_size: int, win_sigma: float) -> Tensor:
    """Normalised 1-D Gaussian shaped (1, 1, 1, win_size) for separable filtering."""
    return _fspecial_gauss_1d(win_size, win_sigma).view(1, 1, 1, win_size)


def check_image_size(loss_name: str, image: Tensor, win_size: int) -> None:
    height, width = image.shape[-2:]
    if min(height, width) < win_size:
        raise UserError(
            f"{loss_name}: images of {height}x{width} px are smaller than win_size "
            f"{win_size}; train on larger crops (lq_size * scale) or lower win_size"
        )


def ms_ssim_levels(min_side: int, win_size: int, max_levels: int) -> int:
    """The most pyramid levels (<= max_levels) whose coarsest image still fits the window."""
    levels = max_levels
    while levels > 1 and min_side <= (win_size - 1) * 2 ** (levels - 1):
        levels -= 1
    return levels


def matlab_downsample(sr: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool by round(min side / 256) when that is > 1 (the official MATLAB SSIM's step)."""
    factor = max(1, round(min(sr.shape[-2:]) / 256))
    if factor == 1:
        return sr, gt
    return F.avg_pool2d(sr, kernel_size=factor), F.avg_pool2d(gt, kernel_size=factor)


def multiscale_ssim(
    sr: Tensor,
    gt: Tensor,
    window: Tensor,
    level_weights: Tensor,
    *,
    include_luminance: bool = True,
    is_prod: bool = True,
    downsample: bool = False,
) -> Tensor:
    """Mean MS-SSIM of NCHW images in [0, 1], using as many levels as the size allows.

    `window` is (1, 1, 1, win_size); `level_weights` holds one weight per level,
    finest first. The coarsest level contributes SSIM (luminance x contrast-structure),
    or only contrast-structure without include_luminance. is_prod combines the
    levels as the product of term^weight (Wang et al.), else as the weighted sum with
    the weights normalised to 1. downsample applies MATLAB's pre-pooling at each
    level's SSIM (the pyramid itself goes on from the unpooled images).
    """
    win_size = window.shape[-1]
    levels = ms_ssim_levels(min(sr.shape[-2:]), win_size, level_weights.numel())
    all_weights = level_weights.to(sr.device)
    # Dropped coarse levels hand their share to the kept ones; the total exponent stays.
    weights = all_weights[:levels] * (all_weights.sum() / all_weights[:levels].sum())
    channel_window = window.to(sr.device).repeat(sr.shape[1], 1, 1, 1)

    terms: list[Tensor] = []
    for level in range(levels):
        level_sr, level_gt = matlab_downsample(sr, gt) if downsample else (sr, gt)
        ssim_per_channel, cs_per_channel = _ssim(
            level_sr,
            level_gt,
            data_range=DATA_RANGE,
            win=channel_window,
            size_average=False,
            K=SSIM_K,
        )
        if level == levels - 1:
            terms.append(ssim_per_channel if include_luminance else cs_per_channel)
        else:
            terms.append(cs_per_channel)
            # Odd sides are padded so the last row/column is not dropped (as pytorch-msssim does).
            padding = (sr.shape[-2] % 2, sr.shape[-1] % 2)
            sr = F.avg_pool2d(sr, kernel_size=2, padding=padding)
            gt = F.avg_pool2d(gt, kernel_size=2, padding=padding)
    stacked = torch.stack(terms)  # (levels, N, C)
    if not is_prod:
        normalised = (weights / weights.sum()).view(-1, 1, 1)
        return (stacked.clamp_min(0) * normalised).sum(dim=0).mean()
    per_channel = torch.prod(stacked.clamp_min(MIN_LEVEL_TERM) ** weights.view(-1, 1, 1), dim=0)
    return per_channel.mean()


def y_channel(image: Tensor, color_space: ColorSpace) -> Tensor:
    """The luma (N, 1, H, W) of RGB images in [0, 1], as `color_space` defines it."""
    if color_space == "ycbcr":
        weights = image.new_tensor(YCBCR_Y_WEIGHTS).view(1, 3, 1, 1)
        return ((image * weights).sum(dim=1, keepdim=True) + 16) / 255
    weights = image.new_tensor(LHM_L_WEIGHTS if color_space == "lhm" else YIQ_Y_WEIGHTS)
    return (image * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def gaussian_weighted_l1(sr: Tensor, gt: Tensor, window: Tensor) -> Tensor:
    """Mean of |sr - gt| filtered by a Gaussian over the valid (unpadded) positions.

    Pixels near the border are covered by fewer windows and so count less, like
    the SSIM maps they are mixed with. The window is trimmed (and renormalised)
    to fit images smaller than it.
    """
    size = min(window.shape[-1], *sr.shape[-2:])
    size -= 1 - size % 2  # keep it odd so it stays centred
    trim = (window.shape[-1] - size) // 2
    window = window[..., trim : trim + size].to(sr.device)
    window = (window / window.sum()).repeat(sr.shape[1], 1, 1, 1)
    blurred = F.conv2d((sr - gt).abs(), window, groups=sr.shape[1])
    blurred = F.conv2d(blurred, window.transpose(-1, -2), groups=sr.shape[1])
    return blurred.mean()


@LOSS_REGISTRY.register()
class SSIMLoss(nn.Module):
    """1 - SSIM (Gaussian window), averaged over images and channels."""

    def __init__(self, *, win_size: int = 11, win_sigma: float = 1.5) -> None:
        super().__init__()
        check_window("ssimloss", win_size, win_sigma)
        self.win_size = win_size
        self.window: Tensor
        self.register_buffer("window", gaussian_window(win_size, win_sigma), persistent=False)

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        check_image_size("ssimloss", sr, self.win_size)
        channel_window = self.window.repeat(sr.shape[1], 1, 1, 1)
        similarity = ssim(sr, gt, data_range=DATA_RANGE, win=channel_window, K=SSIM_K)
        return 1 - similarity


@LOSS_REGISTRY.register()
class MSSIMLoss(nn.Module):
    """1 - MS-SSIM, with traiNNer-redux's defaults: on luma, contrast-structure only.

    Images are clamped to [0, 1]. test_y_channel compares the luma of RGB images
    (color_space yiq: 0.299/0.587/0.114; ycbcr: BT.601 Y'/255; lhm) instead of
    every channel; include_luminance adds the luminance term at the coarsest level
    (the textbook MS-SSIM); is_prod and downsample: see `multiscale_ssim`.
    `channels` is accepted for traiNNer-redux option files and not used (the
    images say how many there are). Small crops use fewer levels (see the module
    docstring). The loss is 1 - clamp(MS-SSIM, 0, 1).
    """

    def __init__(
        self,
        *,
        win_size: int = 11,
        win_sigma: float = 1.5,
        weights: list[float] | None = None,
        channels: int = 3,
        downsample: bool = False,
        test_y_channel: bool = True,
        is_prod: bool = True,
        color_space: ColorSpace = "yiq",
        include_luminance: bool = False,
    ) -> None:
        super().__init__()
        level_weights = list(MS_SSIM_WEIGHTS) if weights is None else weights
        check_window("mssimloss", win_size, win_sigma)
        check_level_weights("mssimloss", level_weights)
        self.win_size = win_size
        self.downsample = downsample
        self.test_y_channel = test_y_channel
        self.is_prod = is_prod
        self.color_space: ColorSpace = color_space
        self.include_luminance = include_luminance
        self.window: Tensor
        self.level_weights: Tensor
        self.register_buffer("window", gaussian_window(win_size, win_sigma), persistent=False)
        self.register_buffer("level_weights", torch.tensor(level_weights), persistent=False)

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        check_image_size("mssimloss", sr, self.win_size)
        sr, gt = sr.clamp(0, 1), gt.clamp(0, 1)
        if self.test_y_channel and sr.shape[1] == 3:
            sr, gt = y_channel(sr, self.color_space), y_channel(gt, self.color_space)
        similarity = multiscale_ssim(
            sr,
            gt,
            self.window,
            self.level_weights,
            include_luminance=self.include_luminance,
            is_prod=self.is_prod,
            downsample=self.downsample,
        )
        return 1 - similarity.clamp(0, 1)


# traiNNer-redux spells it both ways.
LOSS_REGISTRY.add("msssimloss", MSSIMLoss)


@LOSS_REGISTRY.register()
class MSSSIML1Loss(nn.Module):
    """alpha * (1 - MS-SSIM) + (1 - alpha) * Gaussian-weighted L1 (Zhao et al. 2017).

    `l1_sigma` is the Gaussian of the coarsest scale (8 px in the paper).
    """

    def __init__(
        self,
        *,
        alpha: float = 0.84,
        l1_sigma: float = 8.0,
        win_size: int = 11,
        win_sigma: float = 1.5,
        weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        level_weights = list(MS_SSIM_WEIGHTS) if weights is None else weights
        if not 0 <= alpha <= 1:
            raise ConfigError(f"msssiml1loss: alpha must be in [0, 1], got {alpha}")
        if not l1_sigma > 0:
            raise ConfigError(f"msssiml1loss: l1_sigma must be > 0, got {l1_sigma}")
        check_window("msssiml1loss", win_size, win_sigma)
        check_level_weights("msssiml1loss", level_weights)
        self.alpha = alpha
        self.win_size = win_size
        # +-3 sigma holds 99.7% of the Gaussian's mass.
        l1_size = 2 * math.ceil(3 * l1_sigma) + 1
        self.window: Tensor
        self.level_weights: Tensor
        self.l1_window: Tensor
        self.register_buffer("window", gaussian_window(win_size, win_sigma), persistent=False)
        self.register_buffer("level_weights", torch.tensor(level_weights), persistent=False)
        self.register_buffer("l1_window", gaussian_window(l1_size, l1_sigma), persistent=False)

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        check_image_size("msssiml1loss", sr, self.win_size)
        ms_ssim = multiscale_ssim(sr, gt, self.window, self.level_weights)
        l1 = gaussian_weighted_l1(sr, gt, self.l1_window)
        return self.alpha * (1 - ms_ssim) + (1 - self.alpha) * l1
