"""Schedule-free optimizers train, validate, save and resume, alone and in the race.

schedulefree's optimizers raise unless they are in train mode when they step, and
evaluate the wrong weights unless they are in eval mode when the model is validated or
saved; the model switches them at each of those points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import train
from tests.conftest import base_options, write_options
from traiNNer.models.sr_model import SRModel

pytestmark = pytest.mark.slow


def run(tmp_path: Path, options: dict[str, Any], *extra: str) -> int:
    return train.main(["-opt", str(write_options(tmp_path / "run.yml", options)), *extra])


def test_adamw_schedule_free_trains_validates_saves_and_resumes(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    options = base_options(tiny_dataset, tmp_path)
    options["train"]["optim_g"] = {"type": "adamwschedulefree", "lr": 1e-3, "warmup_steps": 2}
    options["train"]["scheduler"] = None
    options["train"]["total_iter"] = 8
    options["logger"]["save_checkpoint_freq"] = 4
    assert run(tmp_path, options) == 0
    experiment = tmp_path / "experiments" / "unit_run"
    assert (experiment / "models" / "net_g_latest.safetensors").is_file()
    options["train"]["total_iter"] = 12
    assert run(tmp_path, options, "--auto_resume") == 0
    assert (experiment / "training_states" / "12.state").is_file()


def test_the_race_with_a_schedule_free_candidate_runs_after_warmup(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    learning_rates: list[float] = []
    original = SRModel.optimize_parameters

    def optimize(model: SRModel, batch: Any, iteration: int, micro_batch: int | None = None) -> Any:
        assert model.optimizer is not None
        learning_rates.append(float(model.optimizer.param_groups[0]["lr"]))
        return original(model, batch, iteration, micro_batch)

    monkeypatch.setattr(SRModel, "optimize_parameters", optimize)
    options = base_options(tiny_dataset, tmp_path)
    options["train"]["optim_g"] = {"type": "adamw", "lr": 1e-3}
    options["train"]["scheduler"] = None
    options["train"]["warmup_iter"] = 100
    options["train"]["total_iter"] = 4
    options["train"]["automations"] = {
        "optimizer_selection": {
            "enabled": True,
            "candidates": ["adamw", "adamwschedulefree"],
            "trial_iterations": 3,
        }
    }
    assert run(tmp_path, options) == 0
    race, training = learning_rates[:6], learning_rates[6:]
    # The race steps at the LR training reaches after warmup; training itself warms up.
    assert race == pytest.approx([1e-3] * 6)
    assert training[0] < 1e-4
    assert torch.isfinite(torch.tensor(learning_rates)).all()
