"""LPIPS (Zhang et al. 2018): learned perceptual distance on AlexNet features."""

from __future__ import annotations

from torch import Tensor

from traiNNer.metrics.base import register_metric
from traiNNer.metrics.networks import LPIPS, learned


@register_metric(better="lower")
@learned(LPIPS)
def calculate_lpips(
    sr: Tensor,
    gt: Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    weights_path: str | None = None,
    backbone_weights_path: str | None = None,
) -> float:
    """LPIPS v0.1 (AlexNet) distance of CHW / 1xCHW images in [0, 1]; identical images give 0.

    pyiqa's network, as traiNNer-redux's `calculate_lpips`. Images are quantised to 8 bit
    and cropped by crop_border first; grey images are repeated to RGB. weights_path is
    pyiqa's LPIPS_v0.1_alex-df73285e.pth and backbone_weights_path torchvision's
    alexnet-owt-7be5be79.pth; null looks in pyiqa's and torchvision's caches.
    """
    given = {"weights_path": weights_path, "backbone_weights_path": backbone_weights_path}
    return LPIPS.score(sr, gt, crop_border, test_y_channel, given)
