"""ParagonSR2: a fixed classical upsampler plus a small learned detail network.

Output = base(x) + detail_gain * detail(x).

* Base path (not learned): optional Magic-Kernel-Sharp-style pre-sharpen with the
  7-tap kernel [-1, 0, 9, 16, 9, 0, -1] / 32 blended by `upsampler_alpha`, a
  nearest-neighbour upsample by `scale`, then the 5-tap blur [1, 4, 6, 4, 1] / 16.
  Every filter is separable and depthwise, held in non-persistent buffers so they
  never appear in the state dict or the optimizer. Both kernels sum to one and the
  borders are padded by replicating edge pixels, so flat regions pass unchanged.
  No weight reveals `upsampler_alpha`, so a model built with a value other than
  0.5 saves it in the state dict as the tag `upsampler_alpha` (see `alpha_tag`),
  which loaders that read only the weights (spandrel) need; default models have
  no such key, as before.
* Detail path: 3x3 conv in, residual groups of light blocks (each group ends in a
  3x3 conv and adds its input), a 3x3 conv with a global residual, a PixelShuffle
  upsampler, a 3x3 conv to RGB. Its output is scaled by the learnable scalar
  `detail_gain` (small at init, so training starts from the classical upsample).
* Light block: 1x1 expand, depthwise 3x3, GELU, [squeeze-excitation channel
  modulation on m and larger], 1x1 project, per-channel LayerScale, residual.

The forward pass has no data-dependent Python branches (it passes
`torch.export.export`), runs under autocast (fp16/bf16) and channels_last, and
`set_activation_checkpointing` recomputes the residual groups in the backward pass
to save memory (only while training).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from traiNNer.archs.variants import Family, Variant, register_variants
from traiNNer.utils.errors import ConfigError

SUPPORTED_SCALES: tuple[int, ...] = (1, 2, 3, 4)

# Magic Kernel Sharp 2021 style taps; both sum to 1 so constants are preserved.
SHARPEN_TAPS: tuple[float, ...] = (-1 / 32, 0.0, 9 / 32, 16 / 32, 9 / 32, 0.0, -1 / 32)
BLUR_TAPS: tuple[float, ...] = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)

RGB_CHANNELS = 3

DEFAULT_UPSAMPLER_ALPHA = 0.5
ALPHA_TAG = "upsampler_alpha"


def alpha_tag(alpha: float) -> Tensor:
    """`alpha` as a 0-d int64 tensor holding its float64 bits: exact, and left alone by
    `.half()` and `.to(dtype)`, which convert only floating-point tensors."""
    return torch.tensor(alpha, dtype=torch.float64).view(torch.int64)


def alpha_from_tag(tag: Tensor) -> float:
    if tag.dtype != torch.int64 or tag.dim() != 0:
        # e.g. a script that cast every tensor of the file to fp16: the bits are gone.
        raise ValueError(
            f"{ALPHA_TAG}: expected a 0-d int64 tag, got {tag.dtype} {list(tag.shape)}"
        )
    return float(tag.view(torch.float64).item())


def _replicate_pad(x: Tensor, pad: int, export_safe: bool) -> Tensor:
    """Pad H and W by repeating edge pixels.

    The export-safe form uses only slicing and concatenation: older TensorRT
    releases import ONNX `Pad` only in constant mode.
    """
    if not export_safe:
        return F.pad(x, (pad, pad, pad, pad), mode="replicate")
    top = x[:, :, :1, :].expand(-1, -1, pad, -1)
    bottom = x[:, :, -1:, :].expand(-1, -1, pad, -1)
    x = torch.cat((top, x, bottom), dim=2)
    left = x[:, :, :, :1].expand(-1, -1, -1, pad)
    right = x[:, :, :, -1:].expand(-1, -1, -1, pad)
    return torch.cat((left, x, right), dim=3)


def _nearest_upsample(x: Tensor, scale: int, export_safe: bool) -> Tensor:
    """Repeat each pixel `scale` x `scale` times.

    The export-safe form avoids ONNX `Resize`, whose nearest rounding modes differ
    between runtimes; expand + reshape maps to plain Expand/Reshape nodes.
    """
    if scale == 1:
        return x
    if not export_safe:
        return F.interpolate(x, scale_factor=scale, mode="nearest")
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1).expand(n, c, h, scale, w, scale)
    return x.reshape(n, c, h * scale, w * scale)


class SeparableFixedFilter(nn.Module):
    """Depthwise separable filter with fixed taps, applied to every channel alike."""

    def __init__(self, taps: tuple[float, ...], channels: int, export_safe: bool) -> None:
        super().__init__()
        if len(taps) % 2 != 1:
            raise ValueError("separable filter needs an odd number of taps")
        self.channels = channels
        self.pad = len(taps) // 2
        self.export_safe = export_safe
        kernel = torch.tensor(taps, dtype=torch.float32)
        # Non-persistent: rebuilt from constants, so checkpoints hold only learned weights.
        self.register_buffer(
            "kernel_h", kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), persistent=False
        )
        self.register_buffer(
            "kernel_v", kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), persistent=False
        )
        self.kernel_h: Tensor
        self.kernel_v: Tensor

    def forward(self, x: Tensor) -> Tensor:
        x = _replicate_pad(x, self.pad, self.export_safe)
        # Under autocast conv2d casts both operands itself; outside it, match x.
        x = F.conv2d(x, self.kernel_h.to(x.dtype), groups=self.channels)
        return F.conv2d(x, self.kernel_v.to(x.dtype), groups=self.channels)


class FixedUpsampler(nn.Module):
    """Non-learned base path: blend-sharpen, nearest upsample, blur."""

    def __init__(self, scale: int, alpha: float, export_safe: bool) -> None:
        super().__init__()
        self.scale = scale
        self.alpha = alpha
        self.export_safe = export_safe
        self.sharpen = SeparableFixedFilter(SHARPEN_TAPS, RGB_CHANNELS, export_safe)
        self.blur = SeparableFixedFilter(BLUR_TAPS, RGB_CHANNELS, export_safe)

    def forward(self, x: Tensor) -> Tensor:
        if self.alpha != 0.0:  # a constructor constant, not data: export-friendly
            x = x + self.alpha * (self.sharpen(x) - x)
        x = _nearest_upsample(x, self.scale, self.export_safe)
        return self.blur(x)


class ChannelModulation(nn.Module):
    """Squeeze-excitation: per-channel gates from globally pooled statistics."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        squeezed = max(channels // reduction, 4)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        # torch.mean exports as ReduceMean everywhere, unlike adaptive pooling.
        pooled = x.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(pooled))))
        return x * gate


class LightBlock(nn.Module):
    """Inverted bottleneck with a depthwise 3x3 and LayerScale'd residual."""

    def __init__(
        self,
        channels: int,
        expansion: float,
        layer_scale_init: float,
        channel_modulation: bool,
        modulation_reduction: int,
    ) -> None:
        super().__init__()
        hidden = max(round(channels * expansion), 1)
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.modulation: nn.Module = (
            ChannelModulation(hidden, modulation_reduction) if channel_modulation else nn.Identity()
        )
        self.project = nn.Conv2d(hidden, channels, 1)
        self.layer_scale = nn.Parameter(torch.full((1, channels, 1, 1), layer_scale_init))

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.depthwise(self.expand(x)))
        y = self.project(self.modulation(y))
        return x + self.layer_scale * y


class ResidualGroup(nn.Module):
    """A run of light blocks closed by a 3x3 conv, with a skip over the whole group."""

    def __init__(self, channels: int, num_blocks: int, make_block: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(make_block() for _ in range(num_blocks)))
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(self.blocks(x))


class ParagonSR2(nn.Module):
    """Dual-path super-resolution network (see the module docstring)."""

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
        layer_scale_init: float = 1e-2,
        upsampler_alpha: float = DEFAULT_UPSAMPLER_ALPHA,
        detail_gain: float = 0.1,
        export_safe: bool = False,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.export_safe = export_safe
        self.activation_checkpointing = False

        self.base = FixedUpsampler(scale, upsampler_alpha, export_safe)
        if upsampler_alpha != DEFAULT_UPSAMPLER_ALPHA:
            # Only then, so default models keep the state dict they always had.
            self.register_buffer(ALPHA_TAG, alpha_tag(upsampler_alpha))

        self.conv_in = nn.Conv2d(RGB_CHANNELS, num_feat, 3, padding=1)

        def make_block() -> nn.Module:
            return LightBlock(
                num_feat, ffn_expansion, layer_scale_init, channel_modulation, modulation_reduction
            )

        self.groups = nn.ModuleList(
            ResidualGroup(num_feat, num_blocks, make_block) for _ in range(num_groups)
        )
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.upsample = nn.Sequential(
            nn.Conv2d(num_feat, num_feat * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
            nn.GELU(),
        )
        self.conv_out = nn.Conv2d(num_feat, RGB_CHANNELS, 3, padding=1)
        self.detail_gain = nn.Parameter(torch.tensor(float(detail_gain)))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # The tag describes this network's forward pass, so it keeps its value: weights
        # saved before the tag existed load as before, and another alpha is only warned
        # about (torch passes no `strict` here, and a non-strict fine-tune may change it).
        key = prefix + ALPHA_TAG
        if hasattr(self, ALPHA_TAG):
            saved = state_dict.get(key)
            if (
                isinstance(saved, Tensor)
                and saved.dtype == torch.int64
                and saved.dim() == 0
                and alpha_from_tag(saved) != self.base.alpha
            ):
                warnings.warn(
                    f"{key}: weights trained with upsampler_alpha={alpha_from_tag(saved)} "
                    f"loaded into a network built with {self.base.alpha}, which it keeps",
                    stacklevel=2,
                )
            state_dict[key] = self.get_buffer(ALPHA_TAG)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute residual groups during backward (saves memory, costs compute)."""
        self.activation_checkpointing = enabled

    def _run_group(self, group: nn.Module, x: Tensor) -> Tensor:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return cast(Tensor, checkpoint(group, x, use_reentrant=False))
        return group(x)

    def detail(self, x: Tensor) -> Tensor:
        """The learned high-frequency residual, before `detail_gain`."""
        shallow = self.conv_in(x)
        deep = shallow
        for group in self.groups:
            deep = self._run_group(group, deep)
        deep = self.conv_body(deep) + shallow
        return self.conv_out(self.upsample(deep))

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.detail_gain * self.detail(x)


@dataclass(frozen=True)
class ParagonSR2Variant:
    """Size preset of the ParagonSR2 ladder: the defaults it gives ParagonSR2."""

    num_feat: int
    num_groups: int
    num_blocks: int
    ffn_expansion: float
    channel_modulation: bool

    def row(self, name: str) -> Variant:
        """This preset as a registry row named `name`."""
        size = name.removeprefix("paragonsr2").lstrip("_") or "generic"
        return Variant(
            PARAGONSR2_FAMILY,
            f"ParagonSR2 {size} preset: {self.num_feat} features, "
            f"{self.num_groups}x{self.num_blocks} blocks.",
            asdict(self),
        )


# Registry name -> preset. nano gets a MobileNetV2-wide bottleneck so its single
# block is not starved; m widens it and adds channel modulation.
VARIANTS: dict[str, ParagonSR2Variant] = {
    "paragonsr2": ParagonSR2Variant(32, 2, 3, 2.0, False),
    "paragonsr2_nano": ParagonSR2Variant(12, 1, 1, 6.0, False),
    "paragonsr2_micro": ParagonSR2Variant(16, 1, 2, 2.0, False),
    "paragonsr2_tiny": ParagonSR2Variant(24, 2, 2, 2.0, False),
    "paragonsr2_xs": ParagonSR2Variant(32, 2, 3, 2.0, False),
    "paragonsr2_s": ParagonSR2Variant(48, 3, 4, 2.0, False),
    "paragonsr2_m": ParagonSR2Variant(64, 4, 6, 3.75, True),
}

_SIZES = ("num_feat", "num_groups", "num_blocks", "modulation_reduction")


def build_paragonsr2(name: str, scale: int, hyperparameters: dict[str, Any]) -> ParagonSR2:
    """Check the sizes, then build; the keys are ParagonSR2's own keywords."""
    for key in _SIZES:
        if hyperparameters[key] < 1:
            raise ConfigError(
                f"network_g.{key}: must be at least 1 for {name}, got {hyperparameters[key]}"
            )
    ffn_expansion = hyperparameters["ffn_expansion"]
    if ffn_expansion <= 0:
        raise ConfigError(
            f"network_g.ffn_expansion: must be positive for {name}, got {ffn_expansion}"
        )
    return ParagonSR2(scale=scale, **hyperparameters)


# The constructor's own keywords are the family's (no copy of its signature); they
# reach the builder as a plain dict.
PARAGONSR2_FAMILY: Family[dict[str, Any]] = Family(
    dict, build_paragonsr2, SUPPORTED_SCALES, signature_of=ParagonSR2
)
FACTORIES = register_variants({name: preset.row(name) for name, preset in VARIANTS.items()})
