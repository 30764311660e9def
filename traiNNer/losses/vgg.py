"""VGG19 feature extractor loaded from a local torchvision state dict (never downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from traiNNer.utils.errors import ConfigError, UserError

# Configuration "E" of Simonyan & Zisserman (2015): (channels, convolutions) per block,
# each block ending in a 2x2 max-pool.
VGG19_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))
# torchvision's ImageNet VGG19 (IMAGENET1K_V1) weights file.
VGG19_WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
WEIGHTS_HINT = (
    f"download torchvision's ImageNet VGG19 weights ({VGG19_WEIGHTS_FILE} from "
    f"https://download.pytorch.org/models/{VGG19_WEIGHTS_FILE}, or save "
    "torchvision.models.vgg19(weights='IMAGENET1K_V1').state_dict()) and set "
    "vgg_weights_path to that .pth or .safetensors file"
)


def check_weights_file(weights_path: str | None, key: str) -> None:
    """At option validation: `key` (e.g. train.losses[2].vgg_weights_path) names a weights file.

    Checks that the file is there and has a readable extension; its contents are
    read when the loss is built.
    """
    if weights_path is None:
        raise ConfigError(f"{key}: required key is missing; {WEIGHTS_HINT}")
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: '{weights_path}' does not exist; {WEIGHTS_HINT}")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ConfigError(f"{key}: '{weights_path}' must end in .pth, .pt or .safetensors")


def vgg19_layer_names() -> list[str]:
    """Names of torchvision's `vgg19().features` modules, in order: conv1_1, relu1_1, ..., pool5."""
    names: list[str] = []
    for block, (_, convolutions) in enumerate(VGG19_BLOCKS, start=1):
        for index in range(1, convolutions + 1):
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
        names.append(f"pool{block}")
    return names


def vgg19_layer_channels(name: str) -> int:
    """Channels of the feature map a VGG19 layer outputs (convB_I, reluB_I, poolB)."""
    block = int(name.removeprefix("conv").removeprefix("relu").removeprefix("pool")[0])
    return VGG19_BLOCKS[block - 1][0]


def build_vgg19_features(num_layers: int) -> nn.Sequential:
    """The first `num_layers` modules of VGG19's `features`, with torchvision's indices.

    Built on the meta device: the weights are assigned from a file right after.
    ReLUs are not in-place so a captured conv output is not overwritten.
    """
    layers: list[nn.Module] = []
    in_channels = 3
    with torch.device("meta"):
        for out_channels, convolutions in VGG19_BLOCKS:
            for _ in range(convolutions):
                layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()]
                in_channels = out_channels
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers[:num_layers])


def read_state_dict(path: Path) -> dict[str, Tensor]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if suffix in (".pth", ".pt"):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(loaded, dict) and all(isinstance(v, Tensor) for v in loaded.values()):
                return loaded
            raise UserError(f"vgg_weights_path '{path}' does not hold a state dict; {WEIGHTS_HINT}")
    except UserError:
        raise
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(
            f"vgg_weights_path '{path}' could not be read ({reason}); {WEIGHTS_HINT}"
        ) from None
    raise UserError(
        f"vgg_weights_path '{path}' must end in .pth, .pt or .safetensors; {WEIGHTS_HINT}"
    )


def load_vgg19_features(weights_path: str, num_layers: int) -> nn.Sequential:
    """Frozen float32 VGG19 `features[:num_layers]` with weights from `weights_path`.

    Accepts the full torchvision state dict (`features.*` keys; the classifier is
    ignored) or the state dict of `vgg19().features` alone.
    """
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise UserError(f"vgg_weights_path '{weights_path}' does not exist; {WEIGHTS_HINT}")
    state = read_state_dict(path)
    if any(key.startswith("features.") for key in state):
        state = {
            k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
        }

    features = build_vgg19_features(num_layers)
    needed = list(features.state_dict())
    missing = [key for key in needed if key not in state]
    if missing:
        shown = ", ".join("features." + key for key in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UserError(
            f"vgg_weights_path '{weights_path}' is not a VGG19 state dict "
            f"(missing {shown}{more}); {WEIGHTS_HINT}"
        )
    try:
        features.load_state_dict({key: state[key] for key in needed}, assign=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1].strip()
        raise UserError(
            f"vgg_weights_path '{weights_path}' does not match VGG19 ({first_line}); {WEIGHTS_HINT}"
        ) from None
    return features.float().requires_grad_(False).eval()
