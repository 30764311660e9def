"""DISTS (Ding et al. 2020): structure and texture similarity of VGG16 features."""

from __future__ import annotations

from torch import Tensor

from traiNNer.metrics.base import register_metric
from traiNNer.metrics.networks import DISTS, learned


@register_metric(better="lower")
@learned(DISTS)
def calculate_dists(
    sr: Tensor,
    gt: Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    weights_path: str | None = None,
    backbone_weights_path: str | None = None,
) -> float:
    """DISTS distance of CHW / 1xCHW images in [0, 1]; identical images give (about) 0.

    pyiqa's network, the one distsloss uses. Images are quantised to 8 bit and cropped by
    crop_border first; grey images are repeated to RGB. weights_path is pyiqa's
    DISTS_weights-f5e65c96.pth (traiNNer-redux's dists_weights.pt holds the same alpha and
    beta) and backbone_weights_path torchvision's vgg16-397923af.pth; null looks in pyiqa's
    and torchvision's caches.
    """
    given = {"weights_path": weights_path, "backbone_weights_path": backbone_weights_path}
    return DISTS.score(sr, gt, crop_border, test_y_channel, given)
