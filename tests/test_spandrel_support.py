"""ParagonSR2 through spandrel's loader: detection, hyperparameters, same outputs, no
interference with spandrel's own architectures, and the contrib/spandrel port."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import spandrel
import torch
from safetensors.torch import save_file
from spandrel import ArchSupport, ImageModelDescriptor
from torch import nn

import traiNNer.archs  # noqa: F401 - fills ARCH_REGISTRY
from traiNNer.archs.paragonsr2 import (
    ALPHA_TAG,
    SUPPORTED_SCALES,
    VARIANTS,
    ParagonSR2,
    alpha_from_tag,
)
from traiNNer.archs.spandrel_support import (
    ARCH_ID,
    ParagonSR2Arch,
    detect,
    read_hyperparameters,
    register,
)
from traiNNer.utils.checkpoint import network_metadata, save_network
from traiNNer.utils.registry import ARCH_REGISTRY

CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "spandrel" / "ParagonSR2"
# The name it has inside spandrel, so its relative imports (`...__helpers`) resolve.
CONTRIB_MODULE = "spandrel.architectures.ParagonSR2"

# Small builds of spandrel-native architectures -> the id spandrel must detect.
NATIVE: dict[str, tuple[str, dict[str, Any]]] = {
    "compact": ("Compact", {"num_feat": 8, "num_conv": 2}),
    "span": ("SPAN", {"feature_channels": 8}),
    "esrgan": ("ESRGAN", {"num_filters": 8, "num_blocks": 1}),
    "realplksr": ("PLKSR", {"dim": 16, "n_blocks": 1, "kernel_size": 5}),
    "safmn": ("SAFMN", {"dim": 8, "n_blocks": 1}),
    "omnisr": ("OmniSR", {"num_feat": 16, "res_num": 1}),
    "mosr": ("MoSR", {"n_block": 1, "dim": 16}),
    "dat_light": ("DAT", {"embed_dim": 16, "depth": (2,), "num_heads": (2,)}),
}


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[ArchSupport]:
    """register() into spandrel's MAIN_REGISTRY, put back as it was afterwards."""
    saved = spandrel.MAIN_REGISTRY.copy()
    yield register()
    # spandrel has no way to remove an entry; restore its copy-on-write state instead.
    vars(spandrel.MAIN_REGISTRY).update(vars(saved))


@pytest.fixture(scope="module")
def contrib() -> Iterator[ModuleType]:
    """contrib/spandrel/ParagonSR2 imported by path, as spandrel.architectures.ParagonSR2."""
    spec = importlib.util.spec_from_file_location(
        CONTRIB_MODULE, CONTRIB / "__init__.py", submodule_search_locations=[str(CONTRIB)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[CONTRIB_MODULE] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        for name in [n for n in sys.modules if n.startswith(CONTRIB_MODULE)]:
            del sys.modules[name]


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every weight random (not the near-zero init of LayerScale and detail_gain), so a
    wrongly read hyperparameter shows in the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model.eval()


def _paragon(scale: int, **hyperparameters: Any) -> ParagonSR2:
    model = ParagonSR2(scale=scale, **hyperparameters)
    _randomised(model)
    return model


def _image(seed: int = 1, size: tuple[int, int] = (11, 9)) -> torch.Tensor:
    return torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed))


def _assert_same_output(loaded: nn.Module, original: nn.Module) -> None:
    x = _image()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x.clone()), original(x.clone()), rtol=0, atol=1e-6)


def _expected_hyperparameters(model_kwargs: dict[str, Any], scale: int) -> dict[str, Any]:
    return {
        "scale": scale,
        "num_feat": model_kwargs["num_feat"],
        "num_groups": model_kwargs["num_groups"],
        "num_blocks": model_kwargs["num_blocks"],
        "channel_modulation": model_kwargs["channel_modulation"],
    }


# ------------------------------------------------------------ every variant, scale


@pytest.mark.parametrize("scale", SUPPORTED_SCALES)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_saved_variant_loads_in_spandrel_as_itself(name: str, scale: int, tmp_path: Path) -> None:
    kwargs = asdict(VARIANTS[name])
    model = _paragon(scale, **kwargs)
    metadata = network_metadata(name, scale, {})
    for fmt in ("safetensors", "pth"):
        path = save_network(model.state_dict(), tmp_path / f"{name}_{scale}x", metadata, fmt)
        descriptor = spandrel.ModelLoader().load_from_file(path)

        assert isinstance(descriptor, ImageModelDescriptor)
        assert descriptor.architecture.id == ARCH_ID
        assert isinstance(descriptor.model, ParagonSR2)
        assert descriptor.scale == scale
        assert descriptor.purpose == ("SR" if scale > 1 else "Restoration")
        assert (descriptor.input_channels, descriptor.output_channels) == (3, 3)
        assert descriptor.supports_half and descriptor.supports_bfloat16
        assert descriptor.size_requirements.none
        # 'paragonsr2' is the xs preset under its generic name.
        assert descriptor.tags[0] == name.removeprefix("paragonsr2_").replace("paragonsr2", "xs")
        found = read_hyperparameters(descriptor.model.state_dict())
        assert {k: found[k] for k in _expected_hyperparameters(kwargs, scale)} == (
            _expected_hyperparameters(kwargs, scale)
        )
        assert found["ffn_expansion"] == kwargs["ffn_expansion"]
        _assert_same_output(descriptor.model, model)
        # spandrel's call API (padding, clamping) on top of the same module.
        x = _image()
        with torch.no_grad():
            torch.testing.assert_close(descriptor(x), model(x).clamp(0, 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("scale", "overrides"),
    [
        # A ratio that does not land on an integer: 12 * 2.7 builds 32 channels.
        (2, {"num_feat": 12, "ffn_expansion": 2.7}),
        (3, {"num_feat": 20, "num_groups": 3, "num_blocks": 1, "ffn_expansion": 1.5}),
        (2, {"channel_modulation": True, "modulation_reduction": 8}),
        (4, {"num_feat": 16, "channel_modulation": True, "modulation_reduction": 64}),
        (2, {"upsampler_alpha": 0.0}),
        (3, {"upsampler_alpha": 0.7, "num_feat": 16}),
        (1, {"upsampler_alpha": -0.25, "channel_modulation": True}),
    ],
)
def test_overridden_hyperparameters_rebuild_the_same_network(
    scale: int, overrides: dict[str, Any], tmp_path: Path
) -> None:
    model = _paragon(scale, **overrides)
    path = save_network(model.state_dict(), tmp_path / "net", {}, "safetensors")
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert descriptor.architecture.id == ARCH_ID
    assert descriptor.scale == scale
    assert isinstance(descriptor.model, ParagonSR2)
    assert descriptor.model.state_dict().keys() == model.state_dict().keys()
    assert descriptor.model.base.alpha == model.base.alpha
    if model.base.alpha != 0.5:
        assert descriptor.tags[-1] == f"alpha{model.base.alpha:g}"
    assert read_hyperparameters(descriptor.model.state_dict()) == read_hyperparameters(
        model.state_dict()
    )
    _assert_same_output(descriptor.model, model)


# -------------------------------------------------------------------- detection


def test_detected_from_the_bare_state_dict_without_metadata(tmp_path: Path) -> None:
    model = _paragon(2, **asdict(VARIANTS["paragonsr2_tiny"]))
    state = model.state_dict()
    assert detect(state)
    # A bare safetensors file (no header metadata at all), as chaiNNer users pass them.
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    for descriptor in (
        spandrel.ModelLoader().load_from_file(path),
        spandrel.ModelLoader().load_from_state_dict(dict(state)),
        # DDP's prefix, which spandrel strips before detection.
        spandrel.ModelLoader().load_from_state_dict({f"module.{k}": v for k, v in state.items()}),
    ):
        assert descriptor.architecture.id == ARCH_ID
        _assert_same_output(descriptor.model, model)


def test_detection_rejects_near_misses() -> None:
    state = dict(_paragon(2, num_feat=16).state_dict())
    assert detect(state)
    assert not detect({k: v for k, v in state.items() if k != "detail_gain"})
    assert not detect({**state, "conv_in.weight": torch.zeros(16, 4, 3, 3)})  # not RGB
    assert not detect({**state, "upsample.0.weight": torch.zeros(16 * 5, 16, 3, 3)})  # 5 = no s^2
    assert not detect({**state, "detail_gain": torch.zeros(1)})


@pytest.mark.parametrize("name", list(VARIANTS))
def test_no_spandrel_architecture_claims_paragonsr2_weights(name: str) -> None:
    for scale in SUPPORTED_SCALES:
        state = ParagonSR2(scale=scale, **asdict(VARIANTS[name])).state_dict()
        claimed = [
            support.architecture.id
            for support in spandrel.MAIN_REGISTRY.architectures("detection")
            if support.detect(state)
        ]
        assert claimed == [ARCH_ID]


@pytest.mark.parametrize("name", list(NATIVE))
def test_spandrel_architectures_still_load_as_themselves(name: str) -> None:
    arch_id, kwargs = NATIVE[name]
    torch.manual_seed(0)
    native = ARCH_REGISTRY.get(name)(scale=2, **kwargs).eval()
    state = native.state_dict()
    assert not detect(state)
    descriptor = spandrel.ModelLoader().load_from_state_dict(dict(state))
    assert descriptor.architecture.id == arch_id
    assert descriptor.scale == 2


def test_register_is_idempotent_and_never_replaces(registered: ArchSupport) -> None:
    assert ARCH_ID in spandrel.MAIN_REGISTRY
    count = len(spandrel.MAIN_REGISTRY)
    assert register() is registered
    assert len(spandrel.MAIN_REGISTRY) == count
    # Tried after every spandrel architecture: it can shadow none of them.
    assert spandrel.MAIN_REGISTRY.architectures("detection")[-1] is registered
    # A registry that already has a ParagonSR2 (a spandrel release shipping one) keeps it.
    other = spandrel.ArchRegistry()
    theirs = ArchSupport.from_architecture(ParagonSR2Arch())
    other.add(theirs)
    assert register(other) is theirs
    assert len(other) == 1


# ------------------------------------------------------------- alpha tag, dtypes


def test_alpha_tag_survives_half_and_keeps_old_checkpoints_loading() -> None:
    model = _paragon(2, num_feat=16, upsampler_alpha=0.3)
    assert ALPHA_TAG in model.state_dict()
    assert ALPHA_TAG not in ParagonSR2(scale=2).state_dict()  # default models: no new key
    half = spandrel.ModelLoader().load_from_state_dict(dict(model.state_dict())).half()
    assert alpha_from_tag(half.model.state_dict()[ALPHA_TAG]) == 0.3

    old = {k: v for k, v in model.state_dict().items() if k != ALPHA_TAG}
    rebuilt = ParagonSR2(scale=2, num_feat=16, upsampler_alpha=0.3)
    rebuilt.load_state_dict(old)  # weights saved before the tag: the network's alpha stands
    _assert_same_output(rebuilt.eval(), model)

    # Another alpha: told, and the tag keeps describing this network's forward pass.
    other = ParagonSR2(scale=2, num_feat=16, upsampler_alpha=0.7)
    with pytest.warns(UserWarning, match=r"upsampler_alpha=0\.3 .* built with 0\.7"):
        other.load_state_dict(model.state_dict())
    assert alpha_from_tag(other.state_dict()[ALPHA_TAG]) == 0.7


def test_bfloat16_descriptor_runs() -> None:
    model = _paragon(2, **asdict(VARIANTS["paragonsr2_nano"]))
    descriptor = spandrel.ModelLoader().load_from_state_dict(dict(model.state_dict()))
    assert isinstance(descriptor, ImageModelDescriptor)
    descriptor.bfloat16()
    x = _image()
    with torch.no_grad():
        out = descriptor(x.bfloat16()).float()
        expected = model(x).clamp(0, 1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=0, atol=0.1)


# ------------------------------------------------------------ contrib/spandrel port


@pytest.mark.parametrize(
    ("scale", "hyperparameters"),
    [
        *((2, asdict(VARIANTS[name])) for name in VARIANTS if name != "paragonsr2"),
        *((scale, asdict(VARIANTS["paragonsr2_nano"])) for scale in (1, 3, 4)),
        (3, {"num_feat": 16, "upsampler_alpha": 0.7}),
        (2, {"num_feat": 16, "channel_modulation": True, "modulation_reduction": 8}),
        (2, {"num_feat": 12, "ffn_expansion": 2.7, "upsampler_alpha": 0.0}),
    ],
)
def test_contrib_port_is_the_same_network(
    contrib: ModuleType, scale: int, hyperparameters: dict[str, Any], tmp_path: Path
) -> None:
    model = _paragon(scale, **hyperparameters)
    path = save_network(model.state_dict(), tmp_path / "net", {}, "pth")
    registry = spandrel.ArchRegistry()
    registry.add(ArchSupport.from_architecture(contrib.ParagonSR2Arch()))
    descriptor = spandrel.ModelLoader(registry=registry).load_from_file(path)
    port = descriptor.model
    assert type(port).__module__ == f"{CONTRIB_MODULE}.__arch.paragonsr2"
    assert descriptor.architecture.id == ARCH_ID
    assert descriptor.scale == scale
    assert descriptor.tags == ParagonSR2Arch().load(dict(model.state_dict())).tags
    _assert_same_output(port, model)
    # The other way: the port's own weights load into traiNNer's network through ours.
    _randomised(port, seed=5)
    ours = spandrel.ModelLoader().load_from_state_dict(dict(port.state_dict()))
    assert isinstance(ours.model, ParagonSR2)
    _assert_same_output(ours.model, port)


def test_contrib_detection_agrees(contrib: ModuleType) -> None:
    port_arch = contrib.ParagonSR2Arch()
    for name in VARIANTS:
        assert port_arch.detect(ParagonSR2(scale=2, **asdict(VARIANTS[name])).state_dict())
    for name, (_, kwargs) in NATIVE.items():
        torch.manual_seed(0)
        assert not port_arch.detect(ARCH_REGISTRY.get(name)(scale=2, **kwargs).state_dict())
