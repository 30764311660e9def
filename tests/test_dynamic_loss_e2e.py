"""Dynamic loss scheduling end to end: each mode moves the weights, and resumes identically."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import base_options, write_options
from tests.test_automations_e2e import tensorboard_tags

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

pytestmark = pytest.mark.slow


def options(tmp: Path, dataset: Path, mode: str) -> dict[str, Any]:
    opts = base_options(dataset, tmp)
    opts["train"]["total_iter"] = 24
    opts["train"]["losses"] = [
        {"type": "l1loss", "loss_weight": 1.0},
        {"type": "mssimloss", "loss_weight": 0.1},
        {"type": "fftloss", "loss_weight": 0.05},
    ]
    opts["train"]["dynamic_loss_scheduling"] = {
        "enabled": True,
        "mode": mode,
        "baseline_iterations": 4,
        "update_interval": 4,
        "adaptation_rate": 0.2,
    }
    if mode == "dwa":  # 6 updates in all: rates from 3, every difference taken as real
        opts["train"]["dynamic_loss_scheduling"] |= {"rate_window": 3, "noise_sigmas": 0.0}
    opts["logger"]["save_checkpoint_freq"] = 12
    return opts


def run_train(option_file: Path, cwd: Path, *extra: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-opt", str(option_file), *extra],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def weight_curves(log_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, list[float]] = {}
    for event_file in sorted(log_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            # dwa/balance decide through the automation (its decisions are the curve);
            # uncertainty's learned weights are logged with the losses.
            for prefix in ("automations/dynamic_loss_scheduling/", ""):
                if tag.startswith(f"{prefix}loss_weights/"):
                    name = tag.removeprefix(prefix)
                    curves.setdefault(name, []).extend(e.value for e in accumulator.Scalars(tag))
    return curves


def assert_identical(a: Any, b: Any, where: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("mode", ["dwa", "uncertainty", "balance"])
def test_mode_moves_weights_and_resumes_identically(
    tmp_path: Path, tiny_dataset: Path, mode: str
) -> None:
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    for folder in (reference, resumed):
        folder.mkdir()
        run_train(write_options(folder / "run.yml", options(folder, tiny_dataset, mode)), folder)

    curves = weight_curves(reference / "tb_logger" / "unit_run")
    every_loss = {"loss_weights/l_g_l1", "loss_weights/l_g_mssim", "loss_weights/l_g_fft"}
    if mode == "uncertainty":
        assert set(curves) == every_loss
    else:  # a decision per change, and every multiplier at every update
        assert curves and set(curves) <= every_loss
        tags = {
            tag.removeprefix("automations/dynamic_loss_scheduling/multiplier/")
            for tag in tensorboard_tags(reference / "tb_logger" / "unit_run")
        }
        assert {"l_g_l1", "l_g_mssim", "l_g_fft"} <= tags
    moved = [max(v) / min(v) - 1 for v in curves.values()]
    assert max(moved) > 0.01, curves  # non-trivial curves, not a 0.996-1.004 no-op

    states = resumed / "experiments" / "unit_run" / "training_states"
    (states / "24.state").unlink()
    run_train(resumed / "run.yml", resumed, "--auto_resume")
    final = [
        torch.load(folder / "experiments/unit_run/training_states/24.state", weights_only=True)
        for folder in (reference, resumed)
    ]
    # The weighting state (learned or the automation's) and the knobs it set.
    assert_identical(final[0]["automations"], final[1]["automations"], "automations")
    learned = [state["model"]["learned_loss_weights"] for state in final]
    assert (learned[0] is not None) == (mode == "uncertainty")
    assert_identical(learned[0], learned[1], "learned_loss_weights")
    for name, tensor in final[0]["model"]["net_g"].items():
        assert torch.equal(tensor, final[1]["model"]["net_g"][name]), name
