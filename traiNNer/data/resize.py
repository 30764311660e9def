"""Bicubic resizing shared by datasets, the demo dataset and losses."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def quantize_8bit(image: Tensor) -> Tensor:
    """Round [0, 1] values to the 256 levels an 8-bit file can hold."""
    return image.clamp(0, 1).mul(255).round().div(255)


def _as_batch(image: Tensor) -> tuple[Tensor, bool]:
    if image.ndim == 3:
        return image[None], True
    if image.ndim == 4:
        return image, False
    raise ValueError(f"expected a (C, H, W) or (N, C, H, W) tensor, got {tuple(image.shape)}")


def bicubic_downscale(image: Tensor, scale: int) -> Tensor:
    """Antialiased bicubic downscale by an integer factor.

    The result is clamped to [0, 1] and rounded to 8-bit levels, so an LR made
    on the fly is identical to the same LR saved as a PNG and read back.
    Height and width must be multiples of `scale` (crop first), otherwise the
    LR pixel grid would not line up with the HR one.
    """
    batch, squeezed = _as_batch(image)
    height, width = batch.shape[-2:]
    if scale < 1 or height % scale or width % scale:
        raise ValueError(f"image size {height}x{width} is not a multiple of scale {scale}")
    if scale == 1:
        return quantize_8bit(image)
    small = F.interpolate(
        batch, size=(height // scale, width // scale), mode="bicubic", antialias=True
    )
    small = quantize_8bit(small)
    return small[0] if squeezed else small


def bicubic_upscale(image: Tensor, scale: int) -> Tensor:
    """Bicubic upscale by an integer factor, clamped to [0, 1] (not quantized).

    Differentiable, so it can serve as a baseline inside losses as well as for
    the bicubic PSNR reference.
    """
    batch, squeezed = _as_batch(image)
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if scale == 1:
        return image.clamp(0, 1)
    big = F.interpolate(batch, scale_factor=scale, mode="bicubic", align_corners=False)
    big = big.clamp(0, 1)
    return big[0] if squeezed else big
