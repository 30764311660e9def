"""Perceptual loss: distances between VGG19 feature maps of sr and gt, with
traiNNer-redux's criteria.

`criterion` picks a distance term, a distribution term, or both:
- charbonnier / l1: the distance between feature maps, on conv layers by default;
- pd (projected distribution): each feature channel is normalised to sum 1 and
  flattened; the L1 distance between the two cumulative sums, summed over
  positions and averaged over images and channels;
- fd (feature/frequency distribution): the amplitude and phase spectra (2-D FFT)
  of the feature maps are projected by `num_proj_fd` fixed random unit 5x5
  filters (stride `stride_fd`); the projections' values are sorted and compared
  by mean absolute difference (a sliced Wasserstein distance), amplitude plus
  `phase_weight_fd` times phase; on relu layers by default;
- pd+l1 / fd+l1: L1 on the conv layers plus the distribution term on the relu
  layers.
Per layer: weight * ((1 - alpha) * distance + alpha * w_lambda * distribution),
summed and floored at clip_min. `alpha` holds one number per layer, shallowest
first; by default 0 on conv layers and 1 on the others (only the term the
criterion has where it has one).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from traiNNer.config import compat
from traiNNer.losses.fp32 import autocast_disabled
from traiNNer.losses.pixel_losses import pointwise_distance
from traiNNer.losses.vgg import (
    check_weights_file,
    load_vgg19_features,
    vgg19_layer_channels,
    vgg19_layer_names,
)
from traiNNer.utils.errors import ConfigError, did_you_mean
from traiNNer.utils.registry import LOSS_REGISTRY

PerceptualCriterion = Literal["charbonnier", "l1", "pd+l1", "fd+l1", "pd", "fd"]
# traiNNer-redux's default layers: conv outputs (before their ReLU) for the distance
# term, the ReLUs for the distribution term; deep layers weighted most.
CONV_LAYER_WEIGHTS = {
    "conv1_2": 0.1,
    "conv2_2": 0.1,
    "conv3_4": 1.0,
    "conv4_4": 1.0,
    "conv5_4": 1.0,
}
RELU_LAYER_WEIGHTS = {name.replace("conv", "relu"): w for name, w in CONV_LAYER_WEIGHTS.items()}
# Kept for callers of the earlier single-criterion loss.
DEFAULT_LAYER_WEIGHTS = CONV_LAYER_WEIGHTS
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROJECTION_SIZE = 5
# Fixed so every run (and every DDP rank) draws the same fd projections.
PROJECTION_SEED = 0
PD_EPS = 1e-14


def distance_term(criterion: PerceptualCriterion) -> Literal["charbonnier", "l1"] | None:
    if criterion == "charbonnier":
        return "charbonnier"
    return "l1" if criterion.endswith("l1") else None


def distribution_term(criterion: PerceptualCriterion) -> Literal["pd", "fd"] | None:
    head = criterion.split("+")[0]
    return head if head in ("pd", "fd") else None


def default_layer_weights(criterion: PerceptualCriterion) -> dict[str, float]:
    weights: dict[str, float] = {}
    if distance_term(criterion):
        weights |= CONV_LAYER_WEIGHTS
    if distribution_term(criterion):
        weights |= RELU_LAYER_WEIGHTS
    return weights


@dataclass(frozen=True)
class Tap:
    """One VGG19 layer the loss reads, with its weight and distance/distribution mix."""

    name: str
    index: int
    weight: float
    alpha: float


def check_layer_weights(layer_weights: dict[str, float], where: str = "perceptualloss: ") -> None:
    names = vgg19_layer_names()
    if not layer_weights:
        raise ConfigError(f"{where}layer_weights: must name at least one layer (e.g. conv5_4: 1.0)")
    for name in layer_weights:
        if name not in names:
            raise ConfigError(
                f"{where}layer_weights: unknown VGG19 layer '{name}'"
                f"{did_you_mean(name, names)} (accepted: {', '.join(names)})"
            )


def plan_taps(
    criterion: PerceptualCriterion,
    layer_weights: dict[str, float] | None,
    alpha: list[float] | None,
    where: str = "perceptualloss: ",
) -> list[Tap]:
    """The layers to read, shallowest first; raises ConfigError naming `where` + the key."""
    weights = default_layer_weights(criterion) if layer_weights is None else dict(layer_weights)
    check_layer_weights(weights, where)
    names = vgg19_layer_names()
    ordered = sorted(weights, key=names.index)
    has_distance = distance_term(criterion) is not None
    has_distribution = distribution_term(criterion) is not None
    if alpha is None:
        if not has_distribution:
            mix = [0.0] * len(ordered)
        elif not has_distance:
            mix = [1.0] * len(ordered)
        else:
            mix = [0.0 if name.startswith("conv") else 1.0 for name in ordered]
    else:
        mix = list(alpha)
        if len(mix) != len(ordered):
            raise ConfigError(
                f"{where}alpha: needs one number per layer of layer_weights "
                f"({len(ordered)}: {', '.join(ordered)}), got {len(mix)}"
            )
        if any(not 0 <= a <= 1 for a in mix):
            raise ConfigError(f"{where}alpha: each number must be in [0, 1], got {mix}")
        if not has_distance and any(a < 1 for a in mix):
            raise ConfigError(
                f"{where}alpha: criterion '{criterion}' has no distance term, so every "
                "alpha must be 1 (use pd+l1 or fd+l1 to mix)"
            )
        if not has_distribution and any(a > 0 for a in mix):
            raise ConfigError(
                f"{where}alpha: criterion '{criterion}' has no distribution term, so every "
                "alpha must be 0 (use pd+l1 or fd+l1 to mix)"
            )
    return [
        Tap(name, names.index(name), float(weights[name]), a)
        for name, a in zip(ordered, mix, strict=True)
    ]


def check_settings(
    *,
    criterion: PerceptualCriterion,
    layer_weights: dict[str, float] | None,
    alpha: list[float] | None,
    w_lambda: float,
    num_proj_fd: int,
    phase_weight_fd: float,
    stride_fd: int,
    antialiased: bool,
    where: str,
) -> list[Tap]:
    if antialiased:
        raise ConfigError(
            f"{where}antialiased: the antialiased VGG19 (antialiased-cnns) is not available "
            "in traiNNer-auto; set it to false"
        )
    for key, value in (("w_lambda", w_lambda), ("phase_weight_fd", phase_weight_fd)):
        if not value >= 0:
            raise ConfigError(f"{where}{key}: must be >= 0, got {value}")
    for key, count in (("num_proj_fd", num_proj_fd), ("stride_fd", stride_fd)):
        if count < 1:
            raise ConfigError(f"{where}{key}: must be >= 1, got {count}")
    return plan_taps(criterion, layer_weights, alpha, where)


def random_projections(channels: int, count: int, generator: torch.Generator) -> Tensor:
    """`count` random 5x5 filters over `channels`, each of unit L2 norm."""
    filters = torch.randn(count, channels, PROJECTION_SIZE, PROJECTION_SIZE, generator=generator)
    return filters / filters.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def fit_projections(projections: Tensor, height: int, width: int) -> Tensor:
    """Crop the filters' centre to a map smaller than them, renormalised to unit norm."""
    size = projections.shape[-1]
    if height >= size and width >= size:
        return projections
    top, left = (size - min(height, size)) // 2, (size - min(width, size)) // 2
    cropped = projections[..., top : top + min(height, size), left : left + min(width, size)]
    return cropped / cropped.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def sliced_distance(a: Tensor, b: Tensor, projections: Tensor, stride: int) -> Tensor:
    """Per image: mean |sorted(project(a)) - sorted(project(b))| over projections and positions."""
    filters = fit_projections(projections, *a.shape[-2:])
    projected_a = F.conv2d(a, filters, stride=stride).flatten(2)
    projected_b = F.conv2d(b, filters, stride=stride).flatten(2)
    sorted_a = torch.sort(projected_a, dim=-1).values
    sorted_b = torch.sort(projected_b, dim=-1).values
    return (sorted_a - sorted_b).abs().mean(dim=(1, 2))


def frequency_distribution_distance(
    a: Tensor, b: Tensor, projections: Tensor, stride: int, phase_weight: float
) -> Tensor:
    spectrum_a, spectrum_b = torch.fft.fft2(a), torch.fft.fft2(b)
    amplitude = sliced_distance(spectrum_a.abs(), spectrum_b.abs(), projections, stride)
    phase = sliced_distance(spectrum_a.angle(), spectrum_b.angle(), projections, stride)
    return (amplitude + phase_weight * phase).mean()


def projected_distribution_distance(a: Tensor, b: Tensor) -> Tensor:
    """L1 between the cumulative sums of each channel normalised to sum 1 (raster order)."""

    def cdf(maps: Tensor) -> Tensor:
        normalised = maps / (maps.sum(dim=(2, 3), keepdim=True) + PD_EPS)
        return torch.cumsum(normalised.flatten(2), dim=-1)

    return (cdf(a) - cdf(b)).abs().sum(dim=-1).mean()


@LOSS_REGISTRY.register()
class PerceptualLoss(nn.Module):
    """VGG19 feature distance (charbonnier, l1) and/or distribution (pd, fd) loss; needs vgg_weights_path.

    Layer names follow torchvision's `vgg19().features`: convB_I (before the
    ReLU), reluB_I and poolB. The network is truncated after the deepest layer
    used and frozen; its first convolution pads by replicating the border (as
    traiNNer-redux). Its weights come from `vgg_weights_path` (torchvision's
    vgg19-dcbb9e9d.pth state dict, .pth or .safetensors), never from the
    internet; it is required while the loss is on. Inputs in [0, 1] (or [-1, 1]
    with range_norm) are ImageNet-normalised unless use_input_norm is false;
    one-channel inputs are repeated to RGB. The network runs under the caller's
    autocast; the distances are taken in float32. verbose_logging (per-layer
    terms in upstream's log) is accepted and ignored: the loss logs one value.
    """

    def __init__(
        self,
        *,
        vgg_weights_path: str | None = None,
        layer_weights: dict[str, float] | None = None,
        criterion: PerceptualCriterion = "charbonnier",
        w_lambda: float = 0.01,
        alpha: list[float] | None = None,
        num_proj_fd: int = 256,
        phase_weight_fd: float = 1.0,
        stride_fd: int = 1,
        clip_min: float = 0,
        antialiased: bool = False,
        verbose_logging: bool = False,
        use_input_norm: bool = True,
        range_norm: bool = False,
    ) -> None:
        super().__init__()
        self.taps = check_settings(
            criterion=criterion,
            layer_weights=layer_weights,
            alpha=alpha,
            w_lambda=w_lambda,
            num_proj_fd=num_proj_fd,
            phase_weight_fd=phase_weight_fd,
            stride_fd=stride_fd,
            antialiased=antialiased,
            where="perceptualloss: ",
        )
        check_weights_file(vgg_weights_path, "perceptualloss: vgg_weights_path")
        assert vgg_weights_path is not None
        self.distance: Literal["charbonnier", "l1"] | None = distance_term(criterion)
        self.distribution: Literal["pd", "fd"] | None = distribution_term(criterion)
        self.w_lambda = w_lambda
        self.phase_weight_fd = phase_weight_fd
        self.stride_fd = stride_fd
        self.clip_min = clip_min
        self.use_input_norm = use_input_norm
        self.range_norm = range_norm

        self.features = load_vgg19_features(vgg_weights_path, self.taps[-1].index + 1)
        first = self.features[0]
        assert isinstance(first, nn.Conv2d)
        first.padding_mode = "replicate"
        self.by_index = {tap.index: tap for tap in self.taps}

        if self.distribution == "fd":
            generator = torch.Generator().manual_seed(PROJECTION_SEED)
            for tap in self.taps:
                if tap.alpha > 0:
                    filters = random_projections(
                        vgg19_layer_channels(tap.name), num_proj_fd, generator
                    )
                    self.register_buffer(f"projections_{tap.name}", filters, persistent=False)
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def check_options(cls, kwargs: dict[str, Any], path: str) -> None:
        """At option validation, while the loss is on: the settings and the weights file."""
        defaults = {key: p.default for key, p in inspect.signature(cls).parameters.items()}
        settings = {**defaults, **kwargs}
        check_settings(
            criterion=settings["criterion"],
            layer_weights=settings["layer_weights"],
            alpha=settings["alpha"],
            w_lambda=settings["w_lambda"],
            num_proj_fd=settings["num_proj_fd"],
            phase_weight_fd=settings["phase_weight_fd"],
            stride_fd=settings["stride_fd"],
            antialiased=settings["antialiased"],
            where=f"{path}.",
        )
        check_weights_file(settings["vgg_weights_path"], f"{path}.vgg_weights_path")
        if settings["verbose_logging"]:
            compat.note(f"{path}.verbose_logging: ignored (the loss is logged as one value)")

    def extract(self, image: Tensor) -> dict[str, Tensor]:
        """Feature maps at the layers named in layer_weights."""
        if self.range_norm:
            image = (image + 1) / 2
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        if self.use_input_norm:
            image = (image - self.mean) / self.std
        maps: dict[str, Tensor] = {}
        for index, layer in enumerate(self.features):
            image = layer(image)
            if index in self.by_index:
                maps[self.by_index[index].name] = image
        return maps

    def layer_term(self, tap: Tap, sr_map: Tensor, gt_map: Tensor) -> Tensor:
        term = sr_map.new_zeros(())
        if tap.alpha < 1:
            assert self.distance is not None
            term = term + (1 - tap.alpha) * pointwise_distance(self.distance, sr_map, gt_map).mean()
        if tap.alpha > 0:
            if self.distribution == "pd":
                spread = projected_distribution_distance(sr_map, gt_map)
            else:
                spread = frequency_distribution_distance(
                    sr_map,
                    gt_map,
                    self.get_buffer(f"projections_{tap.name}"),
                    self.stride_fd,
                    self.phase_weight_fd,
                )
            term = term + tap.alpha * self.w_lambda * spread
        return tap.weight * term

    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        sr_maps = self.extract(sr)
        with torch.no_grad():
            gt_maps = self.extract(gt.detach())
        with autocast_disabled(sr.device):
            terms = [
                self.layer_term(tap, sr_maps[tap.name].float(), gt_maps[tap.name].float())
                for tap in self.taps
            ]
            return torch.stack(terms).sum().clamp_min(self.clip_min)
