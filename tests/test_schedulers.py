"""LR schedules (pure functions of the iteration) and ReduceLROnPlateau fed by validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train
from tests.conftest import base_options, write_options
from traiNNer.schedulers import (
    CosineAnnealingLR,
    CosineAnnealingRestartLR,
    CosineAnnealingWarmRestarts,
    MultiStepLR,
    ReduceLROnPlateau,
    build_schedule,
    warmup_factor,
)
from traiNNer.utils.errors import ConfigError


def test_multistep_steps_at_each_milestone() -> None:
    schedule = MultiStepLR(milestones=[10, 20], gamma=0.5)
    assert [schedule.factor(i) for i in (0, 9, 10, 19, 20, 100)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


def test_cosine_runs_from_one_to_the_floor_over_total_iter() -> None:
    schedule = build_schedule("CosineAnnealing", {"eta_min": 1e-5}, total_iter=100, base_lr=1e-3)
    assert isinstance(schedule, CosineAnnealingLR)
    assert schedule.factor(0) == pytest.approx(1.0)
    assert schedule.factor(50) == pytest.approx((1 + 0.01) / 2)
    assert schedule.factor(100) == pytest.approx(0.01)
    # As torch's: past T_max the cosine goes on, back up to the LR at 2 * T_max.
    assert schedule.factor(150) == pytest.approx((1 + 0.01) / 2)
    assert schedule.factor(200) == pytest.approx(1.0)


def test_warm_restarts_restart_and_lengthen() -> None:
    schedule = CosineAnnealingWarmRestarts(T_0=10, T_mult=2)
    assert schedule.factor(0) == 1 and schedule.factor(10) == 1 and schedule.factor(30) == 1
    assert schedule.factor(20) == pytest.approx(0.5)  # halfway through the 20-long cycle


def test_linear_warmup() -> None:
    assert [warmup_factor(i, 4) for i in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert warmup_factor(0, -1) == 1.0


def test_reduce_on_plateau_counts_validations_and_respects_min_lr() -> None:
    schedule = ReduceLROnPlateau(mode="max", factor=0.5, patience=1, min_lr=2e-4)
    schedule.bind(100, 1e-3)
    decisions = [schedule.step_metric(v) for v in (30.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0)]
    assert decisions == [False, False, True, False, True, False, True]
    assert schedule.factor(0) == pytest.approx(0.2)  # 1 -> 0.5 -> 0.25 -> floor 0.2
    restored = ReduceLROnPlateau(mode="max", factor=0.5, patience=1, min_lr=2e-4)
    restored.load_state_dict(json.loads(json.dumps(schedule.state_dict())))
    assert restored.factor(0) == schedule.factor(0)
    assert restored.detector.num_bad == schedule.detector.num_bad


def test_reduce_on_plateau_in_training_gets_the_validation_metric(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = base_options(tiny_dataset, tmp_path)
    # A threshold no PSNR gain can pass: every validation after the first is a plateau.
    options["train"]["scheduler"] = {
        "type": "ReduceLROnPlateau",
        "mode": "max",
        "factor": 0.5,
        "patience": 0,
        "threshold": 100.0,
        "threshold_mode": "abs",
        "monitor": "psnr",
    }
    monkeypatch.chdir(tmp_path)
    assert train.main(["-opt", str(write_options(tmp_path / "run.yml", options))]) == 0
    state = torch.load(
        tmp_path / "experiments" / "unit_run" / "training_states" / "12.state", weights_only=True
    )
    # Validations at 4, 8, 12: the 2nd and 3rd are plateaus -> 1e-3 * 0.25.
    assert state["model"]["schedule"]["current"] == pytest.approx(0.25)
    # The last step (12) ran before its validation, at the LR after the first reduction.
    assert state["model"]["optimizer"]["param_groups"][0]["lr"] == pytest.approx(5e-4)


def test_cosine_annealing_restart_follows_its_periods_and_weights() -> None:
    schedule = CosineAnnealingRestartLR(periods=[10, 20], restart_weights=[1.0, 0.5], eta_min=0.1)
    schedule.bind(total_iter=30, base_lr=1.0)
    assert schedule.factor(0) == pytest.approx(1.0)
    assert schedule.factor(5) == pytest.approx(0.1 + 0.9 * 0.5)
    # traiNNer-redux (BasicSR): a period ends at eta_min, the restart comes one step later,
    # and weights scale the span above eta_min.
    assert schedule.factor(10) == pytest.approx(0.1)
    assert schedule.factor(20) == pytest.approx(0.1 + 0.5 * 0.9 * 0.5)
    assert schedule.factor(30) == schedule.factor(1000) == pytest.approx(0.1)  # after the last
    with pytest.raises(ConfigError, match="restart_weights"):
        CosineAnnealingRestartLR(periods=[10], restart_weights=[1.0, 1.0])


def test_no_scheduler_is_a_constant_factor_and_constantlr_is_torchs() -> None:
    assert [build_schedule(None, {}, 100, 1e-3).factor(i) for i in (0, 99)] == [1.0, 1.0]
    # torch's ConstantLR: a third of the LR for 5 iterations, then the LR.
    torch_constant = build_schedule("ConstantLR", {}, 100, 1e-3)
    assert [torch_constant.factor(i) for i in (0, 4, 5)] == pytest.approx([1 / 3, 1 / 3, 1.0])
