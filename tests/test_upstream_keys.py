"""traiNNer-redux keys with no field here (traiNNer/config/upstream_keys.py): translated to
their meaning, dropped with a note when they cannot change the run, refused when they would."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import base_options, write_options
from tests.test_upstream_compat import load, upstream_style
from traiNNer.config.compat import drain_notes
from traiNNer.utils.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_stale_notes() -> None:
    drain_notes()


def test_gt_size_is_the_hr_crop() -> None:
    data = upstream_style()
    del data["datasets"]["train"]["lq_size"]
    data["datasets"]["train"]["gt_size"] = 64
    opt = load(data)
    assert opt.datasets["train"].lq_size == 64 // opt.scale


@pytest.mark.parametrize(
    ("train_set", "message"),
    [
        ({"gt_size": 63}, r"datasets\.train\.gt_size: must be a multiple of scale \(2\)"),
        ({"gt_size": 64, "lq_size": 16}, r"datasets\.train\.gt_size: 64 disagrees with lq_size"),
        ({"scale": 4}, r"datasets\.train\.scale: 4 differs from the root scale \(2\)"),
        ({"mean": [0.5, 0.5, 0.5]}, r"datasets\.train\.mean: dataset normalisation"),
        ({"clip_size": 5}, r"datasets\.train\.clip_size: video training"),
        ({"lq_resize_mode": "bicubic"}, r"datasets\.train\.lq_resize_mode"),
        ({"meta_info": "meta.txt"}, r"datasets\.train\.meta_info"),
        ({"type": "realesrgandataset"}, r"datasets\.train\.type: realesrgandataset"),
        ({"type": "pairedvideodataset"}, r"datasets\.train\.type: pairedvideodataset"),
    ],
)
def test_dataset_keys_that_would_change_the_run_are_refused(
    train_set: dict[str, Any], message: str
) -> None:
    data = upstream_style()
    data["datasets"]["train"].update(train_set)
    with pytest.raises(ConfigError, match=message):
        load(data)


def test_keys_upstream_fills_in_itself_are_accepted_and_noted() -> None:
    data = upstream_style(
        dist=False,
        rank=0,
        world_size=1,
        is_train=True,
        auto_resume=False,
        root_path="/somewhere",
        input_pixel_format="rgb",
        output_pixel_format="rgb",
        high_order_degradation=False,
        lq_usm=False,
        jpeg_prob=0.5,
        network_d=None,
        onnx={"dynamo": False, "opset": 20},
        find_unused_parameters=True,
    )
    data["datasets"]["train"].update(
        phase="train", scale=2, prefetch_mode="cuda", num_prefetch_queue=4, sinc_prob=0.1
    )
    data["path"].update(models="/x/models", log="/x", pretrain_network_d=None)
    data["train"].update(optim_d={"type": "AdamW", "lr": 1e-4}, eco={"enabled": False})
    data["val"]["pbar"] = True
    data["logger"]["wandb"] = {"project": "mine", "resume_id": None}
    opt = load(data)
    assert opt.find_unused_parameters is True
    notes = "\n".join(drain_notes())
    for key in (
        "rank",
        "root_path",
        "jpeg_prob",
        "lq_usm",
        "datasets.train.sinc_prob",
        "datasets.train.prefetch_mode",
        "path.models",
        "train.optim_d",
        "val.pbar",
        "logger.wandb",
        "onnx",
    ):
        assert f"{key}: ignored" in notes, key


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ({"network_d": {"type": "dunet"}}, r"^network_d: GAN training"),
        ({"high_order_degradation": True}, r"^high_order_degradation: on-the-fly degradation"),
        ({"input_pixel_format": "yuv444"}, r"^input_pixel_format: 'yuv444'"),
        ({"network_g_teacher": {"type": "span"}}, r"^network_g_teacher: a teacher network"),
    ],
)
def test_root_features_not_here_yet_are_refused_by_key(root: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(upstream_style(**root))


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("path", "pretrain_network_g_ema", "ema.pth", r"^path\.pretrain_network_g_ema"),
        ("path", "ignore_resume_networks", ["network_g"], r"^path\.ignore_resume_networks"),
        ("train", "eco", {"enabled": True}, r"^train\.eco\.enabled: ECO training"),
        ("train", "pixel_opt", "l1", r"^train\.pixel_opt: must be a loss block"),
    ],
)
def test_section_features_not_here_yet_are_refused_by_key(
    section: str, key: str, value: Any, message: str
) -> None:
    data = upstream_style()
    data[section][key] = value
    with pytest.raises(ConfigError, match=message):
        load(data)


def test_old_style_loss_blocks_join_the_losses_list() -> None:
    data = upstream_style()
    data["train"]["losses"] = [{"type": "charbonnierloss", "loss_weight": 1.0}]
    data["train"]["mssim_opt"] = {"type": "mssimloss", "loss_weight": 0.5}
    original = copy.deepcopy(data)
    opt = load(data)
    assert [loss["type"] for loss in opt.train.losses] == ["charbonnierloss", "mssimloss"]
    assert data == original, "the caller's option data was modified"


def test_restart_scheduler_decides_which_schedule_a_resumed_run_follows(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    from traiNNer.config.loader import load_options
    from traiNNer.models.sr_model import SRModel
    from traiNNer.training.knobs import Knobs
    from traiNNer.utils.dist import DistInfo

    def model_for(milestones: list[int], restart: bool) -> SRModel:
        data = base_options(tiny_dataset, tmp_path)
        data["train"]["scheduler"] = {"type": "MultiStepLR", "milestones": milestones}
        data["train"]["restart_scheduler"] = restart
        opt = load_options(write_options(tmp_path / "o.yml", data))
        model = SRModel(opt, torch.device("cpu"), Knobs.from_options(opt), DistInfo())
        model.setup_training(0)
        return model

    saved = model_for([5], restart=False).state_dict()
    # traiNNer-redux's default: the schedule the run was saved with goes on.
    kept = model_for([100], restart=False)
    kept.load_state_dict(saved)
    assert kept.schedule.factor(10) == pytest.approx(0.1)
    # restart_scheduler: true takes the option file's schedule.
    restarted = model_for([100], restart=True)
    restarted.load_state_dict(saved)
    assert restarted.schedule.factor(10) == 1.0
