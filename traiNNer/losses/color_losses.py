"""Colour losses: HSLuv hue/saturation/lightness and RGB cosine similarity."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from traiNNer.losses.fp32 import fp32_forward
from traiNNer.losses.hsluv import rgb_to_hsluv
from traiNNer.losses.pixel_losses import Criterion, pointwise_distance
from traiNNer.utils.errors import ConfigError, UserError
from traiNNer.utils.registry import LOSS_REGISTRY

# Normalised saturation / lightness below which (or lightness above 1 minus which)
# hue is meaningless: grey, black and white.
HUE_THRESHOLD = 0.1


def gaussian_kernel_1d(sigma: float, radius: int) -> Tensor:
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def circular_hue_distance(hue_a: Tensor, hue_b: Tensor) -> Tensor:
    """Shorter arc between hues in [0, 1) (one turn), scaled to [0, 1]."""
    difference = (hue_a - hue_b).abs()
    return 2 * torch.minimum(difference, 1 - difference)


@LOSS_REGISTRY.register()
class HSLuvLoss(nn.Module):
    """traiNNer-redux's HSLuv loss: hue + saturation + lightness terms in HSLuv.

    H, S and L are normalised to [0, 1]. The sum of three weighted means:
    - hue: the shorter arc between the hues (x2, so [0, 1]); 0 where both colours
      are grey (S < 0.1), both near black (L < 0.1) or both near white (L > 0.9);
      the larger saturation where only one of them is grey;
    - saturation: `criterion` distance, weighted by min(L, 1 - L) of sr plus that
      of gt (so saturation counts most at mid lightness);
    - lightness: `criterion` distance.
    blur_strength s > 0 first blurs both images with a Gaussian of sigma s (kernel
    4s + 1, reflected border); downscale_factor f > 1 then bicubic-downscales them
    by f (antialiased) and clamps to [0, 1]. Inputs are clamped to [0, 1] for the
    conversion, so values outside get no gradient from this loss.
    """

    def __init__(
        self,
        *,
        hue_weight: float = 1 / 3,
        saturation_weight: float = 1 / 3,
        lightness_weight: float = 1 / 3,
        criterion: Criterion = "l1",
        downscale_factor: int = 1,
        blur_strength: int = 0,
    ) -> None:
        super().__init__()
        for key, value in (
            ("hue_weight", hue_weight),
            ("saturation_weight", saturation_weight),
            ("lightness_weight", lightness_weight),
        ):
            if not value >= 0:
                raise ConfigError(f"hsluvloss: {key} must be >= 0, got {value}")
        if downscale_factor < 1:
            raise ConfigError(f"hsluvloss: downscale_factor must be >= 1, got {downscale_factor}")
        if blur_strength < 0:
            raise ConfigError(f"hsluvloss: blur_strength must be >= 0, got {blur_strength}")
        self.hue_weight = hue_weight
        self.saturation_weight = saturation_weight
        self.lightness_weight = lightness_weight
        self.criterion: Criterion = criterion
        self.downscale_factor = downscale_factor
        self.blur_radius = 2 * blur_strength
        self.blur_kernel: Tensor
        kernel = gaussian_kernel_1d(blur_strength, self.blur_radius) if blur_strength else None
        self.register_buffer(
            "blur_kernel", torch.empty(0) if kernel is None else kernel, persistent=False
        )

    def blur(self, image: Tensor) -> Tensor:
        radius = self.blur_radius
        if min(image.shape[-2:]) <= radius:
            raise UserError(
                f"hsluvloss: blur_strength {radius // 2} needs images larger than "
                f"{radius} px, got {image.shape[-2]}x{image.shape[-1]}"
            )
        channels = image.shape[1]
        row = self.blur_kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
        padded = F.pad(image, (radius, radius, radius, radius), mode="reflect")
        blurred = F.conv2d(padded, row, groups=channels)
        return F.conv2d(blurred, row.transpose(-1, -2), groups=channels)

    def to_normalised_hsluv(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if image.shape[1] != 3:
            raise UserError(f"hsluvloss: needs RGB images, got {image.shape[1]} channels")
        if self.blur_radius:
            image = self.blur(image)
        if self.downscale_factor > 1:
            image = F.interpolate(
                image, scale_factor=1 / self.downscale_factor, mode="bicubic", antialias=True
            ).clamp(0, 1)
        hsluv = rgb_to_hsluv(image)
        return hsluv[:, 0] / 360, hsluv[:, 1] / 100, hsluv[:, 2] / 100

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        sr_hue, sr_saturation, sr_lightness = self.to_normalised_hsluv(sr)
        gt_hue, gt_saturation, gt_lightness = self.to_normalised_hsluv(gt)

        threshold = HUE_THRESHOLD
        sr_grey, gt_grey = sr_saturation < threshold, gt_saturation < threshold
        sr_colourful, gt_colourful = sr_saturation > threshold, gt_saturation > threshold
        hue = circular_hue_distance(sr_hue, gt_hue)
        hue = torch.where(sr_grey & gt_grey, 0.0, hue)
        # Grey against a colour: as far as the colour is saturated.
        one_grey = (sr_grey & gt_colourful) | (sr_colourful & gt_grey)
        hue = torch.where(one_grey, torch.maximum(sr_saturation, gt_saturation), hue)
        both_dark = (sr_lightness < threshold) & (gt_lightness < threshold)
        both_bright = (sr_lightness > 1 - threshold) & (gt_lightness > 1 - threshold)
        hue = torch.where(both_dark | both_bright, 0.0, hue)

        def mid_tone(lightness: Tensor) -> Tensor:
            return torch.minimum(lightness, 1 - lightness).clamp(0, 0.5)

        saturation = pointwise_distance(self.criterion, sr_saturation, gt_saturation)
        saturation = saturation * (mid_tone(sr_lightness) + mid_tone(gt_lightness))
        lightness = pointwise_distance(self.criterion, sr_lightness, gt_lightness)
        return (
            self.hue_weight * hue.mean()
            + self.saturation_weight * saturation.mean()
            + self.lightness_weight * lightness.mean()
        )


@LOSS_REGISTRY.register()
class CosimLoss(nn.Module):
    """cosim_lambda * (1 - mean cosine similarity of the per-pixel colour vectors).

    Both images are clamped to [1e-12, 1] first (as traiNNer-redux), so black
    pixels still have a direction; it ignores brightness and penalises hue and
    saturation shifts only.
    """

    def __init__(self, *, cosim_lambda: float = 5) -> None:
        super().__init__()
        if not cosim_lambda >= 0 or math.isinf(cosim_lambda):
            raise ConfigError(
                f"cosimloss: cosim_lambda must be a finite number >= 0, got {cosim_lambda}"
            )
        self.cosim_lambda = cosim_lambda

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        similarity = F.cosine_similarity(sr.clamp(1e-12, 1), gt.clamp(1e-12, 1), dim=1, eps=1e-20)
        return self.cosim_lambda * (1 - similarity.mean())
