"""Colour conversion used by Y-channel metrics (and Y-channel training data)."""

from __future__ import annotations

import torch
from torch import Tensor

from traiNNer.utils.errors import UserError

# ITU-R BT.601 luma for studio-range output: Y = 16 + 65.481 R + 128.553 G + 24.966 B
# with R, G, B in [0, 1] and Y on the 0-255 scale, so Y spans 16 (black) to 235 (white).
BT601_Y_OFFSET = 16.0
BT601_Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(img: Tensor) -> Tensor:
    """Studio-range BT.601 luma of an RGB image in [0, 1], as a value in [16/255, 235/255].

    The channel axis is the third from last (CHW or NCHW) and is kept with size 1.
    """
    if img.ndim < 3 or img.shape[-3] != 3:
        raise UserError(
            f"rgb_to_y needs an RGB image (3 channels at dim -3), got shape {tuple(img.shape)}"
        )
    weights = torch.tensor(BT601_Y_WEIGHTS, dtype=img.dtype, device=img.device).view(3, 1, 1)
    luma = (img * weights).sum(dim=-3, keepdim=True)
    return (luma + BT601_Y_OFFSET) / 255.0
