"""Option files are rejected before anything runs, with the YAML path in one line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import base_options, write_options
from traiNNer.config.loader import load_options
from traiNNer.utils.errors import ConfigError

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(options: dict[str, Any]) -> None:
        keys = path.split(".")
        target: Any = options
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[keys[-1]] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(options: dict[str, Any]) -> None:
        keys = path.split(".")
        target = options
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return mutate


def _add_loss(entry: dict[str, Any]) -> Mutation:
    return lambda options: options["train"]["losses"].append(entry)


BAD_CONFIGS: list[tuple[str, Mutation, str]] = [
    (
        "loss key typo",
        _add_loss({"type": "mssimloss", "loss_weigth": 0.1}),
        "train.losses[1].loss_weigth: unknown key; did you mean loss_weight?",
    ),
    ("unknown root key", _set("use_ampp", True), "use_ampp: unknown key; did you mean use_amp?"),
    ("wrong type", _set("train.total_iter", "many"), "train.total_iter: expected `int`"),
    ("out of range", _set("train.total_iter", 0), "train.total_iter: expected `int` >= 1"),
    ("scale out of range", _set("scale", 16), "scale: expected `int` <= 8"),
    ("missing name", _delete("name"), "name: required key is missing"),
    ("unknown arch", _set("network_g.type", "paragonsr2_nanoo"), "network_g.type: unknown arch"),
    (
        "arch kwarg typo",
        _set("network_g.num_feats", 8),
        "network_g.num_feats: unknown key",
    ),
    ("unknown loss", _add_loss({"type": "l3loss"}), "train.losses[1].type: unknown loss"),
    (
        "loss kwarg wrong type",
        _add_loss({"type": "charbonnierloss", "eps": "small"}),
        "train.losses[1].eps: expected `float`",
    ),
    ("unknown optimizer", _set("train.optim_g.type", "Adamm"), "train.optim_g.type: unknown"),
    ("optimizer kwarg typo", _set("train.optim_g.lrr", 1e-4), "train.optim_g.lrr: unknown key"),
    (
        "betas length",
        _set("train.optim_g.betas", [0.9]),
        "train.optim_g.betas: expected `array` of length 2",
    ),
    (
        "scheduler missing milestones",
        _set("train.scheduler", {"type": "MultiStepLR"}),
        "train.scheduler.milestones: required key is missing",
    ),
    ("unknown scheduler", _set("train.scheduler.type", "Cosinus"), "train.scheduler.type"),
    (
        "dataset key typo",
        _set("datasets.train.lq_sise", 32),
        "datasets.train.lq_sise: unknown key; did you mean lq_size?",
    ),
    ("unknown dataset type", _set("datasets.train.type", "foo"), "datasets.train.type: unknown"),
    (
        "train set without lq_size",
        _delete("datasets.train.lq_size"),
        "datasets.train.lq_size: required for a training set",
    ),
    ("unknown metric", _set("val.metrics.psnr.type", "psnr"), "val.metrics.psnr.type: unknown"),
    ("metric key typo", _set("val.metrics.psnr.crop", 4), "val.metrics.psnr.crop: unknown key"),
    (
        "logger format",
        _set("logger.save_checkpoint_format", "ckpt"),
        "logger.save_checkpoint_format",
    ),
    (
        "moa lengths",
        _set("train.moa_probs", [0.5, 0.5]),
        "train.moa_probs: has 2 entries but train.moa_augs has 5",
    ),
    (
        "automation unknown key",
        _set("train.automations", {"early_stopping": {"enabled": True, "patiense": 3}}),
        "train.automations.early_stopping.patiense: unknown key; did you mean patience?",
    ),
    (
        "unknown automation",
        _set("train.automations", {"early_stop": {"enabled": True}}),
        "train.automations.early_stop: unknown key",
    ),
    (
        "all losses off",
        _set("train.losses", [{"type": "l1loss", "loss_weight": 0}]),
        "train.losses: every loss has loss_weight 0",
    ),
    ("network scale mismatch", _set("network_g.scale", 4), "network_g.scale: differs"),
]


@pytest.mark.parametrize(
    ("label", "mutate", "expected"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_is_rejected_with_its_path(
    tmp_path: Path, tiny_dataset: Path, label: str, mutate: Mutation, expected: str
) -> None:
    options = base_options(tiny_dataset, tmp_path)
    mutate(options)
    path = write_options(tmp_path / "bad.yml", options)
    with pytest.raises(ConfigError) as info:
        load_options(path)
    message = str(info.value)
    assert expected in message, f"{label}: {message}"
    assert "\n" not in message


def test_valid_config_loads_and_converts_types(tmp_path: Path, tiny_dataset: Path) -> None:
    path = write_options(tmp_path / "ok.yml", base_options(tiny_dataset, tmp_path))
    opt = load_options(path)
    assert opt.train is not None
    assert opt.train.optim_g["betas"] == (0.9, 0.99)
    assert opt.val is not None and opt.val.metrics["psnr"].better == "higher"


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text("name: x\nscale: [2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken.yml: line \d+"):
        load_options(path)


def test_train_py_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, tiny_dataset: Path
) -> None:
    options = base_options(tiny_dataset, tmp_path)
    options["train"]["losses"][0]["loss_weigth"] = 1.0
    path = write_options(tmp_path / "bad.yml", options)
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "train.py"), "-opt", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "train.losses[0].loss_weigth: unknown key; did you mean loss_weight?" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "experiments").exists()


def test_automation_metric_must_be_a_validation_metric(tmp_path: Path, tiny_dataset: Path) -> None:
    options = base_options(tiny_dataset, tmp_path)
    options["train"]["automations"] = {"early_stopping": {"enabled": True, "metric": "lpips"}}
    with pytest.raises(ConfigError) as info:
        load_options(write_options(tmp_path / "bad.yml", options))
    assert str(info.value) == (
        "train.automations.early_stopping.metric: 'lpips' is not a validation metric "
        "(val.metrics: psnr, ssim)"
    )
    options["train"]["automations"]["early_stopping"]["metric"] = "tiny_val/ssim"
    load_options(write_options(tmp_path / "ok.yml", options))
