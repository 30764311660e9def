"""sRGB -> HSLuv (https://www.hsluv.org) in torch, differentiable.

HSLuv is CIELUV's LCh with the chroma rescaled, per lightness and hue, by the
largest chroma sRGB can show there: S = 100 * C / C_max(L, H). The constants
are those of the HSLuv reference implementation (sRGB primaries, D65 white).

The spec's singular points are made safe for gradients in float32: black and
white have S = 0, and colours whose chroma is below CHROMA_FOR_HUE (grey up to
float32 rounding; an 8-bit colour one step off grey has C > 0.02) get hue 0 with
no gradient through the angle.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Linear sRGB -> CIE XYZ, and its inverse (whose rows bound the gamut).
RGB_TO_XYZ = (
    (0.41239079926595, 0.35758433938387, 0.18048078840183),
    (0.21263900587151, 0.71516867876775, 0.072192315360733),
    (0.019330818715591, 0.11919477979462, 0.95053215224966),
)
XYZ_TO_RGB = (
    (3.240969941904521, -1.537383177570093, -0.498610760293),
    (-0.96924363628087, 1.87596750150772, 0.041555057407175),
    (0.055630079696993, -0.20397695888897, 1.056971514242878),
)
# u', v' chromaticity of the D65 white.
WHITE_U = 0.19783000664283
WHITE_V = 0.46831999493879
# CIE L* = KAPPA * Y below Y = EPSILON, 116 * Y^(1/3) - 16 above.
KAPPA = 903.2962962
EPSILON = 0.0088564516
CHROMA_FOR_HUE = 1e-2
# Lightness within this of 0 or 100 is black or white: saturation 0.
LIGHTNESS_EDGE = 1e-3
# Keeps divisions that are exactly 0 only at black (or parallel rays) finite.
TINY = 1e-12


def srgb_to_linear(rgb: Tensor) -> Tensor:
    curved = ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4
    return torch.where(rgb > 0.04045, curved, rgb / 12.92)


def lightness_from_luminance(y: Tensor) -> Tensor:
    cube_root = 116 * y.clamp_min(EPSILON) ** (1 / 3) - 16
    return torch.where(y > EPSILON, cube_root, KAPPA * y)


def luminance_from_lightness(lightness: Tensor) -> Tensor:
    cubed = ((lightness + 16) / 116) ** 3
    return torch.where(cubed > EPSILON, cubed, lightness / KAPPA)


def safe_denominator(value: Tensor) -> Tensor:
    """`value` pushed at least TINY away from 0, keeping its sign (0 becomes +TINY)."""
    sign = torch.where(value < 0, -1.0, 1.0)
    return sign * value.abs().clamp_min(TINY)


def max_chroma(lightness: Tensor, hue_radians: Tensor) -> Tensor:
    """The largest LUV chroma sRGB reaches at this lightness and hue.

    For each RGB channel at 0 and at 1 the gamut boundary is a line
    v = slope * u + intercept in the (u, v) plane; the hue's ray from the origin
    leaves the gamut at the nearest of these lines in front of it.
    """
    y = luminance_from_lightness(lightness)
    sin, cos = torch.sin(hue_radians), torch.cos(hue_radians)
    distances: list[Tensor] = []
    for m1, m2, m3 in XYZ_TO_RGB:
        for bound in (0.0, 1.0):
            denominator = safe_denominator((632260 * m3 - 126452 * m2) * y + 126452 * bound)
            slope = (284517 * m1 - 94839 * m3) * y / denominator
            numerator = (838422 * m3 + 769860 * m2 + 731718 * m1) * lightness * y
            intercept = (numerator - 769860 * bound * lightness) / denominator
            distances.append(intercept / safe_denominator(sin - slope * cos))
    stacked = torch.stack(distances)
    ahead = torch.where(stacked >= 0, stacked, torch.full_like(stacked, math.inf))
    return ahead.amin(dim=0)


def rgb_to_hsluv(rgb: Tensor) -> Tensor:
    """(N, 3, H, W) sRGB in [0, 1] (clamped) -> (N, 3, H, W) HSLuv: H in [0, 360), S and L in [0, 100]."""
    linear = srgb_to_linear(rgb.clamp(0, 1))
    matrix = linear.new_tensor(RGB_TO_XYZ)
    x, y, z = torch.einsum("ij,njhw->inhw", matrix, linear).unbind(0)
    lightness = lightness_from_luminance(y)

    # Black has X = Y = Z = 0; its u, v come out 0 through the factor lightness = 0.
    divider = (x + 15 * y + 3 * z).clamp_min(TINY)
    u = 13 * lightness * (4 * x / divider - WHITE_U)
    v = 13 * lightness * (9 * y / divider - WHITE_V)

    squared = u.square() + v.square()
    chromatic = squared > CHROMA_FOR_HUE**2
    # Double where: the discarded branch must not be evaluated at the singular point.
    chroma = torch.where(chromatic, torch.sqrt(torch.where(chromatic, squared, 1.0)), 0.0)
    angle = torch.atan2(torch.where(chromatic, v, 0.0), torch.where(chromatic, u, 1.0))
    hue_radians = torch.where(chromatic, torch.remainder(angle, 2 * math.pi), 0.0)

    inside = (lightness > LIGHTNESS_EDGE) & (lightness < 100 - LIGHTNESS_EDGE)
    limit = max_chroma(torch.where(inside, lightness, 50.0), hue_radians)
    saturation = torch.where(inside, 100 * chroma / torch.where(inside, limit, 1.0), 0.0)
    hue = torch.rad2deg(hue_radians)
    return torch.stack([hue, saturation.clamp(0, 100), lightness.clamp(0, 100)], dim=1)
