"""Per-pixel losses: L1, MSE and Charbonnier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from traiNNer.losses.fp32 import fp32_forward
from traiNNer.utils.errors import ConfigError
from traiNNer.utils.registry import LOSS_REGISTRY


@LOSS_REGISTRY.register()
class L1Loss(nn.Module):
    """Mean absolute error."""

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        return F.l1_loss(sr, gt)


@LOSS_REGISTRY.register()
class MSELoss(nn.Module):
    """Mean squared error."""

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        return F.mse_loss(sr, gt)


@LOSS_REGISTRY.register()
class CharbonnierLoss(nn.Module):
    """Smooth L1 variant: mean of sqrt((sr - gt)^2 + eps).

    `eps` is added under the square root, as in traiNNer-redux and BasicSR, so
    option files move between them unchanged; identical images give sqrt(eps).
    """

    def __init__(self, *, eps: float = 1e-12) -> None:
        super().__init__()
        if not eps > 0:
            raise ConfigError(f"charbonnierloss: eps must be > 0, got {eps}")
        self.eps = eps

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        return torch.sqrt((sr - gt).square() + self.eps).mean()
