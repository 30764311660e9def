"""Architecture registry: shapes, gradients, spandrel round trips, ParagonSR2 design."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spandrel
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import traiNNer.archs  # noqa: F401 - fills ARCH_REGISTRY
from traiNNer.archs.paragonsr2 import ParagonSR2
from traiNNer.archs.spandrel_archs import COMPACT_FAMILY, ESRGAN_SCALES
from traiNNer.archs.spandrel_archs_upstream import VARIANTS as UPSTREAM_VARIANTS
from traiNNer.archs.variants import Variant, VariantFactory
from traiNNer.config.validation import check_kwargs
from traiNNer.utils.errors import ConfigError
from traiNNer.utils.registry import ARCH_REGISTRY

PARAGON_NAMES = (
    "paragonsr2",
    "paragonsr2_nano",
    "paragonsr2_micro",
    "paragonsr2_tiny",
    "paragonsr2_xs",
    "paragonsr2_s",
    "paragonsr2_m",
)

# Registered name -> spandrel architecture id its weights must be detected as.
SPANDREL_IDS: dict[str, str] = {
    "span": "SPAN",
    "compact": "Compact",
    "ultracompact": "Compact",
    "superultracompact": "Compact",
    "esrgan": "ESRGAN",
    "esrgan_lite": "ESRGAN",
    "plksr": "PLKSR",
    "plksr_tiny": "PLKSR",
    "realplksr": "PLKSR",
    "realplksr_tiny": "PLKSR",
    "realplksr_large": "PLKSR",
    "omnisr": "OmniSR",
    "safmn": "SAFMN",
    "safmn_l": "SAFMN",
    "mosr": "MoSR",
    "mosr_t": "MoSR",
    "dat": "DAT",
    "dat_s": "DAT",
    "dat_2": "DAT",
    "dat_light": "DAT",
}

_TINY_PLKSR = {"dim": 16, "n_blocks": 1, "kernel_size": 5}
_TINY_DAT = {"embed_dim": 16, "depth": (2,), "num_heads": (2,)}
# Overrides that keep each test build small; ParagonSR2 presets are tested as shipped.
TINY_KWARGS: dict[str, dict[str, Any]] = {
    **{name: {} for name in PARAGON_NAMES},
    "span": {"feature_channels": 8},
    "compact": {"num_feat": 8, "num_conv": 2},
    "ultracompact": {"num_feat": 8, "num_conv": 2},
    "superultracompact": {"num_feat": 8, "num_conv": 2},
    "esrgan": {"num_filters": 8, "num_blocks": 1},
    "esrgan_lite": {"num_filters": 8, "num_blocks": 1},
    "plksr": _TINY_PLKSR,
    "plksr_tiny": _TINY_PLKSR,
    "realplksr": _TINY_PLKSR,
    "realplksr_tiny": _TINY_PLKSR,
    "realplksr_large": {**_TINY_PLKSR, "upsampler": "dysample"},
    "omnisr": {"num_feat": 16, "res_num": 1},
    "safmn": {"dim": 8, "n_blocks": 1},
    "safmn_l": {"dim": 8, "n_blocks": 1},
    "mosr": {"n_block": 1, "dim": 16},
    "mosr_t": {"n_block": 1, "dim": 16, "upsampler": "geoensemblepixelshuffle"},
    "dat": _TINY_DAT,
    "dat_s": _TINY_DAT,
    "dat_2": _TINY_DAT,
    "dat_light": _TINY_DAT,
}

# The traiNNer-redux names of spandrel_archs_upstream have their own tests
# (tests/test_upstream_archs.py).
NAMES = [name for name in ARCH_REGISTRY.names() if name not in UPSTREAM_VARIANTS]

# DAT's BatchNorm needs two samples in training mode; 16 px is the smallest
# size every arch accepts (OmniSR/DAT windows, SAFMN's 8x pooling).
BATCH, SIZE = 2, 16


def _cases() -> list[tuple[str, int]]:
    return [(name, scale) for name in NAMES for scale in ARCH_REGISTRY.get(name).supported_scales]


def _build(name: str, scale: int, **overrides: Any) -> nn.Module:
    torch.manual_seed(0)
    return ARCH_REGISTRY.get(name)(scale=scale, **{**TINY_KWARGS[name], **overrides})


def _image(seed: int = 1) -> torch.Tensor:
    return torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------- registry


def test_registry_has_the_documented_names() -> None:
    names = set(NAMES)
    assert set(PARAGON_NAMES) <= names
    assert set(SPANDREL_IDS) <= names
    # Every other registered arch is exercised below with a small configuration.
    assert names == set(TINY_KWARGS)


@pytest.mark.parametrize("name", NAMES)
def test_factory_signature_is_checkable_by_the_trainer(name: str) -> None:
    factory = ARCH_REGISTRY.get(name)
    scales = factory.supported_scales
    assert isinstance(scales, tuple)
    assert scales and all(isinstance(s, int) and s >= 1 for s in scales)
    params = inspect.signature(factory).parameters
    assert "scale" in params
    for param in params.values():
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, param.name
        assert param.annotation is not inspect.Parameter.empty, param.name
        assert param.default is not inspect.Parameter.empty, param.name


@pytest.mark.parametrize("name", NAMES)
def test_signature_and_type_hints_agree(name: str) -> None:
    # The config check reads annotations through both; a variant's own defaults
    # come from its table row.
    factory = ARCH_REGISTRY.get(name)
    params = inspect.signature(factory).parameters
    hints = typing.get_type_hints(factory)
    assert {key: p.annotation for key, p in params.items()} == {
        key: hint for key, hint in hints.items() if key != "return"
    }
    assert isinstance(factory(**{**TINY_KWARGS[name], "scale": 2}), hints["return"])


def test_variant_rows_set_defaults_scales_and_notes() -> None:
    params = inspect.signature(ARCH_REGISTRY.get("superultracompact")).parameters
    assert (params["num_feat"].default, params["num_conv"].default) == (24, 8)
    assert inspect.signature(ARCH_REGISTRY.get("compact")).parameters["num_feat"].default == 64
    assert ARCH_REGISTRY.get("esrgan_lite").supported_scales == ESRGAN_SCALES
    # traiNNer-redux's departures from spandrel are noted after the summary paragraph.
    doc = ARCH_REGISTRY.get("omnisr").__doc__
    assert doc is not None and doc.startswith("Omni-SR (omni self-attention).\n\n")
    assert "res_num" in doc
    row = Variant(COMPACT_FAMILY, "A test row.", {"num_feat": 8, "num_conv": 1}, scales=(2,))
    factory = VariantFactory("compact_test", row)
    assert factory.supported_scales == (2,)
    first_conv = next(m for m in factory(scale=2).modules() if isinstance(m, nn.Conv2d))
    assert first_conv.out_channels == 8
    with pytest.raises(ConfigError, match=r"scale: compact_test does not support scale 4"):
        factory(scale=4)


def test_variant_rows_and_calls_reject_unknown_hyperparameters() -> None:
    with pytest.raises(TypeError, match="num_feats is not a hyperparameter"):
        VariantFactory("bad", Variant(COMPACT_FAMILY, "Typo.", {"num_feats": 8}))
    with pytest.raises(TypeError, match="num_feats"):
        ARCH_REGISTRY.get("compact")(scale=2, num_feats=8)
    with pytest.raises(TypeError):
        ARCH_REGISTRY.get("compact")(2)


@pytest.mark.parametrize("name", ["paragonsr2_nano", "esrgan", "dat_light"])
def test_unsupported_scale_is_a_config_error(name: str) -> None:
    factory = ARCH_REGISTRY.get(name)
    bad_scale = next(s for s in range(2, 16) if s not in factory.supported_scales)
    with pytest.raises(ConfigError, match=rf"scale: {name} does not support scale {bad_scale}"):
        factory(scale=bad_scale)


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        ("paragonsr2", {"num_feat": 0}, "network_g.num_feat"),
        ("paragonsr2_s", {"ffn_expansion": -1.0}, "network_g.ffn_expansion"),
        ("realplksr", {"layer_norm": False, "norm_groups": 5}, "network_g.norm_groups"),
        ("plksr", {"kernel_size": 8}, "network_g.kernel_size"),
        ("safmn", {"dim": 30}, "network_g.dim"),
        ("dat_light", {"depth": (2, 2), "num_heads": (2,)}, "network_g.num_heads"),
        ("dat", {"embed_dim": 8}, "network_g.embed_dim"),
    ],
)
def test_impossible_hyperparameters_name_the_key(
    name: str, kwargs: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        ARCH_REGISTRY.get(name)(scale=2, **kwargs)


def test_trainer_kwarg_check_converts_yaml_lists_for_tuple_hyperparameters() -> None:
    factory = ARCH_REGISTRY.get("dat_light")
    kwargs = check_kwargs(factory, {"depth": [2], "num_heads": [2], "embed_dim": 16}, "network_g")
    model = factory(scale=2, **kwargs)
    assert len(model.layers) == 1
    with pytest.raises(ConfigError, match=r"network_g\.upsampler"):
        check_kwargs(ARCH_REGISTRY.get("mosr"), {"upsampler": "bicubic"}, "network_g")


# ------------------------------------------------------------ every arch, scale


@pytest.mark.parametrize(("name", "scale"), _cases())
def test_forward_backward_shape_and_finite(name: str, scale: int) -> None:
    model = _build(name, scale).train()
    x = _image()
    x_before = x.clone()
    y = model(x)
    assert y.shape == (BATCH, 3, SIZE * scale, SIZE * scale)
    assert torch.isfinite(y).all()
    assert torch.equal(x, x_before), "forward modified its input in place"
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(("name", "scale"), [c for c in _cases() if c[0] in SPANDREL_IDS])
def test_spandrel_detects_saved_weights(name: str, scale: int, tmp_path: Path) -> None:
    model = _build(name, scale).eval()
    path = tmp_path / f"{name}_{scale}x.safetensors"
    save_file(model.state_dict(), str(path))

    descriptor = spandrel.ModelLoader().load_from_state_dict(load_file(str(path)))
    assert descriptor.architecture.id == SPANDREL_IDS[name]
    assert descriptor.scale == scale
    # The detected hyperparameters rebuild the same network.
    descriptor.model.eval()
    x = _image()
    with torch.no_grad():
        torch.testing.assert_close(descriptor.model(x.clone()), model(x.clone()))


# -------------------------------------------------------------------- ParagonSR2


def _parameter_count(name: str, scale: int) -> int:
    return sum(p.numel() for p in ARCH_REGISTRY.get(name)(scale=scale).parameters())


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("paragonsr2_nano", 10_000, 20_000),
        ("paragonsr2_s", 200_000, 300_000),
        ("paragonsr2_m", 1_600_000, 2_000_000),
    ],
)
def test_paragon_parameter_counts_at_2x(name: str, low: int, high: int) -> None:
    assert low <= _parameter_count(name, 2) <= high


def test_paragon_ladder_grows_and_presets_stay_overridable() -> None:
    ladder = ["nano", "micro", "tiny", "xs", "s", "m"]
    counts = [_parameter_count(f"paragonsr2_{v}", 2) for v in ladder]
    assert counts == sorted(counts)
    model = ARCH_REGISTRY.get("paragonsr2_nano")(scale=2, num_feat=20, num_groups=2)
    assert isinstance(model, ParagonSR2)
    assert model.conv_in.out_channels == 20
    assert len(model.groups) == 2


def _separable_reference(image: np.ndarray, taps: list[float]) -> np.ndarray:
    """Edge-padded separable filtering of an (H, W) array, written with numpy."""
    pad = len(taps) // 2
    kernel = np.asarray(taps[::-1], dtype=np.float64)  # convolve flips; undo it
    padded = np.pad(image, pad, mode="edge")
    rows = np.stack([np.convolve(r, kernel, mode="valid") for r in padded])
    return np.stack([np.convolve(c, kernel, mode="valid") for c in rows.T]).T


def _mks_reference(image: np.ndarray, scale: int, alpha: float) -> np.ndarray:
    sharp = _separable_reference(image, [-1 / 32, 0, 9 / 32, 16 / 32, 9 / 32, 0, -1 / 32])
    blended = image + alpha * (sharp - image)
    nearest = np.repeat(np.repeat(blended, scale, axis=0), scale, axis=1)
    return _separable_reference(nearest, [1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16])


@pytest.mark.parametrize("export_safe", [False, True])
@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_paragon_base_path_is_the_fixed_sharp_upsampler(scale: int, export_safe: bool) -> None:
    alpha = 0.7
    model = ARCH_REGISTRY.get("paragonsr2_nano")(
        scale=scale, detail_gain=0.0, upsampler_alpha=alpha, export_safe=export_safe
    ).eval()
    x = _image()[:1]
    with torch.no_grad():
        out = model(x)
    expected = np.stack([_mks_reference(x[0, c].double().numpy(), scale, alpha) for c in range(3)])
    np.testing.assert_allclose(out[0].double().numpy(), expected, atol=1e-5)
    # A flat image stays flat: both kernels sum to one and borders replicate.
    flat = torch.full((1, 3, 12, 12), 0.3)
    with torch.no_grad():
        torch.testing.assert_close(model(flat), torch.full_like(model(flat), 0.3))


def test_paragon_base_path_is_not_learnable_nor_saved() -> None:
    model = ARCH_REGISTRY.get("paragonsr2_nano")(scale=2)
    assert list(model.base.parameters()) == []
    assert not any(key.startswith("base.") for key in model.state_dict())


def test_paragon_export_safe_computes_the_same_function() -> None:
    plain = ARCH_REGISTRY.get("paragonsr2_m")(scale=3).eval()
    safe = ARCH_REGISTRY.get("paragonsr2_m")(scale=3, export_safe=True).eval()
    safe.load_state_dict(plain.state_dict())
    x = _image()
    with torch.no_grad():
        torch.testing.assert_close(safe(x), plain(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_paragon_autocast_forward(dtype: torch.dtype) -> None:
    model = ARCH_REGISTRY.get("paragonsr2_s")(scale=2).eval()
    x = _image()
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=dtype):
            low = model(x)
    assert low.dtype == dtype
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), reference, atol=0.05, rtol=0.05)


def test_paragon_channels_last_matches_contiguous() -> None:
    model = ARCH_REGISTRY.get("paragonsr2_m")(scale=2).eval()
    x = _image()
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


def test_paragon_torch_export_matches_eager() -> None:
    model = ARCH_REGISTRY.get("paragonsr2_nano")(scale=2).eval()
    x = _image()
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))


def test_paragon_export_safe_graph_avoids_pad_modes_and_resize() -> None:
    model = ARCH_REGISTRY.get("paragonsr2_m")(scale=2, export_safe=True).eval()
    exported = torch.export.export(model, (_image(),))
    ops = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert not any("pad" in op or "upsample" in op or "adaptive" in op for op in ops), ops


def _gradients(model: ParagonSR2, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(x).square().mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_paragon_activation_checkpointing_recomputes_groups_with_same_gradients() -> None:
    model = ARCH_REGISTRY.get("paragonsr2_tiny")(scale=2).train()
    assert isinstance(model, ParagonSR2)
    x = _image()
    group_calls: list[int] = []
    # Hook a layer inside the group: non-reentrant checkpointing may stop the
    # recomputation before the group's own forward returns.
    first_layer = next(m for m in model.groups[0].modules() if isinstance(m, nn.Conv2d))
    first_layer.register_forward_hook(lambda *_: group_calls.append(1))

    plain = _gradients(model, x)
    assert len(group_calls) == 1
    model.set_activation_checkpointing(True)
    checkpointed = _gradients(model, x)
    assert len(group_calls) == 3, "group was not recomputed in backward"

    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)

    # Inference never pays for recomputation.
    model.eval()
    with torch.no_grad():
        model(x)
    assert len(group_calls) == 4
    model.set_activation_checkpointing(False)
    _gradients(model.train(), x)
    assert len(group_calls) == 5
