"""Learned full-reference metrics (LPIPS, DISTS, TOPIQ) on pyiqa's networks, local weights only.

Each network has its own weights file (pyiqa's file name, looked up by default in pyiqa's
cache, `<torch hub dir>/pyiqa/`) and, for LPIPS and DISTS, torchvision's ImageNet backbone
(looked up by default in torchvision's cache, `<torch hub dir>/checkpoints/`). The torch hub
dir is `torch.hub.get_dir()`: `$TORCH_HOME/hub`, by default `~/.cache/torch/hub`, where pyiqa
and torchvision put the files when they download them. Nothing is downloaded here: pyiqa is
asked for empty networks, the files are read with `torch.load(weights_only=True)` or
safetensors, and any download pyiqa or torchvision would still start is refused.

pyiqa is imported only when a network is built, so the rest of traiNNer-auto does not need it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, Protocol, TypeVar
from unittest import mock

import torch
import torchvision
from torch import Tensor, nn

from traiNNer.metrics.preprocess import prepare_pair
from traiNNer.utils.errors import ConfigError, UserError

PYIQA_WEIGHTS_URL = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
TORCHVISION_WEIGHTS_URL = "https://download.pytorch.org/models/"
INSTALL_HINT = "pip install 'traiNNer-auto[iqa]' (or pip install pyiqa)"

# Name of the attribute a learned metric function carries (its `Network`).
NETWORK_ATTRIBUTE = "network"
# The option keys a weights file can be given under (MetricOptions and distsloss).
WEIGHT_KEYS = ("weights_path", "backbone_weights_path")

MetricT = TypeVar("MetricT", bound=Callable[..., float])


def torch_hub_dir() -> Path:
    # Read on each use: TORCH_HOME or torch.hub.set_dir may change it, as for pyiqa.
    return Path(torch.hub.get_dir())


@dataclass(frozen=True)
class WeightFile:
    """One file a network needs: the option key that names it and its usual name and source."""

    key: str
    file_name: str
    holds: str
    from_torchvision: bool = False

    def cache_dir(self) -> Path:
        return torch_hub_dir() / ("checkpoints" if self.from_torchvision else "pyiqa")

    def url(self) -> str:
        base = TORCHVISION_WEIGHTS_URL if self.from_torchvision else PYIQA_WEIGHTS_URL
        return base + self.file_name

    def resolve(self, given: str | None, where: str, error: type[UserError]) -> str:
        """The file to read: `given`, or the usual name in the library's cache; must exist."""
        option = f"{where}.{self.key}"
        wanted = f"{self.file_name} ({self.holds}, from {self.url()})"
        if given is not None:
            path = Path(given).expanduser()
            if not path.is_file():
                raise error(f"{option}: '{given}' does not exist; it should be {wanted}")
            return str(path.absolute())
        path = self.cache_dir() / self.file_name
        if not path.is_file():
            raise error(
                f"{option}: not set, and {path} does not exist; put {wanted} there or set "
                f"{option} to its path (weights are never downloaded)"
            )
        return str(path)


@dataclass(frozen=True)
class Network:
    """A learned metric's network: its weight files and how it is built from them."""

    metric: str
    files: tuple[WeightFile, ...]
    build: Callable[[Mapping[str, str]], nn.Module]
    # Smallest side (after crop_border) the network's pooling can take.
    min_size: int = 1

    def resolve(
        self, given: Mapping[str, str | None], where: str, error: type[UserError]
    ) -> dict[str, str]:
        return {file.key: file.resolve(given.get(file.key), where, error) for file in self.files}

    def score(
        self,
        sr: Tensor,
        gt: Tensor,
        crop_border: int,
        test_y_channel: bool,
        given: Mapping[str, str | None],
    ) -> float:
        """The network's score of sr against gt, after 8-bit quantisation and cropping."""
        if test_y_channel:
            raise UserError(
                f"{self.metric}: test_y_channel is not supported (the network compares RGB)"
            )
        sr_255, gt_255 = prepare_pair(self.metric, sr, gt, crop_border, test_y_channel=False)
        height, width = sr_255.shape[-2:]
        if min(height, width) < self.min_size:
            raise UserError(
                f"{self.metric}: needs images of at least {self.min_size}x{self.min_size} px "
                f"after crop_border, got {height}x{width}"
            )
        paths = self.resolve(given, self.metric, UserError)
        network = cached_network(self, tuple(sorted(paths.items())), sr_255.device)
        x, y = (network_input(img) for img in (sr_255, gt_255))
        with torch.inference_mode(), metric_context(x.device):
            return float(network(x, y).item())


def learned(network: Network) -> Callable[[MetricT], MetricT]:
    """Mark a metric function as computed by `network` (read by `check_metric_entry`)."""

    def decorator(metric: MetricT) -> MetricT:
        setattr(metric, NETWORK_ATTRIBUTE, network)
        return metric

    return decorator


def network_of(metric: Callable[..., Any]) -> Network | None:
    return getattr(metric, NETWORK_ATTRIBUTE, None)


def network_input(img_255: Tensor) -> Tensor:
    """1x3xHxW float32 in [0, 1] from a CHW 0-255 image; grey is repeated to RGB."""
    img = (img_255 / 255).float()[None]
    return img.expand(-1, 3, -1, -1) if img.shape[1] == 1 else img


@contextlib.contextmanager
def metric_context(device: torch.device) -> Iterator[None]:
    """float32 without autocast, and deterministic cuDNN so a score repeats exactly."""
    from traiNNer.losses.fp32 import autocast_disabled  # here: losses import this module

    cudnn = torch.backends.cudnn
    with (
        autocast_disabled(device),
        cudnn.flags(enabled=cudnn.enabled, benchmark=False, deterministic=True),
    ):
        yield


@functools.lru_cache(maxsize=8)
def cached_network(
    network: Network, paths: tuple[tuple[str, str], ...], device: torch.device
) -> nn.Module:
    """Built once per process, weight files and device (validation calls it per image)."""
    return network.build(dict(paths)).to(device)


# ------------------------------------------------------------------ option checks
class MetricEntry(Protocol):
    """The parts of MetricOptions checked here (not imported: config imports metrics)."""

    type: str
    test_y_channel: bool
    weights_path: str | None
    backbone_weights_path: str | None


def check_metric_entry(
    where: str, entry: MetricEntry, metric: Callable[..., Any], will_run: bool
) -> None:
    """Weight keys only where the metric has them; when it will run, pyiqa and its files.

    The resolved paths are written back, so the run uses (and logs) exactly those files.
    """
    network = network_of(metric)
    given = {key: getattr(entry, key) for key in WEIGHT_KEYS}
    accepted = {file.key for file in network.files} if network is not None else set()
    for key, value in given.items():
        if value is not None and key not in accepted:
            reason = (
                "uses no network weights"
                if network is None
                else f"has no {key} (its weights_path holds the whole network)"
            )
            raise ConfigError(f"{where}.{key}: {entry.type} {reason}; remove it")
    if network is None or not will_run:
        return
    if entry.test_y_channel:
        raise ConfigError(
            f"{where}.test_y_channel: {entry.type} compares RGB images with a network "
            "trained on RGB; remove it"
        )
    require_pyiqa(f"{where}.type", entry.type)
    resolved = network.resolve(given, where, ConfigError)
    entry.weights_path = resolved.get("weights_path")
    entry.backbone_weights_path = resolved.get("backbone_weights_path")


def require_pyiqa(option: str, user: str) -> None:
    if importlib.util.find_spec("pyiqa") is None:
        raise ConfigError(f"{option}: {user} needs the pyiqa package; {INSTALL_HINT}")


# ------------------------------------------------------------------ reading weights
def read_weights(path: str, file: WeightFile) -> dict[str, Tensor]:
    """The tensors of a .pth / .pt / .safetensors file, unwrapped from `params` or
    `state_dict` and without DataParallel's `module.` prefix. Never unpickles code."""
    wanted = f"it should be {file.file_name} ({file.holds}, from {file.url()})"
    try:
        if path.lower().endswith(".safetensors"):
            from safetensors.torch import load_file

            loaded: Any = load_file(path)
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"{file.key} '{path}' could not be read ({reason}); {wanted}") from None
    for wrapper in ("params", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise UserError(f"{file.key} '{path}' does not hold a state dict; {wanted}")
    return {str(k).removeprefix("module."): v for k, v in loaded.items()}


def load_keys(
    module: nn.Module,
    state: Mapping[str, Tensor],
    keys: list[str],
    path: str,
    file: WeightFile,
    exact: bool = False,
) -> None:
    """Assign `keys` of `module`'s state dict from `state`; all must be there with their shapes.

    `exact`: the file is the whole network, so it may hold no key the module lacks.
    """
    wanted = f"it should be {file.file_name} ({file.holds}, from {file.url()})"
    missing = [key for key in keys if key not in state]
    extra = sorted(set(state) - set(module.state_dict())) if exact else []
    for problem, names in (("missing", missing), ("unexpected", extra)):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            raise UserError(
                f"{file.key} '{path}' is not {file.holds} ({problem} {', '.join(names[:3])}"
                f"{more}); {wanted}"
            )
    try:
        module.load_state_dict({key: state[key] for key in keys}, strict=False, assign=True)
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1].strip()
        raise UserError(
            f"{file.key} '{path}' does not match {file.holds} ({detail}); {wanted}"
        ) from None


def fill_backbone(
    stages: list[nn.Module], state: Mapping[str, Tensor], path: str, file: WeightFile
) -> None:
    """Assign torchvision's `features.<i>` convolutions to pyiqa's stages, whose modules keep
    torchvision's index i as their name. A full state dict or `features` alone is accepted."""
    features = {
        k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
    }
    features = features or dict(state)
    for stage in stages:
        for index, layer in stage.named_children():
            if isinstance(layer, nn.Conv2d):
                part = {name: features.get(f"{index}.{name}") for name in ("weight", "bias")}
                missing = [f"features.{index}.{name}" for name, v in part.items() if v is None]
                if missing:
                    raise UserError(
                        f"{file.key} '{path}' is not {file.holds} (missing {missing[0]}); "
                        f"it should be {file.file_name} (from {file.url()})"
                    )
                load_keys(
                    layer, {k: v for k, v in part.items() if v is not None}, list(part), path, file
                )


def finish(model: nn.Module, what: str) -> nn.Module:
    # A tensor left on the meta device would mean pyiqa's layout changed under us.
    empty = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if empty:
        raise UserError(
            f"{what}: pyiqa's network has weights this loader does not fill ({empty[0]})"
        )
    return model.requires_grad_(False).eval()


# ------------------------------------------------------------------ no downloads
def refuse_download(url: str, *_: object, **__: object) -> NoReturn:
    raise UserError(
        f"a weights download was attempted ({url}); traiNNer-auto reads weights from local "
        "files only: set the metric's or loss's weights_path / backbone_weights_path"
    )


@contextlib.contextmanager
def downloads_refused() -> Iterator[None]:
    """Any download torch.hub (torchvision) or pyiqa would start becomes a UserError."""
    download_util = importlib.import_module("pyiqa.utils.download_util")
    with (
        mock.patch.object(torch.hub, "download_url_to_file", refuse_download),
        mock.patch.object(download_util, "download_url_to_file", refuse_download),
    ):
        yield


class EmptyTorchvision:
    """Stands in for `torchvision.models` inside pyiqa's LPIPS and DISTS modules.

    Those always ask torchvision for ImageNet weights, which downloads them; here the
    backbone is built empty on the meta device and filled from the local file after.
    """

    @staticmethod
    def alexnet(*_: object, **__: object) -> nn.Module:
        with torch.device("meta"):
            return torchvision.models.alexnet(weights=None)

    @staticmethod
    def vgg16(*_: object, **__: object) -> nn.Module:
        with torch.device("meta"):
            return torchvision.models.vgg16(weights=None)


def pyiqa_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"pyiqa.archs.{name}")
    except ImportError as error:
        raise UserError(f"pyiqa could not be imported ({error}); {INSTALL_HINT}") from None


@contextlib.contextmanager
def empty_backbone(arch: ModuleType) -> Iterator[None]:
    with downloads_refused(), mock.patch.object(arch, "models", EmptyTorchvision):
        yield


# ------------------------------------------------------------------ the networks
LPIPS_FILES = (
    WeightFile("weights_path", "LPIPS_v0.1_alex-df73285e.pth", "LPIPS v0.1 AlexNet linear layers"),
    WeightFile(
        "backbone_weights_path",
        "alexnet-owt-7be5be79.pth",
        "torchvision's ImageNet AlexNet",
        from_torchvision=True,
    ),
)
DISTS_FILES = (
    WeightFile("weights_path", "DISTS_weights-f5e65c96.pth", "DISTS alpha/beta weights"),
    WeightFile(
        "backbone_weights_path",
        "vgg16-397923af.pth",
        "torchvision's ImageNet VGG16",
        from_torchvision=True,
    ),
)
TOPIQ_FILES = (
    WeightFile(
        "weights_path",
        "cfanet_fr_kadid_res50-2c4cc61d.pth",
        "the TOPIQ full-reference network (CFANet, ResNet50, KADID-10k)",
    ),
)


def build_lpips(paths: Mapping[str, str]) -> nn.Module:
    """pyiqa's LPIPS v0.1 on AlexNet (pyiqa's and traiNNer-redux's default `lpips`)."""
    arch = pyiqa_module("lpips_arch")
    with empty_backbone(arch):
        model = arch.LPIPS(pretrained=False, net="alex", version="0.1")
    backbone, lins = LPIPS_FILES[1], LPIPS_FILES[0]
    stages = list(model.net.children())
    fill_backbone(
        stages, read_weights(paths[backbone.key], backbone), paths[backbone.key], backbone
    )
    # `lins` is a ModuleList over lin0..lin4: the file names them once, as lin<i>.
    keys = [k for k in model.state_dict() if k.startswith("lin") and not k.startswith("lins.")]
    load_keys(model, read_weights(paths[lins.key], lins), keys, paths[lins.key], lins)
    return finish(model, "calculate_lpips")


def build_dists(paths: Mapping[str, str]) -> nn.Module:
    """pyiqa's DISTS: VGG16 features with L2 pooling and learned alpha/beta."""
    arch = pyiqa_module("dists_arch")
    with empty_backbone(arch):
        model = arch.DISTS(pretrained=False)
    own, backbone = DISTS_FILES
    stages = [model.stage1, model.stage2, model.stage3, model.stage4, model.stage5]
    fill_backbone(
        stages, read_weights(paths[backbone.key], backbone), paths[backbone.key], backbone
    )
    if own.key in paths:  # distsloss with load_weights: false keeps pyiqa's random init
        load_keys(model, read_weights(paths[own.key], own), ["alpha", "beta"], paths[own.key], own)
    return finish(model, "calculate_dists")


def build_topiq(paths: Mapping[str, str]) -> nn.Module:
    """pyiqa's `topiq_fr`: CFANet on ResNet50 trained on KADID-10k (the file holds it all)."""
    arch = pyiqa_module("topiq_arch")
    with downloads_refused():
        model = arch.CFANet(
            semantic_model_name="resnet50",
            model_name="cfanet_fr_kadid_res50",
            use_ref=True,
            backbone_pretrain=False,
            pretrained=False,
        )
    (own,) = TOPIQ_FILES
    # BatchNorm's step counters are not used in eval mode; a file without them is fine.
    keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    load_keys(model, read_weights(paths[own.key], own), keys, paths[own.key], own, exact=True)
    return finish(model, "calculate_topiq")


LPIPS = Network("calculate_lpips", LPIPS_FILES, build_lpips, min_size=31)
DISTS = Network("calculate_dists", DISTS_FILES, build_dists)
TOPIQ = Network("calculate_topiq", TOPIQ_FILES, build_topiq)
