"""LDR-FLIP (Andersson et al., "FLIP: A Difference Evaluator for Alternating Images",
HPG 2020) as a differentiable loss: the mean of the per-pixel FLIP error in [0, 1].

Colour pipeline: both sRGB images go to the opponent space YCxCz, each channel is
blurred by the human contrast sensitivity function (CSF) for the viewing
distance (`pixels_per_degree`), clamped to the RGB cube, taken to Hunt-adjusted
CIELAB and compared with the HyAB distance, which is then compressed into [0, 1].
Feature pipeline: edges and points (first and second Gaussian derivatives) of
the luminance are compared. Error = colour_error ** (1 - feature_error).

As in traiNNer-redux's version, two terms keep the gradients finite where the
images agree: the chroma distance is sqrt(|Δab|^2 + 1e-4) and the feature
difference is at least 1e-4. Identical images therefore score about 2e-3, not 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from traiNNer.losses.fp32 import fp32_forward
from traiNNer.utils.errors import ConfigError, UserError
from traiNNer.utils.registry import LOSS_REGISTRY

# A 0.7 m wide 4K display seen from 0.7 m: 3840 px across 2 * atan(0.5) ~ 57.3 degrees
# (FLIP's default observer).
DEFAULT_PIXELS_PER_DEGREE = 3840 * math.pi / 180
Q_COLOR, Q_FEATURE = 0.7, 0.5  # exponents of the colour and feature errors
P_CUTOFF, P_TARGET = 0.4, 0.95  # errors below P_CUTOFF * cmax map to [0, P_TARGET]
EDGE_WIDTH = 0.082  # degrees: peak-to-trough width of the edge detector
STABILITY_EPS = 1e-4

# CSF of each opponent channel (achromatic, red-green, blue-yellow) as a sum of two
# Gaussians a1 * sqrt(pi / b1) * exp(-pi^2 d^2 / b1) + (a2, b2), d in degrees.
CSF_PARAMETERS = (
    (1.0, 0.0047, 0.0, 1e-5),
    (1.0, 0.0053, 0.0, 1e-5),
    (34.1, 0.04, 13.5, 0.025),
)

# Linear sRGB <-> CIE XYZ (D65), and the D65 white point.
LINEAR_RGB_TO_XYZ = (
    (10135552 / 24577794, 8788810 / 24577794, 4435075 / 24577794),
    (2613072 / 12288897, 8788810 / 12288897, 887015 / 12288897),
    (1425312 / 73733382, 8788810 / 73733382, 70074185 / 73733382),
)
WHITE_XYZ = (0.950428545, 1.0, 1.088900371)


def inverse_3x3(matrix: tuple[tuple[float, ...], ...]) -> tuple[tuple[float, ...], ...]:
    inverse = torch.linalg.inv(torch.tensor(matrix, dtype=torch.float64))
    return tuple(tuple(row) for row in inverse.tolist())


XYZ_TO_LINEAR_RGB = inverse_3x3(LINEAR_RGB_TO_XYZ)


def apply_matrix(matrix: tuple[tuple[float, ...], ...], image: Tensor) -> Tensor:
    return torch.einsum("ij,njhw->nihw", image.new_tensor(matrix), image)


def white(image: Tensor) -> Tensor:
    return image.new_tensor(WHITE_XYZ).view(1, 3, 1, 1)


def srgb_to_linear(image: Tensor) -> Tensor:
    curved = ((image.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4
    return torch.where(image > 0.04045, curved, image / 12.92)


def xyz_to_ycxcz(xyz: Tensor) -> Tensor:
    x, y, z = (xyz / white(xyz)).unbind(1)
    return torch.stack([116 * y - 16, 500 * (x - y), 200 * (y - z)], dim=1)


def ycxcz_to_xyz(ycxcz: Tensor) -> Tensor:
    luminance, cx, cz = ycxcz.unbind(1)
    y = (luminance + 16) / 116
    return torch.stack([y + cx / 500, y, y - cz / 200], dim=1) * white(ycxcz)


def xyz_to_hunt_lab(xyz: Tensor) -> Tensor:
    """CIELAB with a and b scaled by L / 100 (Hunt effect: chroma fades in the dark)."""
    delta = 6 / 29
    normalised = xyz / white(xyz)
    cube_root = normalised.clamp_min(delta**3) ** (1 / 3)
    f = torch.where(normalised > delta**3, cube_root, normalised / (3 * delta**2) + 4 / 29)
    fx, fy, fz = f.unbind(1)
    lightness = 116 * fy - 16
    hunt = 0.01 * lightness
    return torch.stack([lightness, hunt * 500 * (fx - fy), hunt * 200 * (fy - fz)], dim=1)


def hyab(lab_a: Tensor, lab_b: Tensor, eps: float) -> Tensor:
    """|ΔL| + ||Δ(a, b)||, the latter softened by eps under the root."""
    difference = lab_a - lab_b
    chroma = torch.sqrt(difference[:, 1:].square().sum(dim=1, keepdim=True) + eps)
    return difference[:, :1].abs() + chroma


def csf_kernels(pixels_per_degree: float) -> Tensor:
    """(3, 1, k, k) normalised CSF filters; one radius fits the widest of them."""
    widest = max(max(b1, b2) for _, b1, _, b2 in CSF_PARAMETERS)
    radius = math.ceil(3 * math.sqrt(widest / (2 * math.pi**2)) * pixels_per_degree)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64) / pixels_per_degree
    squared = offsets.view(-1, 1) ** 2 + offsets.view(1, -1) ** 2
    kernels = []
    for a1, b1, a2, b2 in CSF_PARAMETERS:
        kernel = a1 * math.sqrt(math.pi / b1) * torch.exp(-(math.pi**2) * squared / b1)
        kernel = kernel + a2 * math.sqrt(math.pi / b2) * torch.exp(-(math.pi**2) * squared / b2)
        kernels.append(kernel / kernel.sum())
    return torch.stack(kernels).unsqueeze(1).float()


def feature_kernels(pixels_per_degree: float) -> Tensor:
    """(2, 1, k, k) x-direction edge (1st Gaussian derivative) and point (2nd) detectors.

    Positive taps are scaled to sum to 1 and negative ones to -1.
    """
    sigma = 0.5 * EDGE_WIDTH * pixels_per_degree
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    x = offsets.view(1, -1).expand(len(offsets), -1)
    gaussian = torch.exp(-(x**2 + x.T**2) / (2 * sigma**2))
    detectors = []
    for kernel in (-x * gaussian, (x**2 / sigma**2 - 1) * gaussian):
        positive, negative = kernel.clamp_min(0).sum(), -kernel.clamp_max(0).sum()
        detectors.append(torch.where(kernel > 0, kernel / positive, kernel / negative))
    return torch.stack(detectors).unsqueeze(1).float()


def max_color_error() -> float:
    """cmax: the compressed HyAB distance between pure green and pure blue."""
    primaries = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    lab = xyz_to_hunt_lab(apply_matrix(LINEAR_RGB_TO_XYZ, primaries.view(2, 3, 1, 1)))
    return float(hyab(lab[:1], lab[1:], 0.0).item() ** Q_COLOR)


def replicate_pad(image: Tensor, radius: int) -> Tensor:
    return F.pad(image, (radius, radius, radius, radius), mode="replicate")


@LOSS_REGISTRY.register()
class FLIPLoss(nn.Module):
    """Mean LDR-FLIP error (Andersson et al. 2020) of sr against gt, sRGB in [0, 1] (clamped)."""

    def __init__(self, *, pixels_per_degree: float = DEFAULT_PIXELS_PER_DEGREE) -> None:
        super().__init__()
        if not pixels_per_degree > 0 or math.isinf(pixels_per_degree):
            raise ConfigError(
                f"fliploss: pixels_per_degree must be a finite number > 0, got {pixels_per_degree}"
            )
        self.cmax = max_color_error()
        self.csf: Tensor
        self.features: Tensor
        self.register_buffer("csf", csf_kernels(pixels_per_degree), persistent=False)
        self.register_buffer("features", feature_kernels(pixels_per_degree), persistent=False)

    def perceived_lab(self, opponent: Tensor) -> Tensor:
        """The CSF-filtered opponent image, clamped to the RGB cube, as Hunt-adjusted Lab."""
        radius = self.csf.shape[-1] // 2
        filtered = F.conv2d(replicate_pad(opponent, radius), self.csf, groups=3)
        linear = apply_matrix(XYZ_TO_LINEAR_RGB, ycxcz_to_xyz(filtered)).clamp(0, 1)
        return xyz_to_hunt_lab(apply_matrix(LINEAR_RGB_TO_XYZ, linear))

    def feature_magnitudes(self, opponent: Tensor) -> tuple[Tensor, Tensor]:
        """Edge and point strength of the luminance, each (N, 1, H, W)."""
        luminance = (opponent[:, :1] + 16) / 116
        radius = self.features.shape[-1] // 2
        padded = replicate_pad(luminance, radius)
        along_x = F.conv2d(padded, self.features)
        along_y = F.conv2d(padded, self.features.transpose(-1, -2))
        edges = torch.stack([along_x[:, 0], along_y[:, 0]], dim=1)
        points = torch.stack([along_x[:, 1], along_y[:, 1]], dim=1)
        return vector_length(edges), vector_length(points)

    def redistribute(self, error: Tensor) -> Tensor:
        """Map [0, P_CUTOFF * cmax] linearly to [0, P_TARGET] and the rest to (P_TARGET, 1]."""
        knee = P_CUTOFF * self.cmax
        low = (P_TARGET / knee) * error
        high = P_TARGET + (error - knee) / (self.cmax - knee) * (1 - P_TARGET)
        return torch.where(error < knee, low, high)

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        if sr.shape[1] != 3:
            raise UserError(f"fliploss: needs RGB images, got {sr.shape[1]} channels")
        opponent_sr = xyz_to_ycxcz(apply_matrix(LINEAR_RGB_TO_XYZ, srgb_to_linear(sr.clamp(0, 1))))
        opponent_gt = xyz_to_ycxcz(apply_matrix(LINEAR_RGB_TO_XYZ, srgb_to_linear(gt.clamp(0, 1))))

        color_distance = hyab(
            self.perceived_lab(opponent_sr), self.perceived_lab(opponent_gt), STABILITY_EPS
        )
        color_error = self.redistribute(color_distance**Q_COLOR)

        edges_sr, points_sr = self.feature_magnitudes(opponent_sr)
        edges_gt, points_gt = self.feature_magnitudes(opponent_gt)
        feature_difference = torch.maximum(
            (edges_sr - edges_gt).abs(), (points_sr - points_gt).abs()
        )
        feature_error = (feature_difference.clamp_min(STABILITY_EPS) / math.sqrt(2)) ** Q_FEATURE
        return (color_error ** (1 - feature_error)).mean()


def vector_length(vectors: Tensor) -> Tensor:
    """Length over dim 1 whose gradient is 0, not NaN, at the zero vector."""
    squared = vectors.square().sum(dim=1, keepdim=True)
    nonzero = squared > 0
    return torch.where(nonzero, torch.sqrt(torch.where(nonzero, squared, 1.0)), 0.0)
