"""ParagonSR2: a fixed classical upsampler plus a small learned detail network.

Output = base(x) + detail_gain * detail(x).

* Base path (not learned): a Magic-Kernel-Sharp-style pre-sharpen with the 7-tap
  kernel [-1, 0, 9, 16, 9, 0, -1] / 32 blended by `upsampler_alpha`, a
  nearest-neighbour upsample by `scale`, then the 5-tap blur [1, 4, 6, 4, 1] / 16.
  The filters are separable and depthwise, with edge pixels replicated at the
  borders; their taps are non-persistent buffers, so they are not in the state dict.
* Detail path: 3x3 conv in, residual groups of light blocks (each group ends in a
  3x3 conv and adds its input), a 3x3 conv with a global residual, a PixelShuffle
  upsampler, a 3x3 conv to RGB, scaled by the learned scalar `detail_gain`.
* Light block: 1x1 expand, depthwise 3x3, GELU, [squeeze-excitation], 1x1 project,
  per-channel LayerScale, residual.

No weight reveals `upsampler_alpha`: a model trained with a value other than 0.5
carries the 0-d int64 buffer `upsampler_alpha` (the float64 bits of the value, which
`.half()` leaves alone). No such key means 0.5.

Inference-only port of traiNNer-auto's `traiNNer/archs/paragonsr2.py`: the same state
dict and the same function. Training-only options (initial values of `detail_gain`
and LayerScale, activation checkpointing) are left out. Edge replication and the
nearest upsample are written with slicing, concatenation, expand and reshape (the
trainer's `export_safe` form): the result is identical, and an ONNX export then needs
neither a non-constant `Pad` nor `Resize`, whose support and rounding differ between
runtimes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spandrel.util import store_hyperparameters

SHARPEN_TAPS = (-1 / 32, 0.0, 9 / 32, 16 / 32, 9 / 32, 0.0, -1 / 32)
BLUR_TAPS = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
RGB_CHANNELS = 3
DEFAULT_UPSAMPLER_ALPHA = 0.5
ALPHA_TAG = "upsampler_alpha"


def alpha_tag(alpha: float) -> Tensor:
    """`alpha` as a 0-d int64 tensor holding its float64 bits."""
    return torch.tensor(alpha, dtype=torch.float64).view(torch.int64)


def alpha_from_tag(tag: Tensor) -> float:
    if tag.dtype != torch.int64 or tag.dim() != 0:
        # e.g. every tensor of the file cast to fp16 by a script: the bits are gone.
        raise ValueError(
            f"{ALPHA_TAG}: expected a 0-d int64 tag, got {tag.dtype} {list(tag.shape)}"
        )
    return float(tag.view(torch.float64).item())


def _replicate_pad(x: Tensor, pad: int) -> Tensor:
    top = x[:, :, :1, :].expand(-1, -1, pad, -1)
    bottom = x[:, :, -1:, :].expand(-1, -1, pad, -1)
    x = torch.cat((top, x, bottom), dim=2)
    left = x[:, :, :, :1].expand(-1, -1, -1, pad)
    right = x[:, :, :, -1:].expand(-1, -1, -1, pad)
    return torch.cat((left, x, right), dim=3)


def _nearest_upsample(x: Tensor, scale: int) -> Tensor:
    if scale == 1:
        return x
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1).expand(n, c, h, scale, w, scale)
    return x.reshape(n, c, h * scale, w * scale)


class SeparableFixedFilter(nn.Module):
    def __init__(self, taps: tuple[float, ...], channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.pad = len(taps) // 2
        kernel = torch.tensor(taps, dtype=torch.float32)
        self.register_buffer(
            "kernel_h",
            kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1),
            persistent=False,
        )
        self.register_buffer(
            "kernel_v",
            kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1),
            persistent=False,
        )
        self.kernel_h: Tensor
        self.kernel_v: Tensor

    def forward(self, x: Tensor) -> Tensor:
        x = _replicate_pad(x, self.pad)
        x = F.conv2d(x, self.kernel_h.to(x.dtype), groups=self.channels)
        return F.conv2d(x, self.kernel_v.to(x.dtype), groups=self.channels)


class FixedUpsampler(nn.Module):
    def __init__(self, scale: int, alpha: float) -> None:
        super().__init__()
        self.scale = scale
        self.alpha = alpha
        self.sharpen = SeparableFixedFilter(SHARPEN_TAPS, RGB_CHANNELS)
        self.blur = SeparableFixedFilter(BLUR_TAPS, RGB_CHANNELS)

    def forward(self, x: Tensor) -> Tensor:
        if self.alpha != 0.0:  # a constructor constant, so traced graphs stay static
            x = x + self.alpha * (self.sharpen(x) - x)
        return self.blur(_nearest_upsample(x, self.scale))


class ChannelModulation(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        squeezed = max(channels // reduction, 4)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(pooled))))


class LightBlock(nn.Module):
    def __init__(
        self, channels: int, expansion: float, channel_modulation: bool, reduction: int
    ) -> None:
        super().__init__()
        hidden = max(round(channels * expansion), 1)
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.modulation: nn.Module = (
            ChannelModulation(hidden, reduction)
            if channel_modulation
            else nn.Identity()
        )
        self.project = nn.Conv2d(hidden, channels, 1)
        self.layer_scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.depthwise(self.expand(x)))
        return x + self.layer_scale * self.project(self.modulation(y))


class ResidualGroup(nn.Module):
    def __init__(self, channels: int, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(self.blocks(x))


@store_hyperparameters()
class ParagonSR2(nn.Module):
    hyperparameters = {}

    def __init__(
        self,
        *,
        scale: int = 4,
        num_feat: int = 32,
        num_groups: int = 2,
        num_blocks: int = 3,
        ffn_expansion: float = 2.0,
        channel_modulation: bool = False,
        modulation_reduction: int = 4,
        upsampler_alpha: float = DEFAULT_UPSAMPLER_ALPHA,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.base = FixedUpsampler(scale, upsampler_alpha)
        if upsampler_alpha != DEFAULT_UPSAMPLER_ALPHA:
            self.register_buffer(ALPHA_TAG, alpha_tag(upsampler_alpha))

        self.conv_in = nn.Conv2d(RGB_CHANNELS, num_feat, 3, padding=1)
        self.groups = nn.ModuleList(
            ResidualGroup(
                num_feat,
                [
                    LightBlock(
                        num_feat,
                        ffn_expansion,
                        channel_modulation,
                        modulation_reduction,
                    )
                    for _ in range(num_blocks)
                ],
            )
            for _ in range(num_groups)
        )
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.upsample = nn.Sequential(
            nn.Conv2d(num_feat, num_feat * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
            nn.GELU(),
        )
        self.conv_out = nn.Conv2d(num_feat, RGB_CHANNELS, 3, padding=1)
        self.detail_gain = nn.Parameter(torch.tensor(0.1))

    def forward(self, x: Tensor) -> Tensor:
        shallow = self.conv_in(x)
        deep = shallow
        for group in self.groups:
            deep = group(deep)
        deep = self.conv_body(deep) + shallow
        detail = self.conv_out(self.upsample(deep))
        return self.base(x) + self.detail_gain * detail
