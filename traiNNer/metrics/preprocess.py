"""Shared preparation of an (sr, gt) pair before a full-reference metric."""

from __future__ import annotations

import torch
from torch import Tensor

from traiNNer.metrics.color import rgb_to_y
from traiNNer.utils.errors import UserError


def as_chw(metric: str, name: str, img: Tensor) -> Tensor:
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 3:
        raise UserError(f"{metric}: {name} must be CHW or 1xCHW, got shape {tuple(img.shape)}")
    return img


def metric_dtype(device: torch.device) -> torch.dtype:
    # float64 matches reference implementations; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def prepare_pair(
    metric: str, sr: Tensor, gt: Tensor, crop_border: int, test_y_channel: bool
) -> tuple[Tensor, Tensor]:
    """Quantise to 8 bit, crop the border and optionally take Y; CHW on the 0-255 scale.

    Quantising first makes the score that of the images as they would be saved.
    """
    sr = as_chw(metric, "sr", sr)
    gt = as_chw(metric, "gt", gt).to(sr.device)
    if sr.shape != gt.shape:
        raise UserError(
            f"{metric}: sr and gt sizes differ ({tuple(sr.shape)} vs {tuple(gt.shape)}); "
            "is the GT size a multiple of the scale?"
        )
    if crop_border < 0:
        raise UserError(f"{metric}: crop_border must be >= 0, got {crop_border}")
    height, width = sr.shape[-2:]
    if 2 * crop_border >= min(height, width):
        raise UserError(
            f"{metric}: crop_border {crop_border} leaves nothing of a {height}x{width} image"
        )

    dtype = metric_dtype(sr.device)
    pair: list[Tensor] = []
    for img in (sr, gt):
        img = (img.detach().to(dtype).clamp(0, 1) * 255).round()
        if crop_border:
            img = img[:, crop_border:-crop_border, crop_border:-crop_border]
        if test_y_channel and img.shape[0] == 3:
            img = rgb_to_y(img / 255) * 255
        pair.append(img)
    return pair[0], pair[1]
