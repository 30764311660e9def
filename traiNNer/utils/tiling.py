"""Tiled inference: bounded memory for large validation or test images."""

from __future__ import annotations

from collections.abc import Callable

import torch


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def tiled_forward(
    forward: Callable[[torch.Tensor], torch.Tensor],
    lq: torch.Tensor,
    scale: int,
    tile_size: int,
    overlap: int = 16,
) -> torch.Tensor:
    """Run `forward` on overlapping tiles of `lq` (NCHW) and average the overlaps."""
    n, _, height, width = lq.shape
    tile = max(tile_size, 2 * overlap + 1)
    stride = tile - overlap
    out: torch.Tensor | None = None
    weight = torch.zeros((1, 1, height * scale, width * scale), device=lq.device)
    for top in _starts(height, tile, stride):
        for left in _starts(width, tile, stride):
            patch = lq[:, :, top : top + tile, left : left + tile]
            result = forward(patch).float()
            if out is None:
                out = torch.zeros(
                    (n, result.shape[1], height * scale, width * scale), device=lq.device
                )
            rows = slice(top * scale, top * scale + result.shape[2])
            cols = slice(left * scale, left * scale + result.shape[3])
            out[:, :, rows, cols] += result
            weight[:, :, rows, cols] += 1
    assert out is not None
    return out / weight
