"""The losses traiNNer-redux's templates list, under its names and keys."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.conftest import base_options
from traiNNer.config import compat
from traiNNer.config.loader import decode_options, validate
from traiNNer.losses import LOSS_REGISTRY, build_loss
from traiNNer.losses.flip_loss import FLIPLoss
from traiNNer.losses.hsluv import rgb_to_hsluv
from traiNNer.losses.ldl_loss import local_variance
from traiNNer.losses.vgg import VGG19_BLOCKS, vgg19_layer_names
from traiNNer.utils.errors import ConfigError, UserError

# (name, keys) of every case; perceptualloss gets vgg_weights_path added.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("perceptualloss", {}),
    ("perceptualloss", {"criterion": "l1", "range_norm": True}),
    ("perceptualloss", {"criterion": "pd"}),
    ("perceptualloss", {"criterion": "fd", "num_proj_fd": 16}),
    ("perceptualloss", {"criterion": "pd+l1", "w_lambda": 0.1}),
    ("perceptualloss", {"criterion": "fd+l1", "num_proj_fd": 16, "stride_fd": 2}),
    ("hsluvloss", {}),
    ("hsluvloss", {"criterion": "charbonnier", "blur_strength": 1, "downscale_factor": 2}),
    ("psnrloss", {}),
    ("psnrloss", {"to_y": True}),
    ("ldlloss", {}),
    ("ldlloss", {"criterion": "charbonnier"}),
    ("cosimloss", {}),
    ("fliploss", {}),
    ("sobeledgeloss", {}),
    ("ffloss", {}),
    ("mssimloss", {}),
    ("mssimloss", {"color_space": "ycbcr", "is_prod": False, "include_luminance": True}),
    ("charbonnierloss", {"reduction": "sum"}),
]
IDS = [f"{name}-{'-'.join(map(str, keys.values())) or 'defaults'}" for name, keys in CASES]
# The value each loss takes for identical images: its minimum.
PSNR_FLOOR = 10 / math.log(10) * math.log(1e-8)  # -80 dB


def random_vgg19_features() -> dict[str, Tensor]:
    """A He-initialised `vgg19().features` state dict (no ImageNet weights in tests)."""
    generator = torch.Generator().manual_seed(0)
    names = vgg19_layer_names()
    state: dict[str, Tensor] = {}
    in_channels = 3
    for block, (channels, convolutions) in enumerate(VGG19_BLOCKS, start=1):
        for conv in range(1, convolutions + 1):
            index = names.index(f"conv{block}_{conv}")
            fan_in = in_channels * 9
            weight = torch.randn(channels, in_channels, 3, 3, generator=generator)
            state[f"{index}.weight"] = weight * math.sqrt(2 / fan_in)
            state[f"{index}.bias"] = torch.zeros(channels)
            in_channels = channels
    return state


@pytest.fixture(scope="module")
def vgg_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("vgg") / "vgg19_features.pth"
    torch.save(random_vgg19_features(), path)
    return str(path)


def smooth_image(batch: int, size: int = 32, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 4, size // 4, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1)


def distorted(gt: Tensor, strength: float, seed: int = 1) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (gt + strength * torch.randn(gt.shape, generator=generator)).clamp(0, 1)


class Evaluated:
    """A loss built from a case, called with the EMA output when it needs one."""

    def __init__(self, name: str, keys: dict[str, Any], vgg_path: str) -> None:
        if name == "perceptualloss":
            keys = {**keys, "vgg_weights_path": vgg_path}
        self.module = build_loss(name, keys)
        self.needs_ema = getattr(self.module, "needs_ema_output", False)

    def __call__(self, sr: Tensor, gt: Tensor) -> Tensor:
        if self.needs_ema:
            return self.module(sr, gt, distorted(gt, 0.01, seed=7))
        return self.module(sr, gt)


def minimum(name: str, keys: dict[str, Any], gt: Tensor) -> float:
    if name == "psnrloss":
        return PSNR_FLOOR
    if name == "fliploss":
        # Its stability terms leave a constant floor (the module docstring).
        return FLIPLoss()(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16)).item()
    if name == "charbonnierloss":
        return gt.numel() * 1e-6  # sum of sqrt(1e-12)
    return 0.0


@pytest.mark.parametrize(("name", "keys"), CASES, ids=IDS)
@pytest.mark.parametrize("batch", [1, 2])
def test_minimum_for_identical_and_monotone_in_distortion(
    name: str, keys: dict[str, Any], batch: int, vgg_path: str
) -> None:
    loss = Evaluated(name, keys, vgg_path)
    gt = smooth_image(batch)
    same = loss(gt, gt.clone())
    slight = loss(distorted(gt, 0.03), gt)
    strong = loss(distorted(gt, 0.2), gt)
    for value in (same, slight, strong):
        assert value.ndim == 0 and value.dtype == torch.float32
    assert same.item() == pytest.approx(minimum(name, keys, gt), abs=1e-5)
    assert same.item() < slight.item() < strong.item()


@pytest.mark.parametrize(("name", "keys"), CASES, ids=IDS)
def test_gradients_reach_the_prediction_and_are_finite(
    name: str, keys: dict[str, Any], vgg_path: str
) -> None:
    loss = Evaluated(name, keys, vgg_path)
    gt = smooth_image(2)
    # At the minimum too: no 0/0 from norms, roots or angles of zero differences.
    for sr, nonzero in ((distorted(gt, 0.1), True), (gt.clone(), False)):
        sr.requires_grad_(True)
        loss(sr, gt).backward()
        assert sr.grad is not None and torch.isfinite(sr.grad).all()
        if nonzero:
            assert sr.grad.abs().sum() > 0


def test_every_template_loss_is_registered() -> None:
    names = {name for name, _ in CASES}
    assert names <= set(LOSS_REGISTRY.names())


# --- what each computes ----------------------------------------------------------


def test_hsluv_matches_the_reference_package() -> None:
    hsluv = pytest.importorskip("hsluv")
    colours = [
        (1.0, 0.0, 0.0),
        (0.0, 1.0, 0.0),
        (0.0, 0.0, 1.0),
        (1.0, 1.0, 0.0),
        (0.2, 0.4, 0.6),
        (0.9, 0.3, 0.75),
        (0.05, 0.02, 0.01),
        (128 / 255, 128 / 255, 130 / 255),
    ]
    rgb = torch.tensor(colours).T.reshape(1, 3, len(colours), 1)
    ours = rgb_to_hsluv(rgb)[0, :, :, 0].T.tolist()
    for colour, (hue, saturation, lightness) in zip(colours, ours, strict=True):
        ref_hue, ref_saturation, ref_lightness = hsluv.rgb_to_hsluv(colour)
        assert abs((hue - ref_hue + 180) % 360 - 180) < 1e-2, colour
        assert saturation == pytest.approx(ref_saturation, abs=1e-2), colour
        assert lightness == pytest.approx(ref_lightness, abs=1e-3), colour


def test_hsluv_of_grey_black_and_white_has_no_saturation() -> None:
    rgb = torch.tensor([[0.0, 0.5, 1.0]]).expand(3, -1).reshape(1, 3, 1, 3)
    hsluv = rgb_to_hsluv(rgb)
    assert hsluv[0, 1].abs().max() < 1e-2
    assert hsluv[0, 2, 0].tolist() == pytest.approx([0.0, 53.389, 100.0], abs=1e-2)


def test_hsluv_hue_distance_is_circular() -> None:
    loss = build_loss("hsluvloss", {"saturation_weight": 0, "lightness_weight": 0})
    # HSLuv hues 350 and 10 (S 90, L 50): 20 degrees apart across 0/360, not 340.
    a = torch.tensor([0.8682815, 0.1502489, 0.5040857]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    b = torch.tensor([0.9041002, 0.1382222, 0.2196394]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    hues = rgb_to_hsluv(torch.cat([a, b]))[:, 0, 0, 0]
    assert hues.tolist() == pytest.approx([350.0, 10.0], abs=1e-2)
    assert loss(a, b).item() == pytest.approx(2 * 20 / 360 / 3, rel=1e-3)


def test_flip_matches_the_flip_evaluator() -> None:
    flip = pytest.importorskip("flip_evaluator")
    gt = smooth_image(1, size=48)
    sr = distorted(gt, 0.1)
    ours = build_loss("fliploss", {})(sr, gt).item()
    as_numpy = [image[0].permute(1, 2, 0).numpy().astype(np.float32) for image in (gt, sr)]
    _, reference, _ = flip.evaluate(*as_numpy, "LDR", applyMagma=False)
    assert ours == pytest.approx(reference, rel=2e-3)


def test_psnr_loss_is_minus_psnr() -> None:
    gt = smooth_image(1)
    sr = distorted(gt, 0.05)
    mse = F.mse_loss(sr, gt).item()
    assert build_loss("psnrloss", {})(sr, gt).item() == pytest.approx(
        10 * math.log10(mse + 1e-8), rel=1e-5
    )


def test_sobel_edge_loss_of_a_brightness_shift_is_the_border_only() -> None:
    # A uniform shift has no gradient inside; the zero padding makes the border an edge.
    gt = torch.full((1, 3, 16, 16), 0.4)
    loss = build_loss("sobeledgeloss", {})(gt + 0.1, gt)
    inner = build_loss("sobeledgeloss", {})(gt[..., 4:12, 4:12] + 0.1, gt[..., 4:12, 4:12])
    assert loss.item() > 0 and inner.item() > 0
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 3, 16, 16)
    steeper = build_loss("sobeledgeloss", {})(2 * ramp, ramp)
    flat = build_loss("sobeledgeloss", {})(ramp, ramp)
    assert flat.item() == 0 and steeper.item() > 0


def test_cosim_ignores_brightness_but_not_hue() -> None:
    loss = build_loss("cosimloss", {})
    gt = smooth_image(1) * 0.5 + 0.1
    assert loss(gt * 1.5, gt).item() < 1e-5
    assert loss(gt.flip(1), gt).item() > 1e-3


def test_ldl_local_variance_is_the_windowed_unbiased_variance() -> None:
    image = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    padded = F.pad(image, (3, 3, 3, 3), mode="reflect")
    windows = padded.unfold(2, 7, 1).unfold(3, 7, 1)
    expected = windows.reshape(1, 1, 12, 12, 49).var(dim=-1)
    torch.testing.assert_close(local_variance(image, 7), expected, atol=1e-6, rtol=1e-4)


def test_ldl_ignores_pixels_the_ema_model_gets_wrong_too() -> None:
    loss = build_loss("ldlloss", {})
    gt = smooth_image(1)
    sr = distorted(gt, 0.1)
    assert loss(sr, gt, sr.clone()).item() > 0
    # An EMA output further from gt everywhere switches the whole map off.
    assert loss(sr, gt, gt + 2 * (sr - gt)).item() == 0
    with pytest.raises(UserError, match="needs the EMA model's output"):
        loss(sr, gt)


def test_ffloss_has_upstreams_scale_and_batch_average() -> None:
    gt = smooth_image(2)
    sr = distorted(gt, 0.1)
    averaged = build_loss("ffloss", {})(sr, gt)
    explicit = build_loss("ffloss", {"ave_spectrum": True})(sr, gt)
    per_image = build_loss("ffloss", {"ave_spectrum": False})(sr, gt)
    assert averaged.item() == explicit.item() != per_image.item()


def test_mssim_on_luma_by_default() -> None:
    gt = smooth_image(1, size=48)
    # Swapping red and blue changes the colours a lot but the luma little.
    swapped = gt[:, [2, 1, 0]]
    luma_only = build_loss("mssimloss", {})(swapped, gt)
    all_channels = build_loss("mssimloss", {"test_y_channel": False})(swapped, gt)
    assert luma_only.item() < all_channels.item()


def test_perceptual_criteria_read_the_layers_upstream_reads(vgg_path: str) -> None:
    def layers(criterion: str) -> list[tuple[str, float]]:
        loss = build_loss("perceptualloss", {"criterion": criterion, "vgg_weights_path": vgg_path})
        return [(tap.name, tap.alpha) for tap in loss.taps]  # type: ignore[attr-defined]

    conv = ["conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4"]
    relu = [name.replace("conv", "relu") for name in conv]
    assert layers("charbonnier") == [(name, 0.0) for name in conv]
    assert layers("pd") == [(name, 1.0) for name in relu]
    mixed = layers("fd+l1")
    assert sorted(mixed) == sorted([(n, 0.0) for n in conv] + [(n, 1.0) for n in relu])


def test_perceptual_clip_min_floors_the_loss(vgg_path: str) -> None:
    gt = smooth_image(1)
    loss = build_loss("perceptualloss", {"clip_min": 1000, "vgg_weights_path": vgg_path})
    assert loss(distorted(gt, 0.1), gt).item() == 1000


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"criterion": "pd", "alpha": [0.5] * 5}, r"alpha: criterion 'pd' has no distance term"),
        ({"criterion": "l1", "alpha": [1.0] * 5}, r"alpha: criterion 'l1' has no distribution"),
        ({"alpha": [0.0]}, r"alpha: needs one number per layer of layer_weights \(5"),
        ({"antialiased": True}, r"antialiased: the antialiased VGG19"),
        ({"num_proj_fd": 0}, r"num_proj_fd: must be >= 1"),
    ],
)
def test_perceptual_settings_errors_name_the_key(
    keys: dict[str, Any], message: str, vgg_path: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^perceptualloss: {message}"):
        build_loss("perceptualloss", {**keys, "vgg_weights_path": vgg_path})


def test_perceptual_fd_projections_fit_small_feature_maps(vgg_path: str) -> None:
    # relu5_4 of a 16 px image is 1x1: smaller than the 5x5 projections.
    loss = build_loss(
        "perceptualloss", {"criterion": "fd", "num_proj_fd": 8, "vgg_weights_path": vgg_path}
    )
    gt = smooth_image(1, size=16)
    assert math.isfinite(loss(distorted(gt, 0.1), gt).item())


# --- option validation -------------------------------------------------------------

TEMPLATE_LOSSES_OFF: list[dict[str, Any]] = [
    {"type": "perceptualloss", "criterion": "charbonnier", "loss_weight": 0},
    {"type": "hsluvloss", "criterion": "charbonnier", "loss_weight": 0},
    {"type": "ldlloss", "loss_weight": 0},
    {"type": "ffloss", "loss_weight": 0},
    {"type": "cosimloss", "loss_weight": 0},
    {"type": "fliploss", "loss_weight": 0},
    {"type": "sobeledgeloss", "loss_weight": 0},
    {"type": "mssimloss", "loss_weight": 0},
    {"type": "psnrloss", "loss_weight": 0},
    {"type": "charbonnierloss", "loss_weight": 0},
]


def options_with(losses: list[dict[str, Any]], **train: Any) -> dict[str, Any]:
    data = base_options(Path("/unused"), Path("/unused"))
    data["train"]["losses"] = [{"type": "l1loss", "loss_weight": 1.0}, *losses]
    data["train"].update(train)
    return data


def load(data: dict[str, Any]) -> Any:
    return validate(decode_options(data), for_training=True)


def test_losses_at_weight_0_decode_without_weights_files() -> None:
    opt = load(options_with(TEMPLATE_LOSSES_OFF, ema_decay=0))
    assert [entry["type"] for entry in opt.train.losses[1:]] == [
        entry["type"] for entry in TEMPLATE_LOSSES_OFF
    ]


def test_keys_of_a_loss_at_weight_0_are_still_checked() -> None:
    losses = [*TEMPLATE_LOSSES_OFF[:3], {"type": "fliploss", "loss_weight": 0, "foo": 1}]
    with pytest.raises(ConfigError, match=r"^train\.losses\[4\]\.foo: unknown key"):
        load(options_with(losses))
    bad_value = [{"type": "perceptualloss", "criterion": "pdl", "loss_weight": 0}]
    with pytest.raises(ConfigError, match=r"^train\.losses\[1\]\.criterion"):
        load(options_with(bad_value))


def test_perceptual_loss_on_without_weights_names_the_key_and_the_file(tmp_path: Path) -> None:
    missing = [{"type": "perceptualloss", "loss_weight": 0.01}]
    with pytest.raises(ConfigError) as caught:
        load(options_with(missing))
    message = str(caught.value)
    assert message.startswith("train.losses[1].vgg_weights_path: required key is missing")
    assert "vgg19-dcbb9e9d.pth" in message and "\n" not in message

    nowhere = str(tmp_path / "nowhere" / "vgg19-dcbb9e9d.pth")
    absent = [{"type": "perceptualloss", "loss_weight": 0.01, "vgg_weights_path": nowhere}]
    with pytest.raises(ConfigError) as caught:
        load(options_with(absent))
    message = str(caught.value)
    assert message.startswith(f"train.losses[1].vgg_weights_path: '{nowhere}' does not exist")
    assert "vgg19-dcbb9e9d.pth from" in message and "\n" not in message


def test_perceptual_settings_are_checked_with_the_options(vgg_path: str) -> None:
    entry = {"type": "perceptualloss", "loss_weight": 1, "vgg_weights_path": vgg_path}
    load(options_with([entry]))
    with pytest.raises(ConfigError, match=r"^train\.losses\[1\]\.alpha: needs one number"):
        load(options_with([{**entry, "alpha": [0.0, 1.0]}]))
    with pytest.raises(ConfigError, match=r"^train\.losses\[1\]\.antialiased"):
        load(options_with([{**entry, "antialiased": True}]))
    compat.drain_notes()
    load(options_with([{**entry, "verbose_logging": True}]))
    assert any("train.losses[1].verbose_logging: ignored" in n for n in compat.drain_notes())


def test_ldl_on_needs_ema() -> None:
    entry = {"type": "ldlloss", "loss_weight": 1.0}
    with pytest.raises(ConfigError, match=r"^train\.losses\[1\]\.type: ldlloss .*ema_decay > 0"):
        load(options_with([entry], ema_decay=0))
    load(options_with([entry], ema_decay=0.999))


def test_model_builds_only_enabled_losses_and_feeds_ldl_the_ema_output(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traiNNer.losses.ldl_loss import LDLLoss
    from traiNNer.models.sr_model import SRModel
    from traiNNer.training.knobs import Knobs
    from traiNNer.utils.dist import DistInfo

    data = base_options(tiny_dataset, tmp_path)
    data["train"]["losses"] += [*TEMPLATE_LOSSES_OFF[:2], {"type": "ldlloss", "loss_weight": 1.0}]
    opt = load(data)
    seen: list[Tensor | None] = []
    original = LDLLoss.forward

    def recording(self: LDLLoss, sr: Tensor, gt: Tensor, sr_ema: Tensor | None = None) -> Tensor:
        seen.append(sr_ema)
        return original(self, sr, gt, sr_ema)

    monkeypatch.setattr(LDLLoss, "forward", recording)
    model = SRModel(opt, torch.device("cpu"), Knobs.from_options(opt), DistInfo())
    model.setup_training(0)
    modules = [type(term.module).__name__ for term in model.loss_terms]
    assert modules == ["L1Loss", "LDLLoss"]
    batch = {"lq": torch.rand(2, 3, 16, 16), "gt": torch.rand(2, 3, 32, 32)}
    total, losses = model.compute_losses(batch, 1)
    assert torch.isfinite(total) and len(losses) == 2
    assert len(seen) == 1 and seen[0] is not None and seen[0].shape == (2, 3, 32, 32)


def test_vgg_module_is_frozen(vgg_path: str) -> None:
    loss = build_loss(
        "perceptualloss", {"criterion": "fd", "num_proj_fd": 4, "vgg_weights_path": vgg_path}
    )
    assert isinstance(loss, nn.Module)
    assert not any(parameter.requires_grad for parameter in loss.parameters())
