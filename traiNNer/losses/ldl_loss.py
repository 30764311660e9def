"""LDL: locally discriminative learning (Liang et al., "Details or Artifacts: A Locally
Discriminative Learning Approach to Realistic Image Super-Resolution", CVPR 2022).

Artifacts are where the residual |gt - sr| is locally noisy. The artifact map is
the residual's local variance (7x7 window) times its variance over the whole
image to the power 1/5, set to 0 wherever the EMA model's output is further from
gt than sr is (there the live model is doing better, so its detail is kept).
The loss is `criterion`(map * sr, map * gt). The map is not detached, as in the
paper's code.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from traiNNer.losses.fp32 import autocast_disabled
from traiNNer.losses.pixel_losses import Criterion, pointwise_distance
from traiNNer.utils.errors import UserError
from traiNNer.utils.registry import LOSS_REGISTRY

WINDOW = 7
GLOBAL_EXPONENT = 1 / 5
# var**(1/5) has an infinite slope at 0 (identical images); the floor keeps it finite.
MIN_VARIANCE = 1e-12


def local_variance(image: Tensor, window: int) -> Tensor:
    """Unbiased variance over each pixel's window x window neighbourhood (reflected border)."""
    radius = window // 2
    padded = F.pad(image, (radius, radius, radius, radius), mode="reflect")
    mean = F.avg_pool2d(padded, window, stride=1)
    mean_of_squares = F.avg_pool2d(padded.square(), window, stride=1)
    count = window * window
    return ((mean_of_squares - mean.square()) * (count / (count - 1))).clamp_min(0)


def artifact_map(sr: Tensor, gt: Tensor, sr_ema: Tensor) -> Tensor:
    """(N, 1, H, W) weight of each pixel as an artifact."""
    residual = (gt - sr).abs().sum(dim=1, keepdim=True)
    residual_ema = (gt - sr_ema).abs().sum(dim=1, keepdim=True)
    overall = residual.var(dim=(1, 2, 3), keepdim=True).clamp_min(MIN_VARIANCE)
    weight = overall**GLOBAL_EXPONENT * local_variance(residual, WINDOW)
    return torch.where(residual < residual_ema, 0.0, weight)


@LOSS_REGISTRY.register()
class LDLLoss(nn.Module):
    """LDL artifact loss; compares with the EMA model's output, so needs train.ema_decay > 0.

    The model passes that output as the third argument (`needs_ema_output`); the
    option loader refuses an enabled ldlloss without EMA.
    """

    needs_ema_output: ClassVar[bool] = True

    def __init__(self, *, criterion: Criterion = "l1") -> None:
        super().__init__()
        self.criterion: Criterion = criterion

    def forward(self, sr: Tensor, gt: Tensor, sr_ema: Tensor | None = None) -> Tensor:
        if sr_ema is None:
            raise UserError("ldlloss: needs the EMA model's output; set train.ema_decay > 0")
        if min(sr.shape[-2:]) <= WINDOW // 2:
            raise UserError(
                f"ldlloss: images of {sr.shape[-2]}x{sr.shape[-1]} px are too small "
                f"for its {WINDOW}x{WINDOW} window"
            )
        with autocast_disabled(sr.device):
            sr, gt, sr_ema = sr.float(), gt.float(), sr_ema.detach().float()
            weight = artifact_map(sr, gt, sr_ema)
            return pointwise_distance(self.criterion, weight * sr, weight * gt).mean()
