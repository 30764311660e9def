"""traiNNer-redux's learned metrics (calculate_lpips, calculate_dists, calculate_topiq) and
distsloss, on pyiqa's networks with weights made here: local files only, never downloaded."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import Tensor

from tests.conftest import base_options
from traiNNer.config.loader import decode_options, validate
from traiNNer.losses.dists_loss import DISTSLoss
from traiNNer.metrics import (
    METRIC_REGISTRY,
    calculate_dists,
    calculate_lpips,
    calculate_topiq,
    metric_better,
)
from traiNNer.metrics.networks import DISTS, LPIPS, TOPIQ, downloads_refused, torch_hub_dir
from traiNNer.utils.errors import ConfigError, UserError

pytest.importorskip("pyiqa")

LPIPS_CHANNELS = (64, 192, 384, 256, 256)
DISTS_CHANNELS = 3 + 64 + 128 + 256 + 512 + 512


def topiq_state() -> dict[str, Tensor]:
    """A CFANet whose score falls as sr's ResNet50 features move away from gt's.

    Random backbone; every transformer block is an identity (zero output projections),
    only the deepest level's feature difference reaches the head, and the head is monotone
    (LayerNorm of (f, 0, ...) grows with f >= 0, GELU too, the last layer negates).
    """
    arch = importlib.import_module("pyiqa.archs.topiq_arch")
    net = arch.CFANet(
        semantic_model_name="resnet50",
        model_name="cfanet_fr_kadid_res50",
        backbone_pretrain=False,
        pretrained=False,
    )
    state: dict[str, Tensor] = net.state_dict()
    for key, value in state.items():
        head = any(p in key for p in ("out_proj.", "linear2.", "dim_reduce.", "score_linear."))
        if head or key in ("h_emb", "w_emb"):
            value.zero_()
    deepest = state[f"dim_reduce.{len(net.dim_reduce) - 1}.0.weight"]  # [dist, ref, diff]
    deepest[0, 2 * deepest.shape[1] // 3 :] = 1e-3
    for norm in ("score_linear.0", "score_linear.3"):
        state[f"{norm}.weight"].fill_(1.0)
    state["score_linear.1.weight"][0, 0] = 1.0
    state["score_linear.4.weight"][0, 0] = 1.0
    state["score_linear.6.weight"][0, 0] = -1.0
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every weights file, random, in the format of the file a user downloads."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    files = {
        # Non-negative linear layers, as LPIPS's are (a larger difference costs more).
        "lpips": {
            f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPS_CHANNELS)
        },
        # torchvision's full-model key names, and `features` alone: both are accepted.
        "alexnet": {
            f"features.{k}": v
            for k, v in torchvision.models.alexnet().features.state_dict().items()
        },
        "vgg16": torchvision.models.vgg16().features.state_dict(),
        "dists": {
            "alpha": torch.rand(1, DISTS_CHANNELS, 1, 1),
            "beta": torch.rand(1, DISTS_CHANNELS, 1, 1),
        },
        "topiq": {"params": topiq_state()},
    }
    paths = {name: root / f"{name}.pth" for name in files}
    for name, state in files.items():
        torch.save(state, paths[name])
    return paths


def metric_kwargs(weights: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {
        "calculate_lpips": {
            "weights_path": str(weights["lpips"]),
            "backbone_weights_path": str(weights["alexnet"]),
        },
        "calculate_dists": {
            "weights_path": str(weights["dists"]),
            "backbone_weights_path": str(weights["vgg16"]),
        },
        "calculate_topiq": {"weights_path": str(weights["topiq"])},
    }


def image_pair(size: int = 48) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    gt = torch.rand(3, size, size, generator=generator)
    distorted = (gt + 0.15 * torch.randn(3, size, size, generator=generator)).clamp(0, 1)
    return distorted, gt


def options(**val: Any) -> dict[str, Any]:
    data = base_options(Path("/unused"), Path("/unused"))
    data["val"].update(val)
    return data


def load(data: dict[str, Any]) -> Any:
    return validate(decode_options(data), for_training=True)


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pyiqa's and torchvision's caches, empty: nothing is found there."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert torch_hub_dir() == tmp_path / "torch" / "hub"
    return torch_hub_dir()


def test_registered_under_the_upstream_names_with_their_direction() -> None:
    assert METRIC_REGISTRY.get("calculate_lpips") is calculate_lpips
    assert METRIC_REGISTRY.get("calculate_dists") is calculate_dists
    assert METRIC_REGISTRY.get("calculate_topiq") is calculate_topiq
    assert metric_better(calculate_lpips) == "lower"
    assert metric_better(calculate_dists) == "lower"
    assert metric_better(calculate_topiq) == "higher"


@pytest.mark.parametrize("metric", [calculate_lpips, calculate_dists, calculate_topiq])
def test_identical_images_score_best_and_a_distorted_one_worse(
    metric: Callable[..., float], weights: dict[str, Path]
) -> None:
    kwargs = metric_kwargs(weights)[metric.__name__]
    distorted, gt = image_pair()
    best, worse = metric(gt, gt, **kwargs), metric(distorted, gt, **kwargs)
    cropped = metric(distorted, gt, crop_border=4, **kwargs)
    if metric_better(metric) == "lower":
        assert abs(best) < 1e-5 < worse
    else:
        assert best > worse
    assert cropped != worse  # crop_border is applied
    assert metric(distorted[None], gt[None], **kwargs) == worse  # 1xCHW as well
    grey = metric(distorted[:1], gt[:1], **kwargs)  # one channel: repeated to RGB
    assert grey == pytest.approx(
        metric(distorted[:1].expand(3, -1, -1), gt[:1].expand(3, -1, -1), **kwargs)
    )


def test_weights_are_found_in_the_libraries_caches(
    weights: dict[str, Path], empty_torch_home: Path
) -> None:
    cached = {
        "pyiqa/LPIPS_v0.1_alex-df73285e.pth": weights["lpips"],
        "checkpoints/alexnet-owt-7be5be79.pth": weights["alexnet"],
        "pyiqa/DISTS_weights-f5e65c96.pth": weights["dists"],
        "checkpoints/vgg16-397923af.pth": weights["vgg16"],
        "pyiqa/cfanet_fr_kadid_res50-2c4cc61d.pth": weights["topiq"],
    }
    for name, target in cached.items():
        (empty_torch_home / name).parent.mkdir(parents=True, exist_ok=True)
        (empty_torch_home / name).symlink_to(target)
    metrics = {
        "lpips": {"type": "calculate_lpips"},
        "dists": {"type": "calculate_dists"},
        "topiq": {"type": "calculate_topiq"},
    }
    opt = load(options(metrics=metrics))
    lpips = opt.val.metrics["lpips"]
    assert lpips.better == "lower" and opt.val.metrics["topiq"].better == "higher"
    assert lpips.weights_path == str(empty_torch_home / "pyiqa/LPIPS_v0.1_alex-df73285e.pth")
    assert lpips.backbone_weights_path == str(
        empty_torch_home / "checkpoints/alexnet-owt-7be5be79.pth"
    )
    distorted, gt = image_pair()
    # As validation calls them: the resolved files, and with none given, the same lookup.
    explicit = calculate_lpips(distorted, gt, **lpips.network_weights())
    assert calculate_lpips(distorted, gt) == explicit
    assert calculate_dists(distorted, gt) > 0
    assert calculate_topiq(gt, gt) > calculate_topiq(distorted, gt)


@pytest.mark.parametrize(
    ("name", "metric", "file_name"),
    [
        ("lpips", "calculate_lpips", "LPIPS_v0.1_alex-df73285e.pth"),
        ("dists", "calculate_dists", "DISTS_weights-f5e65c96.pth"),
        ("topiq", "calculate_topiq", "cfanet_fr_kadid_res50-2c4cc61d.pth"),
    ],
)
def test_missing_weights_are_one_line_errors_only_when_the_metric_runs(
    name: str, metric: str, file_name: str, empty_torch_home: Path
) -> None:
    entry = {name: {"type": metric}}
    with pytest.raises(ConfigError) as error:
        load(options(metrics=entry))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"val.metrics.{name}.weights_path: not set, and ")
    assert file_name in message and "huggingface.co/chaofengc/IQA-PyTorch-Weights" in message
    # Validation or metrics off: accepted as it is, never built.
    for off in ({"metrics_enabled": False}, {"val_enabled": False}):
        opt = load(options(metrics=entry, **off))
        assert opt.val.metrics[name].weights_path is None


def test_a_missing_backbone_or_given_file_names_its_key(
    weights: dict[str, Path], empty_torch_home: Path
) -> None:
    entry = {"type": "calculate_dists", "weights_path": str(weights["dists"])}
    with pytest.raises(
        ConfigError,
        match=r"^val\.metrics\.dists\.backbone_weights_path: not set, .*vgg16-397923af\.pth "
        r"\(torchvision's ImageNet VGG16, from https://download\.pytorch\.org/models/",
    ):
        load(options(metrics={"dists": entry}))
    entry["backbone_weights_path"] = "/nowhere/vgg16.pth"
    with pytest.raises(
        ConfigError,
        match=r"^val\.metrics\.dists\.backbone_weights_path: '/nowhere/vgg16\.pth' does not exist",
    ):
        load(options(metrics={"dists": entry}))


def test_weights_keys_and_y_channel_where_they_do_not_apply_are_errors(
    weights: dict[str, Path],
) -> None:
    psnr = {"type": "calculate_psnr", "weights_path": str(weights["lpips"])}
    with pytest.raises(
        ConfigError, match=r"val\.metrics\.psnr\.weights_path: calculate_psnr uses no"
    ):
        load(options(metrics={"psnr": psnr}))
    topiq = {"type": "calculate_topiq", "backbone_weights_path": str(weights["vgg16"])}
    with pytest.raises(ConfigError, match=r"val\.metrics\.topiq\.backbone_weights_path: .* has no"):
        load(options(metrics={"topiq": topiq}))
    lpips = {
        "type": "calculate_lpips",
        "test_y_channel": True,
        **metric_kwargs(weights)["calculate_lpips"],
    }
    with pytest.raises(ConfigError, match=r"val\.metrics\.lpips\.test_y_channel: "):
        load(options(metrics={"lpips": lpips}))


def test_a_file_of_another_network_is_a_one_line_error(weights: dict[str, Path]) -> None:
    distorted, gt = image_pair()
    with pytest.raises(
        UserError,
        match=r"^weights_path '.*dists\.pth' is not LPIPS v0\.1 AlexNet linear layers \(missing lin0",
    ):
        calculate_lpips(
            distorted,
            gt,
            weights_path=str(weights["dists"]),
            backbone_weights_path=str(weights["alexnet"]),
        )
    with pytest.raises(
        UserError, match=r"is not torchvision's ImageNet VGG16 \(missing features\.0\.weight\)"
    ):
        calculate_dists(
            distorted,
            gt,
            weights_path=str(weights["dists"]),
            backbone_weights_path=str(weights["lpips"]),
        )


def test_without_pyiqa_a_learned_metric_that_runs_says_how_to_install_it(
    weights: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyiqa" else find_spec(name, *a),
    )
    entry = {"type": "calculate_topiq", **metric_kwargs(weights)["calculate_topiq"]}
    with pytest.raises(
        ConfigError,
        match=r"^val\.metrics\.topiq\.type: calculate_topiq needs the pyiqa package; pip install",
    ):
        load(options(metrics={"topiq": entry}))
    load(options(metrics={"topiq": entry}, metrics_enabled=False))


def test_a_download_is_refused_not_attempted(empty_torch_home: Path) -> None:
    with downloads_refused(), pytest.raises(UserError, match="weights download was attempted"):
        torchvision.models.alexnet(weights="IMAGENET1K_V1")


def test_the_networks_name_their_files() -> None:
    assert [file.key for file in LPIPS.files] == ["weights_path", "backbone_weights_path"]
    assert [file.key for file in DISTS.files] == ["weights_path", "backbone_weights_path"]
    assert [file.key for file in TOPIQ.files] == ["weights_path"]


def test_distsloss_uses_the_metric_network_and_gives_gradients(weights: dict[str, Path]) -> None:
    kwargs = metric_kwargs(weights)["calculate_dists"]
    loss = DISTSLoss(**kwargs)
    distorted, gt = image_pair()
    sr = distorted[None].clone().requires_grad_(True)
    value = loss(sr, gt[None])
    assert value.ndim == 0 and value.dtype == torch.float32
    # The metric quantises to 8 bit first; the loss does not.
    assert value.item() == pytest.approx(calculate_dists(distorted, gt, **kwargs), abs=2e-3)
    value.backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    assert loss(gt[None], gt[None]).item() == pytest.approx(0.0, abs=1e-5)
    assert DISTSLoss(**kwargs, clip_min=0.5)(gt[None], gt[None]).item() == 0.5
    plain = DISTSLoss(**kwargs, use_input_norm=False)
    assert plain(distorted[None], gt[None]).item() != pytest.approx(value.item())


def test_distsloss_weights_are_checked_at_validation_unless_it_is_off(
    weights: dict[str, Path], empty_torch_home: Path
) -> None:
    data = options()
    data["train"]["losses"].append({"type": "distsloss", "loss_weight": 0.3})
    with pytest.raises(
        ConfigError, match=r"^train\.losses\[1\]\.weights_path: not set, .*DISTS_weights"
    ):
        load(data)
    data["train"]["losses"][1]["loss_weight"] = 0
    load(data)
    data["train"]["losses"][1] = {"type": "distsloss", **metric_kwargs(weights)["calculate_dists"]}
    opt = load(data)
    assert opt.train.losses[1]["weights_path"] == str(weights["dists"])
    data["train"]["losses"][1]["as_loss"] = False
    with pytest.raises(
        ConfigError, match=r"train\.losses\[1\]\.as_loss: false is traiNNer-redux's"
    ):
        load(data)
    # load_weights: false needs only the VGG16 backbone.
    del data["train"]["losses"][1]["weights_path"]
    data["train"]["losses"][1].update(as_loss=True, load_weights=False)
    assert "weights_path" not in load(data).train.losses[1]
