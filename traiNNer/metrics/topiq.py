"""TOPIQ (Chen et al. 2024), full-reference: top-down attention over ResNet50 features."""

from __future__ import annotations

from torch import Tensor

from traiNNer.metrics.base import register_metric
from traiNNer.metrics.networks import TOPIQ, learned


@register_metric(better="higher")
@learned(TOPIQ)
def calculate_topiq(
    sr: Tensor,
    gt: Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    weights_path: str | None = None,
) -> float:
    """TOPIQ-FR quality of sr against gt (CHW / 1xCHW in [0, 1]); about 0 to 1, higher is better.

    pyiqa's `topiq_fr` (CFANet, ResNet50, trained on KADID-10k), as traiNNer-redux's
    `calculate_topiq`. Images are quantised to 8 bit and cropped by crop_border first;
    grey images are repeated to RGB. weights_path is pyiqa's
    cfanet_fr_kadid_res50-2c4cc61d.pth, which holds the whole network (no backbone file);
    null looks in pyiqa's cache.
    """
    return TOPIQ.score(sr, gt, crop_border, test_y_channel, {"weights_path": weights_path})
