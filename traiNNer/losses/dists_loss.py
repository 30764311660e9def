"""DISTS as a training loss (traiNNer-redux's `distsloss`), on calculate_dists's network."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from traiNNer.losses.fp32 import fp32_forward
from traiNNer.metrics.networks import DISTS, WEIGHT_KEYS, build_dists, require_pyiqa
from traiNNer.utils.errors import ConfigError
from traiNNer.utils.registry import LOSS_REGISTRY

NAME = "distsloss"


@LOSS_REGISTRY.register()
class DISTSLoss(nn.Module):
    """1 - DISTS similarity of sr and gt, averaged over the batch, clamped below at clip_min.

    The network and weights are those of `calculate_dists` (pyiqa's DISTS: frozen
    ImageNet VGG16 with L2 pooling and learned alpha/beta): weights_path is pyiqa's
    DISTS_weights-f5e65c96.pth (or traiNNer-redux's dists_weights.pt) and
    backbone_weights_path torchvision's vgg16-397923af.pth; null looks in pyiqa's and
    torchvision's caches, and nothing is downloaded. load_weights: false keeps random
    alpha/beta (traiNNer-redux's option); use_input_norm: false skips the ImageNet
    normalisation. One-channel inputs are repeated to RGB. Computed in float32.
    """

    def __init__(
        self,
        *,
        weights_path: str | None = None,
        backbone_weights_path: str | None = None,
        as_loss: bool = True,
        load_weights: bool = True,
        use_input_norm: bool = True,
        clip_min: float = 0.0,
    ) -> None:
        super().__init__()
        check_as_loss(as_loss, NAME)
        given = {"weights_path": weights_path, "backbone_weights_path": backbone_weights_path}
        self.dists = build_dists(resolve_files(given, load_weights, NAME))
        if not use_input_norm:
            # pyiqa's DISTS always normalises with these buffers; 0 and 1 leave inputs as is.
            self.dists.get_buffer("mean").fill_(0.0)
            self.dists.get_buffer("std").fill_(1.0)
        self.clip_min = clip_min

    @classmethod
    def check_options(cls, entry: dict[str, Any], path: str) -> None:
        """At option validation: as_loss, pyiqa and the weight files (resolved into `entry`)."""
        check_as_loss(entry.get("as_loss", True), path)
        require_pyiqa(f"{path}.type", NAME)
        given = {key: entry.get(key) for key in WEIGHT_KEYS}
        entry.update(resolve_files(given, entry.get("load_weights", True), path))

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        if sr.shape[1] == 1:
            sr, gt = sr.expand(-1, 3, -1, -1), gt.expand(-1, 3, -1, -1)
        distance = self.dists(sr, gt).mean()  # pyiqa gives 1 - similarity per image
        return torch.clamp(distance, min=self.clip_min)


def check_as_loss(as_loss: bool, where: str) -> None:
    if not as_loss:
        raise ConfigError(
            f"{where}.as_loss: false is traiNNer-redux's metric mode (no gradient); remove "
            "it, or use val.metrics: {type: calculate_dists} for the metric"
        )


def resolve_files(given: dict[str, str | None], load_weights: bool, where: str) -> dict[str, str]:
    """The files to read; without load_weights only the VGG16 backbone."""
    files = [file for file in DISTS.files if load_weights or file.key != "weights_path"]
    return {file.key: file.resolve(given.get(file.key), where, ConfigError) for file in files}
