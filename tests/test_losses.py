"""Behaviour of the registered training losses."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim
from safetensors.torch import save_file
from torch import Tensor, nn

from traiNNer.losses import LOSS_REGISTRY, build_loss
from traiNNer.losses.ssim_losses import MS_SSIM_WEIGHTS, ms_ssim_levels
from traiNNer.utils.errors import ConfigError, UserError

SIMPLE_LOSSES: list[tuple[str, dict[str, Any]]] = [
    ("l1loss", {}),
    ("mseloss", {}),
    ("charbonnierloss", {}),
    ("ssimloss", {}),
    ("mssimloss", {}),
    ("msssimloss", {}),
    ("msssiml1loss", {}),
    ("fftloss", {}),
    ("fftloss", {"mode": "amplitude"}),
    ("ffloss", {}),
    ("ffloss", {"patch_factor": 2, "log_matrix": True, "batch_matrix": True}),
    ("ffloss", {"ave_spectrum": False, "alpha": 0.5}),
]
# The textbook MS-SSIM (all channels, luminance at the coarsest level), which
# pytorch-msssim computes; mssimloss defaults to traiNNer-redux's luma-only variant.
TEXTBOOK_MS_SSIM = {"test_y_channel": False, "include_luminance": True}
ALL_LOSSES = [*SIMPLE_LOSSES, ("perceptualloss", {})]
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def torchvision_vgg19() -> nn.Module:
    from torchvision.models import vgg19

    torch.manual_seed(0)
    return vgg19(weights=None).eval()


def vgg_features(model: nn.Module) -> nn.Sequential:
    return cast(nn.Sequential, model.features)


def torchvision_state(model: nn.Module) -> dict[str, Tensor]:
    """The torchvision state dict, less the large classifier layers (kept: the last, small one)."""
    state = model.state_dict()
    return {k: v for k, v in state.items() if not k.startswith(("classifier.0", "classifier.3"))}


@pytest.fixture(scope="module")
def vgg_weights(
    torchvision_vgg19: nn.Module, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("vgg")
    state = torchvision_state(torchvision_vgg19)
    pth, safetensors = folder / "vgg19.pth", folder / "vgg19.safetensors"
    torch.save(state, pth)
    save_file({k: v.contiguous() for k, v in state.items()}, str(safetensors))
    return {"pth": str(pth), "safetensors": str(safetensors)}


def make_loss(name: str, kwargs: dict[str, Any], vgg_weights: dict[str, str]) -> nn.Module:
    if name == "perceptualloss":
        kwargs = {**kwargs, "vgg_weights_path": vgg_weights["pth"]}
    return build_loss(name, kwargs)


def image_pair(size: int = 48, batch: int = 2) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    gt = torch.rand(batch, 3, size, size, generator=generator)
    noise = 0.1 * torch.randn(batch, 3, size, size, generator=generator)
    return gt, (gt + noise).clamp(0, 1)


def test_registry_has_the_traiNNer_redux_names() -> None:
    expected = {name for name, _ in ALL_LOSSES}
    assert expected <= set(LOSS_REGISTRY.names())


@pytest.mark.parametrize(("name", "kwargs"), ALL_LOSSES)
def test_zero_for_identical_and_positive_for_different(
    name: str, kwargs: dict[str, Any], vgg_weights: dict[str, str]
) -> None:
    loss = make_loss(name, kwargs, vgg_weights)
    gt, sr = image_pair()
    same = loss(gt, gt.clone())
    different = loss(sr, gt)
    assert same.ndim == 0 and different.ndim == 0
    assert same.dtype == different.dtype == torch.float32
    # Charbonnier's floor is sqrt(eps) = 1e-6; SSIM's is rounding.
    assert 0 <= same.item() < 1e-5
    assert different.item() > 100 * max(same.item(), 1e-6)


@pytest.mark.parametrize(("name", "kwargs"), ALL_LOSSES)
def test_gradients_reach_the_prediction(
    name: str, kwargs: dict[str, Any], vgg_weights: dict[str, str]
) -> None:
    loss = make_loss(name, kwargs, vgg_weights)
    gt, sr = image_pair()
    sr.requires_grad_(True)
    loss(sr, gt).backward()
    assert sr.grad is not None
    assert torch.isfinite(sr.grad).all()
    assert sr.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "kwargs"), ALL_LOSSES)
def test_bf16_autocast(name: str, kwargs: dict[str, Any], vgg_weights: dict[str, str]) -> None:
    loss = make_loss(name, kwargs, vgg_weights)
    # Small: bf16 convolutions are slow on CPU.
    gt, sr = image_pair(size=32, batch=1)
    reference = loss(sr, gt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_precision_prediction = sr.bfloat16().requires_grad_(True)
        value = loss(low_precision_prediction, gt)
        same_inputs = loss(sr, gt)
    value.backward()
    assert value.dtype == torch.float32
    assert low_precision_prediction.grad is not None
    assert torch.isfinite(low_precision_prediction.grad).all()
    # bf16 keeps ~3 significant digits of the prediction (and of VGG's activations).
    assert value.item() == pytest.approx(reference.item(), rel=5e-2)
    if name != "perceptualloss":
        # Everything but the VGG body runs in float32 even under autocast.
        assert same_inputs.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-7)


def test_charbonnier_follows_its_formula() -> None:
    gt, sr = image_pair(size=16)
    eps = 1e-3
    expected = torch.sqrt((sr - gt) ** 2 + eps).mean()
    assert build_loss("charbonnierloss", {"eps": eps})(sr, gt).item() == pytest.approx(
        expected.item(), rel=1e-6
    )


# --- MS-SSIM with small crops -------------------------------------------------


@pytest.mark.parametrize(
    ("side", "levels"), [(161, 5), (160, 4), (96, 4), (81, 4), (80, 3), (48, 3), (24, 2), (11, 1)]
)
def test_ms_ssim_levels_follow_the_documented_table(side: int, levels: int) -> None:
    assert ms_ssim_levels(side, win_size=11, max_levels=5) == levels


def test_ms_ssim_matches_pytorch_msssim_when_all_levels_fit() -> None:
    gt, sr = image_pair(size=168, batch=1)
    ours = 1 - build_loss("mssimloss", TEXTBOOK_MS_SSIM)(sr, gt)
    assert ours.item() == pytest.approx(ms_ssim(sr, gt, data_range=1.0).item(), rel=1e-5)


def test_ms_ssim_with_three_levels_matches_pytorch_msssim() -> None:
    gt, sr = image_pair(size=168, batch=1)
    weights = [0.2, 0.3, 0.5]
    ours = 1 - build_loss("mssimloss", {**TEXTBOOK_MS_SSIM, "weights": weights})(sr, gt)
    assert ours.item() == pytest.approx(
        ms_ssim(sr, gt, data_range=1.0, weights=weights).item(), rel=1e-5
    )


def test_small_crop_drops_coarse_levels_and_rescales_the_rest() -> None:
    gt, sr = image_pair(size=48)
    kept = MS_SSIM_WEIGHTS[:3]
    rescaled = [w * sum(MS_SSIM_WEIGHTS) / sum(kept) for w in kept]
    automatic = build_loss("mssimloss", {})(sr, gt)
    explicit = build_loss("mssimloss", {"weights": rescaled})(sr, gt)
    assert automatic.item() == pytest.approx(explicit.item(), rel=1e-6)


def test_one_level_ms_ssim_is_ssim() -> None:
    gt, sr = image_pair(size=16)
    ms = build_loss("mssimloss", {**TEXTBOOK_MS_SSIM, "weights": [0.25] * 4})(sr, gt)
    assert ms.item() == pytest.approx(build_loss("ssimloss", {})(sr, gt).item(), rel=1e-5)


@pytest.mark.parametrize("name", ["ssimloss", "mssimloss", "msssiml1loss"])
def test_crop_smaller_than_the_window_is_a_clear_error(name: str) -> None:
    gt, sr = image_pair(size=8)
    with pytest.raises(UserError, match=r"8x8 px are smaller than win_size 11"):
        build_loss(name, {})(sr, gt)


def test_msssiml1_mixes_its_parts_by_alpha() -> None:
    gt, sr = image_pair(size=48)
    only_ssim = build_loss("msssiml1loss", {"alpha": 1.0})(sr, gt)
    ms_ssim_loss = build_loss("mssimloss", TEXTBOOK_MS_SSIM)(sr, gt)
    assert only_ssim.item() == pytest.approx(ms_ssim_loss.item(), rel=1e-6)
    only_l1 = build_loss("msssiml1loss", {"alpha": 0.0})(sr, gt)
    mixed = build_loss("msssiml1loss", {"alpha": 0.84})(sr, gt)
    assert mixed.item() == pytest.approx(0.84 * only_ssim.item() + 0.16 * only_l1.item(), rel=1e-5)


def test_gaussian_l1_of_a_uniform_error_is_that_error() -> None:
    gt = torch.full((1, 3, 24, 24), 0.25)
    loss = build_loss("msssiml1loss", {"alpha": 0.0})(gt + 0.5, gt)
    assert loss.item() == pytest.approx(0.5, rel=1e-5)


# --- frequency losses ------------------------------------------------------------


def test_fft_amplitude_ignores_a_circular_shift_but_complex_does_not() -> None:
    gt, _ = image_pair(size=32)
    shifted = torch.roll(gt, shifts=(3, 5), dims=(-2, -1))
    assert build_loss("fftloss", {"mode": "amplitude"})(shifted, gt).item() < 1e-5
    assert build_loss("fftloss", {"mode": "complex"})(shifted, gt).item() > 1e-2


def test_ffloss_patch_factor_must_divide_the_image() -> None:
    gt, sr = image_pair(size=30)
    with pytest.raises(UserError, match="patch_factor 4 must divide the image size, got 30x30"):
        build_loss("ffloss", {"patch_factor": 4})(sr, gt)


# --- perceptual loss -------------------------------------------------------------


def test_perceptual_loss_is_torchvision_vgg19_feature_l1(
    torchvision_vgg19: nn.Module, vgg_weights: dict[str, str]
) -> None:
    gt, sr = image_pair(size=32, batch=1)
    layer_weights = {"conv1_2": 0.5, "relu2_1": 2.0, "conv3_4": 1.0}
    indices = {"conv1_2": 2, "relu2_1": 6, "conv3_4": 16}
    features = copy.deepcopy(vgg_features(torchvision_vgg19))
    # As traiNNer-redux: the first convolution replicates the border.
    first = features[0]
    assert isinstance(first, nn.Conv2d)
    first.padding_mode = "replicate"
    with torch.no_grad():
        expected = 0.0
        for name, weight in layer_weights.items():
            extractor = features[: indices[name] + 1]
            sr_map = extractor((sr - IMAGENET_MEAN) / IMAGENET_STD)
            gt_map = extractor((gt - IMAGENET_MEAN) / IMAGENET_STD)
            expected += weight * F.l1_loss(sr_map, gt_map).item()
    for file_format in ("pth", "safetensors"):
        loss = build_loss(
            "perceptualloss",
            {
                "criterion": "l1",
                "layer_weights": layer_weights,
                "vgg_weights_path": vgg_weights[file_format],
            },
        )
        assert loss(sr, gt).item() == pytest.approx(expected, rel=1e-4)


def test_perceptual_loss_accepts_the_features_state_dict_alone(
    torchvision_vgg19: nn.Module, tmp_path: Path
) -> None:
    path = tmp_path / "features.pth"
    torch.save(vgg_features(torchvision_vgg19)[:5].state_dict(), path)
    loss = build_loss(
        "perceptualloss", {"layer_weights": {"conv1_2": 1.0}, "vgg_weights_path": str(path)}
    )
    gt, sr = image_pair(size=16, batch=1)
    assert loss(sr, gt).item() > 0


def test_perceptual_loss_repeats_a_grey_channel(vgg_weights: dict[str, str]) -> None:
    loss = build_loss(
        "perceptualloss",
        {"layer_weights": {"conv2_2": 1.0}, "vgg_weights_path": vgg_weights["pth"]},
    )
    gt, sr = image_pair(size=16, batch=1)
    grey = loss(sr[:, :1], gt[:, :1])
    rgb = loss(sr[:, :1].repeat(1, 3, 1, 1), gt[:, :1].repeat(1, 3, 1, 1))
    assert grey.item() == pytest.approx(rgb.item(), rel=1e-6)


def test_missing_vgg_weights_file_says_how_to_get_them(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "vgg19.pth"
    with pytest.raises(UserError) as caught:
        build_loss("perceptualloss", {"vgg_weights_path": str(missing)})
    message = str(caught.value)
    assert str(missing) in message and "does not exist" in message
    assert "vgg19-dcbb9e9d.pth" in message and "\n" not in message


def test_vgg_weights_path_is_required() -> None:
    with pytest.raises(ConfigError, match="vgg_weights_path: required key is missing"):
        build_loss("perceptualloss", {})


def test_vgg_weights_of_another_network_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"features.0.weight": torch.zeros(8, 3, 3, 3)}, str(path))
    with pytest.raises(UserError, match=r"other\.safetensors' is not a VGG19 state dict"):
        build_loss("perceptualloss", {"vgg_weights_path": str(path)})
    wrong_shapes = tmp_path / "wrong.pth"
    torch.save(
        {"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)},
        wrong_shapes,
    )
    with pytest.raises(UserError, match=r"wrong\.pth' does not match VGG19"):
        build_loss(
            "perceptualloss",
            {"layer_weights": {"conv1_1": 1.0}, "vgg_weights_path": str(wrong_shapes)},
        )


def test_vgg_weights_need_a_known_extension(tmp_path: Path) -> None:
    path = tmp_path / "vgg19.bin"
    path.write_bytes(b"")
    with pytest.raises(UserError, match=r"must end in \.pth, \.pt or \.safetensors"):
        build_loss("perceptualloss", {"vgg_weights_path": str(path)})


def test_unknown_vgg_layer_names_the_accepted_ones(vgg_weights: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"unknown VGG19 layer 'conv5_5'; did you mean conv5_4\?"):
        build_loss(
            "perceptualloss",
            {"layer_weights": {"conv5_5": 1.0}, "vgg_weights_path": vgg_weights["pth"]},
        )


def test_vgg_is_frozen(vgg_weights: dict[str, str]) -> None:
    loss = make_loss("perceptualloss", {}, vgg_weights)
    assert not any(parameter.requires_grad for parameter in loss.parameters())


# --- build_loss --------------------------------------------------------------------


def test_build_loss_is_case_insensitive_and_ignores_model_keys() -> None:
    loss = build_loss(
        "CharbonnierLoss", {"type": "CharbonnierLoss", "loss_weight": 0.5, "eps": 1e-4}
    )
    gt = torch.zeros(1, 1, 4, 4)
    assert loss(gt, gt).item() == pytest.approx(1e-2, rel=1e-5)


def test_build_loss_rejects_unknown_names_and_keys() -> None:
    with pytest.raises(ConfigError, match=r"train\.losses\.type: unknown loss 'l2loss'"):
        build_loss("l2loss", {})
    with pytest.raises(ConfigError, match=r"train\.losses\[1\]\.epsilon: unknown key"):
        build_loss("charbonnierloss", {"epsilon": 1e-3}, path="train.losses[1]")
    with pytest.raises(ConfigError, match=r"mode"):
        build_loss("fftloss", {"mode": "phase"})


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        ("charbonnierloss", {"eps": 0.0}, "eps"),
        ("ssimloss", {"win_size": 4}, "win_size"),
        ("mssimloss", {"weights": []}, "weights"),
        ("msssiml1loss", {"alpha": 1.5}, "alpha"),
        ("ffloss", {"patch_factor": 0}, "patch_factor"),
    ],
)
def test_bad_hyperparameters_name_the_key(name: str, kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name}: {key} "):
        build_loss(name, kwargs)


def test_unreadable_vgg_weights_are_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"corrupt\.pth' could not be read") as caught:
        build_loss("perceptualloss", {"vgg_weights_path": str(path)})
    assert "\n" not in str(caught.value)
