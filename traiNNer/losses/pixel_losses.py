"""Per-pixel losses: L1, MSE, Charbonnier, PSNR and the Sobel edge loss.

`pointwise_distance` is the l1 / l2 / charbonnier `criterion` of traiNNer-redux's
composite losses (hsluvloss, ldlloss), shared with them.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from traiNNer.losses.fp32 import fp32_forward
from traiNNer.utils.errors import ConfigError, UserError
from traiNNer.utils.registry import LOSS_REGISTRY

Criterion = Literal["l1", "l2", "charbonnier"]
# The model needs one number per loss, so traiNNer-redux's reduction "none" has no use here.
Reduction = Literal["mean", "sum"]
# traiNNer-redux's Charbonnier epsilon, also inside its composite losses.
CHARBONNIER_EPS = 1e-12
# ITU-R BT.601 luma weights (traiNNer-redux's Sobel edge loss).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# BT.601 Y' on the 0-255 scale from RGB in [0, 1]: Y' = 16 + RGB . YCBCR_Y_WEIGHTS.
YCBCR_Y_WEIGHTS = (65.481, 128.553, 24.966)


def pointwise_distance(criterion: Criterion, a: Tensor, b: Tensor) -> Tensor:
    """Element-wise |a - b|, (a - b)^2 or sqrt((a - b)^2 + 1e-12), not reduced."""
    difference = a - b
    if criterion == "l1":
        return difference.abs()
    if criterion == "l2":
        return difference.square()
    return torch.sqrt(difference.square() + CHARBONNIER_EPS)


def reduce(values: Tensor, reduction: Reduction) -> Tensor:
    return values.sum() if reduction == "sum" else values.mean()


def luma(image: Tensor, loss_name: str) -> Tensor:
    """BT.601 luma (N, 1, H, W) of RGB images; one-channel images are returned as they are."""
    if image.shape[1] == 1:
        return image
    if image.shape[1] != 3:
        raise UserError(
            f"{loss_name}: expected RGB or one-channel images, got {image.shape[1]} channels"
        )
    weights = image.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (image * weights).sum(dim=1, keepdim=True)


@LOSS_REGISTRY.register()
class L1Loss(nn.Module):
    """Mean (or, with reduction sum, total) absolute error."""

    def __init__(self, *, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction: Reduction = reduction

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        return F.l1_loss(sr, gt, reduction=self.reduction)


@LOSS_REGISTRY.register()
class MSELoss(nn.Module):
    """Mean (or, with reduction sum, total) squared error."""

    def __init__(self, *, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction: Reduction = reduction

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        return F.mse_loss(sr, gt, reduction=self.reduction)


@LOSS_REGISTRY.register()
class CharbonnierLoss(nn.Module):
    """Smooth L1 variant: mean (or sum) of sqrt((sr - gt)^2 + eps).

    `eps` is added under the square root, as in traiNNer-redux and BasicSR, so
    option files move between them unchanged; identical images give sqrt(eps).
    """

    def __init__(self, *, reduction: Reduction = "mean", eps: float = CHARBONNIER_EPS) -> None:
        super().__init__()
        if not eps > 0:
            raise ConfigError(f"charbonnierloss: eps must be > 0, got {eps}")
        self.reduction: Reduction = reduction
        self.eps = eps

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        return reduce(torch.sqrt((sr - gt).square() + self.eps), self.reduction)


@LOSS_REGISTRY.register()
class PSNRLoss(nn.Module):
    """Minus the PSNR in dB: 10/ln(10) * mean over images of ln(MSE + 1e-8).

    The 1e-8 floors the loss at -80 for identical images (images in [0, 1]).
    With to_y the MSE is taken on BT.601 luma (Y' / 255, as YCbCr), else on all
    channels. Only reduction "mean" exists, as in traiNNer-redux.
    """

    MSE_FLOOR = 1e-8

    def __init__(self, *, reduction: Literal["mean"] = "mean", to_y: bool = False) -> None:
        super().__init__()
        self.to_y = to_y

    def luma_0_1(self, image: Tensor) -> Tensor:
        if image.shape[1] != 3:
            raise UserError(f"psnrloss: to_y needs RGB images, got {image.shape[1]} channels")
        weights = image.new_tensor(YCBCR_Y_WEIGHTS).view(1, 3, 1, 1)
        return ((image * weights).sum(dim=1, keepdim=True) + 16.0) / 255.0

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        if self.to_y:
            sr, gt = self.luma_0_1(sr), self.luma_0_1(gt)
        mse = (sr - gt).square().mean(dim=(1, 2, 3))
        return (10 / math.log(10)) * torch.log(mse + self.MSE_FLOOR).mean()


@LOSS_REGISTRY.register()
class SobelEdgeLoss(nn.Module):
    """MSE between the Sobel gradients (x and y) of the luma of sr and gt.

    As traiNNer-redux: BT.601 luma, 3x3 Sobel kernels divided by 4 (a unit ramp
    gives 2), zero padding, so the image border counts as an edge against black.
    """

    def __init__(self) -> None:
        super().__init__()
        horizontal = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
        self.kernels: Tensor
        self.register_buffer(
            "kernels", torch.stack([horizontal, horizontal.T]).unsqueeze(1), persistent=False
        )

    def gradients(self, image: Tensor) -> Tensor:
        return F.conv2d(luma(image, "sobeledgeloss"), self.kernels, padding=1)

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        return F.mse_loss(self.gradients(sr), self.gradients(gt))
