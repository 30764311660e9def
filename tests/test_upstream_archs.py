"""traiNNer-redux names built from spandrel (traiNNer/archs/spandrel_archs_upstream.py):
defaults, every supported scale, gradients, spandrel round trips and the key checks."""

from __future__ import annotations

import copy
import inspect
import typing
from pathlib import Path
from typing import Any

import pytest
import spandrel
import torch
from torch import nn

from tests.conftest import base_options
from traiNNer.archs.spandrel_archs_upstream import VARIANTS
from traiNNer.config.loader import _populate_registries, decode_options, validate
from traiNNer.config.validation import check_kwargs
from traiNNer.models.sr_model import build_network
from traiNNer.utils.errors import ConfigError
from traiNNer.utils.registry import ARCH_REGISTRY

_populate_registries()

# Registered name -> spandrel architecture id its weights must be detected as.
SPANDREL_IDS: dict[str, str] = {
    **{f"hat_{v}": "HAT" for v in "sml"},
    **{f"swinir_{v}": "SwinIR" for v in "sml"},
    **{f"swin2sr_{v}": "Swin2SR" for v in "sml"},
    **{name: "DRCT" for name in ("drct", "drct_l", "drct_xl")},
    "atd": "ATD",
    "rgt": "RGT",
    "rgt_s": "RGT",
    **{f"grl_{v}": "GRL" for v in "bst"},
    "craft": "CRAFT",
    "realcugan": "RealCUGAN",
    "dctlsa": "DCTLSA",
    "ditn_real": "DITN",
    "seemore_t": "SeemoRe",
    "span_s": "SPAN",
    "rcan": "RCAN",
    "rcan_unshuffle": "RCAN",
    **{f"fdat_{v}": "FDAT" for v in ("tiny", "light", "medium", "medium_aligned", "large", "xl")},
    "moesr2": "MoESR",
}

_SWIN = {"embed_dim": 16, "depths": (1,), "num_heads": (2,), "window_size": 4}
_HAT = {**_SWIN, "compress_ratio": 4, "squeeze_factor": 4, "num_feat": 16}
_GRL = {
    "embed_dim": 18,  # grl_b's local connection squeezes the features 18 times
    "depths": (1,),
    "num_heads_window": (3,),
    "num_heads_stripe": (3,),
    "window_size": 4,
    "stripe_size": (4, 4),
    "anchor_window_down_factor": 2,
}
_RCAN = {"n_resgroups": 1, "n_resblocks": 1, "n_feats": 16}
# Size overrides that keep each build small; the rest (upsampler, residual block, ...)
# stays each variant's own.
TINY_KWARGS: dict[str, dict[str, Any]] = {
    **{name: _HAT for name in ("hat_s", "hat_m", "hat_l")},
    **{f"{family}_{v}": _SWIN for family in ("swinir", "swin2sr") for v in "sml"},
    **{name: _SWIN for name in ("drct", "drct_l", "drct_xl")},
    "atd": {
        **_SWIN,
        "depths": (2,),  # spandrel recognises ATD by a first group of 2+ layers
        "category_size": 16,
        "num_tokens": 8,
        "reducted_dim": 4,
    },
    **{
        name: {"embed_dim": 16, "depth": (1,), "num_heads": (2,), "split_size": (4, 8)}
        for name in ("rgt", "rgt_s")
    },
    **{f"grl_{v}": _GRL for v in "bst"},
    "craft": {
        "window_size": 4,
        "embed_dim": 12,
        "depths": (1,),
        "num_heads": (2,),
        "split_size_0": 2,
        "split_size_1": 4,
    },
    "realcugan": {},  # fixed sizes (about 1.3M parameters)
    "dctlsa": {"nf": 10, "num_head": 2},
    "ditn_real": {"dim": 12, "ITL_blocks": 1, "SAL_blocks": 1},
    "seemore_t": {"num_experts": 2, "num_layers": 1, "embedding_dim": 12},
    "span_s": {"feature_channels": 8},
    "rcan": _RCAN,
    "rcan_unshuffle": _RCAN,
    **{
        f"fdat_{v}": {"embed_dim": 16, "num_groups": 1, "depth_per_group": 1, "num_heads": 2}
        for v in ("tiny", "light", "medium", "medium_aligned", "large", "xl")
    },
    "moesr2": {"dim": 16, "n_blocks": 1, "n_block": 1, "upsample_dim": 16},
}

# Real-CUGAN reflect-pads its features by up to 19 px.
SIZES: dict[str, int] = {"realcugan": 20}
SIZE = 16

# Scales that a variant's default upsampler (or layout) does not build.
_NEAREST_CONV_SCALES = {"swinir_l": (2, 4, 8), "swin2sr_l": (4,)}


def _kwargs_at(name: str, scale: int) -> dict[str, Any]:
    kwargs = dict(TINY_KWARGS[name])
    if scale not in _NEAREST_CONV_SCALES.get(name, (scale,)):
        kwargs["upsampler"] = "pixelshuffle"
    if name.startswith("grl_") and scale == 1:
        kwargs["upsampler"] = "pixelshuffledirect"  # GRL's pixelshuffle has no 1x layout
    if name.startswith("fdat_") and scale == 8:
        kwargs["upsampler_type"] = "pixelshuffle"  # transpose+conv stops at 4x
    if name == "rcan" and scale == 1:
        kwargs["unshuffle_mod"] = True
    return kwargs


def _cases() -> list[tuple[str, int]]:
    return [(name, s) for name in VARIANTS for s in ARCH_REGISTRY.get(name).supported_scales]


def _build(name: str, scale: int, **overrides: Any) -> nn.Module:
    torch.manual_seed(0)
    return build_network(name, scale, {**_kwargs_at(name, scale), **overrides})


# --------------------------------------------------------------------- registry


def test_every_upstream_variant_is_registered_and_covered() -> None:
    assert set(VARIANTS) == set(SPANDREL_IDS) == set(TINY_KWARGS)
    assert set(VARIANTS) <= set(ARCH_REGISTRY.names())


@pytest.mark.parametrize("name", list(VARIANTS))
def test_factory_signature_is_checkable_and_agrees_with_type_hints(name: str) -> None:
    factory = ARCH_REGISTRY.get(name)
    params = inspect.signature(factory).parameters
    assert "scale" in params
    for param in params.values():
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, param.name
        assert param.annotation is not inspect.Parameter.empty, param.name
        assert param.default is not inspect.Parameter.empty, param.name
    hints = typing.get_type_hints(factory)
    assert {key: p.annotation for key, p in params.items()} == {
        key: hint for key, hint in hints.items() if key != "return"
    }
    # Every default passes the trainer's own check of the keys.
    check_kwargs(factory, {key: p.default for key, p in params.items()}, "network_g")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hat_s", {"embed_dim": 144, "compress_ratio": 24, "squeeze_factor": 24}),
        ("hat_l", {"embed_dim": 180, "depths": (6,) * 12, "window_size": 16}),
        ("swinir_s", {"embed_dim": 60, "upsampler": "pixelshuffledirect", "img_size": 64}),
        ("swinir_m", {"img_size": 48, "upsampler": "pixelshuffle"}),
        ("swinir_l", {"embed_dim": 240, "upsampler": "nearest+conv", "resi_connection": "3conv"}),
        ("swin2sr_l", {"num_heads": (8,) * 9, "upsampler": "nearest+conv"}),
        ("drct_xl", {"depths": (6,) * 14, "window_size": 16}),
        ("atd", {"embed_dim": 210, "num_tokens": 128, "reducted_dim": 20, "img_size": 96}),
        ("rgt", {"depth": (6,) * 8, "split_size": (8, 32)}),
        ("grl_b", {"embed_dim": 180, "local_connection": True, "depths": (4, 4, 8, 8, 8, 4, 4)}),
        ("grl_t", {"embed_dim": 64, "upsampler": "pixelshuffledirect", "window_size": 32}),
        ("seemore_t", {"num_experts": 3, "embedding_dim": 36, "lr_space": "exp"}),
        ("span_s", {"feature_channels": 48, "norm": False, "num_blocks": 6}),
        ("rcan", {"norm": False, "unshuffle_mod": False, "n_feats": 64}),
        ("rcan_unshuffle", {"unshuffle_mod": True}),
        ("fdat_tiny", {"embed_dim": 96, "num_heads": 3, "upsampler_type": "transpose+conv"}),
        ("fdat_xl", {"num_groups": 6, "depth_per_group": 6, "embed_dim": 180}),
        ("moesr2", {"dim": 64, "n_blocks": 9, "upsampler": "pixelshuffledirect"}),
    ],
)
def test_defaults_are_traiNNer_redux_ones(name: str, expected: dict[str, Any]) -> None:
    params = inspect.signature(ARCH_REGISTRY.get(name)).parameters
    assert {key: params[key].default for key in expected} == expected
    assert params["scale"].default == 4


# ------------------------------------------------------------ every arch, scale


@pytest.mark.parametrize(("name", "scale"), _cases())
def test_builds_trains_and_spandrel_reads_it_back(name: str, scale: int) -> None:
    model = _build(name, scale).train()
    size = SIZES.get(name, SIZE)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    x_before = x.clone()
    y = model(x)
    assert y.shape == (1, 3, size * scale, size * scale)
    assert torch.isfinite(y).all()
    assert torch.equal(x, x_before), "forward modified its input"
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)

    descriptor = spandrel.ModelLoader().load_from_state_dict(model.state_dict())
    assert descriptor.architecture.id == SPANDREL_IDS[name]
    assert descriptor.scale == scale


@pytest.mark.parametrize("name", ["hat_s", "drct"])
def test_use_checkpoint_recomputes_the_same_gradients_with_the_same_weights(name: str) -> None:
    plain = _build(name, 2)
    checkpointed = _build(name, 2, use_checkpoint=True)
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()
    assert all(
        type(b).__name__.startswith("Checkpointed")
        for b in checkpointed.get_submodule("layers").children()
    )
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    grads = []
    for model in (plain, checkpointed):
        model.train().zero_grad()
        model(x).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    # The EMA copy and spandrel see the architecture as it is.
    copied = copy.deepcopy(checkpointed)
    torch.testing.assert_close(copied.eval()(x), checkpointed.eval()(x))
    descriptor = spandrel.ModelLoader().load_from_state_dict(checkpointed.state_dict())
    assert descriptor.architecture.id == SPANDREL_IDS[name]


def test_realcugan_fast_builds_at_2x() -> None:
    model = build_network("realcugan", 2, {"fast": True})
    assert model(torch.rand(1, 3, 40, 40)).shape == (1, 3, 80, 80)
    descriptor = spandrel.ModelLoader().load_from_state_dict(model.state_dict())
    assert (descriptor.architecture.id, descriptor.scale) == ("RealCUGAN", 2)


# ---------------------------------------------------------------- key checks


@pytest.mark.parametrize(
    ("name", "scale", "kwargs", "message"),
    [
        ("swin2sr_l", 2, {}, r"network_g\.upsampler: 'nearest\+conv' builds swin2sr_l at scale 4"),
        ("swinir_l", 3, {}, r"network_g\.upsampler: 'nearest\+conv' builds swinir_l at scale 2, 4"),
        ("swinir_m", 2, {"upsampler": ""}, r"network_g\.upsampler: '' \(no upsampler\)"),
        ("grl_s", 1, {}, r"network_g\.upsampler: 'pixelshuffle' builds grl_s at scale 2, 3"),
        ("swin2sr_m", 2, {"upsampler": "pixelshuffle_hf"}, r"network_g\.upsampler"),
        ("swinir_s", 2, {"start_unshuffle": 2}, r"network_g\.start_unshuffle"),
        ("hat_s", 2, {"num_heads": (5,)}, r"network_g\.num_heads: every entry must divide"),
        ("hat_m", 2, {"depths": (1, 1)}, r"network_g\.num_heads: needs one entry per"),
        ("hat_m", 2, {"compress_ratio": 32}, r"network_g\.compress_ratio"),
        ("atd", 2, {"depths": (1,)}, r"network_g\.depths: the first group"),
        ("atd", 2, {"convffn_kernel_size": 4}, r"network_g\.convffn_kernel_size"),
        ("rgt", 2, {"depth": ()}, r"network_g\.depth:"),
        ("grl_t", 2, {"num_heads_stripe": (4,)}, r"network_g\.num_heads_stripe"),
        (
            "grl_b",
            2,
            {"embed_dim": 16, "num_heads_window": (2,), "num_heads_stripe": (2,)},
            r"network_g\.embed_dim",
        ),
        ("grl_s", 2, {"fairscale_checkpoint": True}, r"network_g\.fairscale_checkpoint"),
        ("craft", 2, {"embed_dim": 0}, r"network_g\.embed_dim"),
        ("realcugan", 4, {"fast": True}, r"network_g\.fast"),
        ("realcugan", 2, {"fast": True, "pro": True}, r"network_g\.pro"),
        ("dctlsa", 2, {"num_modules": 4}, r"network_g\.num_modules: only 6"),
        ("dctlsa", 2, {"num_head": 3}, r"network_g\.num_head: must divide nf"),
        ("seemore_t", 2, {"global_kernel_size": 4}, r"network_g\.global_kernel_size"),
        ("seemore_t", 2, {"topk": 9}, r"network_g\.topk"),
        ("span_s", 2, {"num_blocks": 8}, r"network_g\.num_blocks"),
        ("rcan", 2, {"norm": True}, r"network_g\.norm"),
        ("rcan", 1, {}, r"network_g\.unshuffle_mod"),
        ("ditn_real", 2, {"dim": 0}, r"network_g\.dim"),
        ("fdat_tiny", 8, {}, r"network_g\.upsampler_type: 'transpose\+conv' builds fdat_tiny"),
        ("fdat_light", 2, {"upsampler_type": "conv"}, r"network_g\.upsampler_type: 'conv'"),
        ("fdat_medium", 2, {"num_heads": 3}, r"network_g\.num_heads: must divide embed_dim"),
        (
            "fdat_large",
            2,
            {"group_block_pattern": ("channel",)},
            r"network_g\.group_block_pattern",
        ),
        ("moesr2", 2, {"upsampler": "conv"}, r"network_g\.upsampler: 'conv' builds moesr2"),
    ],
)
def test_impossible_settings_name_the_key(
    name: str, scale: int, kwargs: dict[str, Any], message: str
) -> None:
    tiny = {key: value for key, value in TINY_KWARGS[name].items() if key != "upsampler"}
    with pytest.raises(ConfigError, match=message):
        ARCH_REGISTRY.get(name)(scale=scale, **{**tiny, **kwargs})


def test_realcugan_rejects_scales_it_has_no_layout_for() -> None:
    with pytest.raises(ConfigError, match=r"scale: realcugan does not support scale 8"):
        ARCH_REGISTRY.get("realcugan")(scale=8)


def test_upstream_option_file_with_yaml_lists_loads() -> None:
    data = base_options(Path("/unused"), Path("/unused"))
    data["network_g"] = {"type": "HAT_S", "depths": [2, 2], "num_heads": [6, 6], "embed_dim": 48}
    opt = validate(decode_options(data), for_training=True)
    assert opt.network_g["depths"] == (2, 2)
    with pytest.raises(ConfigError, match=r"network_g\.upsampler"):
        data["network_g"] = {"type": "swinir_s", "upsampler": "bicubic"}
        validate(decode_options(data), for_training=True)
    with pytest.raises(ConfigError, match=r"network_g\.resi_connection"):
        data["network_g"] = {"type": "drct", "resi_connection": "3conv"}
        validate(decode_options(data), for_training=True)
