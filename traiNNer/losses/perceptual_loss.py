"""Perceptual loss: weighted L1 between VGG19 feature maps of sr and gt."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from traiNNer.losses.fp32 import autocast_disabled
from traiNNer.losses.vgg import load_vgg19_features, vgg19_layer_names
from traiNNer.utils.errors import ConfigError, did_you_mean
from traiNNer.utils.registry import LOSS_REGISTRY

# traiNNer-redux's defaults: conv outputs before their ReLU, deep layers weighted most.
DEFAULT_LAYER_WEIGHTS = {
    "conv1_2": 0.1,
    "conv2_2": 0.1,
    "conv3_4": 1.0,
    "conv4_4": 1.0,
    "conv5_4": 1.0,
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_layer_weights(layer_weights: dict[str, float]) -> None:
    names = vgg19_layer_names()
    if not layer_weights:
        raise ConfigError(
            "perceptualloss: layer_weights must name at least one layer (e.g. conv5_4: 1.0)"
        )
    for name in layer_weights:
        if name not in names:
            raise ConfigError(
                f"perceptualloss: layer_weights: unknown VGG19 layer '{name}'"
                f"{did_you_mean(name, names)} (accepted: {', '.join(names)})"
            )


@LOSS_REGISTRY.register()
class PerceptualLoss(nn.Module):
    """Sum over `layer_weights` of weight * L1(VGG19_layer(sr), VGG19_layer(gt)).

    Layer names follow torchvision's `vgg19().features`: convB_I (before the
    ReLU), reluB_I and poolB. The network is truncated after the deepest layer
    used and frozen; its weights come from `vgg_weights_path` (a torchvision
    VGG19 state dict, .pth or .safetensors), never from the internet. Inputs in
    [0, 1] are ImageNet-normalised unless use_input_norm is false; one-channel
    inputs are repeated to RGB. The feature network runs under the caller's
    autocast; the distances are taken in float32.
    """

    def __init__(
        self,
        *,
        vgg_weights_path: str,
        layer_weights: dict[str, float] | None = None,
        use_input_norm: bool = True,
    ) -> None:
        super().__init__()
        weights = dict(DEFAULT_LAYER_WEIGHTS if layer_weights is None else layer_weights)
        check_layer_weights(weights)
        names = vgg19_layer_names()
        self.taps = {names.index(name): (name, weight) for name, weight in weights.items()}
        self.features = load_vgg19_features(vgg_weights_path, max(self.taps) + 1)
        self.use_input_norm = use_input_norm
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def extract(self, image: Tensor) -> dict[str, Tensor]:
        """Feature maps at the layers named in layer_weights."""
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        if self.use_input_norm:
            image = (image - self.mean) / self.std
        maps: dict[str, Tensor] = {}
        for index, layer in enumerate(self.features):
            image = layer(image)
            if index in self.taps:
                maps[self.taps[index][0]] = image
        return maps

    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        sr_maps = self.extract(sr)
        with torch.no_grad():
            gt_maps = self.extract(gt.detach())
        with autocast_disabled(sr.device):
            distances = [
                weight * F.l1_loss(sr_maps[name].float(), gt_maps[name].float())
                for name, weight in self.taps.values()
            ]
        return torch.stack(distances).sum()
