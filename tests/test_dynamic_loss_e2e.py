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
            if tag.startswith("loss_weights/"):
                curves.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    return curves


@pytest.mark.parametrize("mode", ["dwa", "uncertainty", "balance"])
def test_mode_moves_weights_and_resumes_identically(
    tmp_path: Path, tiny_dataset: Path, mode: str
) -> None:
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    for folder in (reference, resumed):
        folder.mkdir()
        run_train(write_options(folder / "run.yml", options(folder, tiny_dataset, mode)), folder)

    curves = weight_curves(reference / "tb_logger" / "unit_run")
    assert set(curves) == {"loss_weights/l_g_l1", "loss_weights/l_g_mssim", "loss_weights/l_g_fft"}
    moved = [max(v) / min(v) - 1 for v in curves.values()]
    assert max(moved) > 0.01, curves  # non-trivial curves, not a 0.996-1.004 no-op

    states = resumed / "experiments" / "unit_run" / "training_states"
    (states / "24.state").unlink()
    run_train(resumed / "run.yml", resumed, "--auto_resume")
    final = [
        torch.load(folder / "experiments/unit_run/training_states/24.state", weights_only=True)
        for folder in (reference, resumed)
    ]
    a, b = (state["model"]["loss_scheduler"] for state in final)
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
    for name, tensor in final[0]["model"]["net_g"].items():
        assert torch.equal(tensor, final[1]["model"]["net_g"][name]), name
