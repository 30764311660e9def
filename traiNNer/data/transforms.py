"""Per-sample geometric transforms applied to LR/HR pairs, plus colour conversion."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class RandomSource(Protocol):
    """What the transforms draw from: the `random` module or a `random.Random`.

    Datasets pass the `random` module itself because PyTorch reseeds it in
    every DataLoader worker, so workers never repeat each other's crops.
    """

    def randint(self, a: int, b: int) -> int: ...

    def random(self) -> float: ...


def height_width(image: Tensor) -> tuple[int, int]:
    """(H, W) of a (..., H, W) tensor."""
    return image.shape[-2], image.shape[-1]


def mod_crop(image: Tensor, scale: int) -> Tensor:
    """Crop bottom/right so height and width are multiples of `scale`."""
    height, width = image.shape[-2:]
    return image[..., : height - height % scale, : width - width % scale]


def random_crop(image: Tensor, size: int, rng: RandomSource) -> Tensor:
    """A random `size` x `size` window; the caller checks the image is large enough."""
    height, width = image.shape[-2:]
    top = rng.randint(0, height - size)
    left = rng.randint(0, width - size)
    return image[..., top : top + size, left : left + size]


def paired_random_crop(
    lq: Tensor, gt: Tensor, lq_size: int, scale: int, rng: RandomSource
) -> tuple[Tensor, Tensor]:
    """Crop `lq_size` on the LR and the matching `lq_size*scale` window on the HR.

    The HR offset is the LR offset times `scale`, so both crops show the same
    content whatever the position.
    """
    height, width = lq.shape[-2:]
    top = rng.randint(0, height - lq_size)
    left = rng.randint(0, width - lq_size)
    gt_size = lq_size * scale
    lq_crop = lq[..., top : top + lq_size, left : left + lq_size]
    gt_crop = gt[..., top * scale : top * scale + gt_size, left * scale : left * scale + gt_size]
    return lq_crop, gt_crop


def random_flip_rotate(
    images: list[Tensor], hflip: bool, rotate: bool, rng: RandomSource
) -> list[Tensor]:
    """Apply one random choice of the 8 dihedral transforms to every image alike.

    `hflip` enables the horizontal flip; `rotate` enables the vertical flip and
    the transpose, which together with hflip give all 90-degree rotations.
    """
    do_hflip = hflip and rng.random() < 0.5
    do_vflip = rotate and rng.random() < 0.5
    do_transpose = rotate and rng.random() < 0.5
    out: list[Tensor] = []
    for image in images:
        if do_hflip:
            image = image.flip(-1)
        if do_vflip:
            image = image.flip(-2)
        if do_transpose:
            image = image.transpose(-2, -1)
        out.append(image.contiguous())
    return out


# ITU-R BT.601 luma for [0, 1] RGB in studio range (16..235), the convention
# SR benchmarks use for "Y channel" PSNR/SSIM.
_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
_Y_OFFSET = 16.0 / 255.0


def rgb_to_y(image: Tensor) -> Tensor:
    """(…, 3, H, W) RGB in [0, 1] -> (…, 1, H, W) BT.601 Y in [16/255, 235/255]."""
    weights = torch.tensor(_Y_WEIGHTS, dtype=image.dtype, device=image.device)
    y = torch.einsum("...chw,c->...hw", image, weights) + _Y_OFFSET
    return y.unsqueeze(-3)
