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


def multiscale_ssim(sr: Tensor, gt: Tensor, window: Tensor, level_weights: Tensor) -> Tensor:
    """Mean MS-SSIM of NCHW images in [0, 1], using as many levels as the size allows.

    `window` is (1, 1, 1, win_size); `level_weights` holds one weight per level, finest first.
    """
    win_size = window.shape[-1]
    levels = ms_ssim_levels(min(sr.shape[-2:]), win_size, level_weights.numel())
    all_weights = level_weights.to(sr.device)
    # Dropped coarse levels hand their share to the kept ones; the total exponent stays.
    weights = all_weights[:levels] * (all_weights.sum() / all_weights[:levels].sum())
    channel_window = window.to(sr.device).repeat(sr.shape[1], 1, 1, 1)

    terms: list[Tensor] = []
    for level in range(levels):
        ssim_per_channel, cs_per_channel = _ssim(
            sr, gt, data_range=DATA_RANGE, win=channel_window, size_average=False, K=SSIM_K
        )
        if level == levels - 1:
            terms.append(ssim_per_channel)
        else:
            terms.append(cs_per_channel)
            # Odd sides are padded so the last row/column is not dropped (as pytorch-msssim does).
            padding = (sr.shape[-2] % 2, sr.shape[-1] % 2)
            sr = F.avg_pool2d(sr, kernel_size=2, padding=padding)
            gt = F.avg_pool2d(gt, kernel_size=2, padding=padding)
    stacked = torch.stack(terms).clamp_min(MIN_LEVEL_TERM)  # (levels, N, C)
    per_channel = torch.prod(stacked ** weights.view(-1, 1, 1), dim=0)
    return per_channel.mean()


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
    """1 - MS-SSIM; small crops use fewer levels (see the module docstring)."""

    def __init__(
        self, *, win_size: int = 11, win_sigma: float = 1.5, weights: list[float] | None = None
    ) -> None:
        super().__init__()
        level_weights = list(MS_SSIM_WEIGHTS) if weights is None else weights
        check_window("mssimloss", win_size, win_sigma)
        check_level_weights("mssimloss", level_weights)
        self.win_size = win_size
        self.window: Tensor
        self.level_weights: Tensor
        self.register_buffer("window", gaussian_window(win_size, win_sigma), persistent=False)
        self.register_buffer("level_weights", torch.tensor(level_weights), persistent=False)

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        check_image_size("mssimloss", sr, self.win_size)
        return 1 - multiscale_ssim(sr, gt, self.window, self.level_weights)


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
