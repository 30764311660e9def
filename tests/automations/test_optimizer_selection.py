"""optimizer_selection: the race picks by smoothed loss, never re-races or switches."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from traiNNer.automations.base import Decision, Knobs, StepRecord, TrainInfo, TrialOutcome
from traiNNer.automations.optimizer_selection import (
    OptimizerSelection,
    OptimizerSelectionConfig,
    smoothed_loss,
)
from traiNNer.config.validation import convert
from traiNNer.utils.errors import ConfigError

CANDIDATES = ["adamw", "nadam", "adamwschedulefree", "prodigy"]


def curve(final: float, length: int = 40, noise: float = 0.0) -> list[float]:
    """A decaying loss ending near `final`, with alternating noise."""
    return [final + 0.5 * math.exp(-i / 8) + noise * (-1) ** i for i in range(length)]


OPTIM_G = {"lr": 2e-4, "weight_decay": 1e-4}


class Trials:
    """A fake trial runner: records which candidates ran, returns fixed loss curves
    (None: the candidate ran out of memory)."""

    def __init__(self, curves: dict[str, Sequence[float] | None]) -> None:
        self.curves = curves
        self.calls: list[str] = []
        self.kwargs: dict[str, dict[str, Any]] = {}

    def __call__(
        self,
        steps: int,
        *,
        batch_size: int | None = None,
        optimizer: tuple[str, dict[str, Any]] | None = None,
    ) -> TrialOutcome:
        assert optimizer is not None and batch_size is None
        name, kwargs = optimizer
        self.calls.append(name)
        self.kwargs[name] = kwargs
        result = self.curves[name]
        return TrialOutcome([], True) if result is None else TrialOutcome(list(result), False)


def make(**options: Any) -> tuple[OptimizerSelection, Knobs]:
    config = OptimizerSelectionConfig(enabled=True, candidates=CANDIDATES, **options)
    automation, knobs = OptimizerSelection(config), Knobs()
    automation.on_train_start(TrainInfo(1000, 0, "cpu", False, optim_g=OPTIM_G), knobs)
    return automation, knobs


def apply(knobs: Knobs, decisions: list[Decision]) -> list[Decision]:
    """Apply like the controller; returns the `optimizer` decisions."""
    for decision in decisions:
        knobs.set(decision.parameter, decision.new)
    return [d for d in decisions if d.parameter == "optimizer"]


def test_lowest_smoothed_loss_wins_and_every_candidate_runs_once() -> None:
    automation, knobs = make()
    trials = Trials(
        {
            "adamw": curve(0.10),
            "nadam": curve(0.09),
            "adamwschedulefree": curve(0.07),
            "prodigy": curve(0.12),
        }
    )
    decisions = apply(knobs, automation.run_startup(trials, knobs))
    assert trials.calls == CANDIDATES
    assert [(d.parameter, d.old, d.new) for d in decisions] == [
        ("optimizer", "", "adamwschedulefree")
    ]
    table = automation.table()
    assert all(name in table for name in CANDIDATES)
    assert "adamwschedulefree" in next(line for line in table.splitlines() if "winner" in line)


def test_tie_goes_to_the_configured_default() -> None:
    automation, knobs = make(default="nadam", tie_tolerance=0.02)
    trials = Trials(
        {
            "adamw": curve(0.100),
            "nadam": curve(0.101),  # within 2% of the best
            "adamwschedulefree": curve(0.2),
            "prodigy": curve(0.2),
        }
    )
    decisions = apply(knobs, automation.run_startup(trials, knobs))
    assert decisions[0].new == "nadam"
    assert "default" in decisions[0].reason
    assert {row.name: row.status for row in automation.rows}["adamw"] == "tied"


def test_default_outside_the_tie_margin_loses() -> None:
    automation, knobs = make(default="nadam", tie_tolerance=0.0)
    trials = Trials({name: curve(0.1 if name == "adamw" else 0.101) for name in CANDIDATES})
    assert apply(knobs, automation.run_startup(trials, knobs))[0].new == "adamw"


def test_smoothing_ignores_a_lucky_last_step() -> None:
    steady = curve(0.10)
    lucky = curve(0.12, noise=0.02)
    lucky[-1] = 0.05  # lowest raw final loss, but the curve is worse overall
    automation, knobs = make(smoothing="ema", ema_beta=0.9)
    trials = Trials(
        {"adamw": lucky, "nadam": steady, "adamwschedulefree": curve(0.3), "prodigy": curve(0.3)}
    )
    assert apply(knobs, automation.run_startup(trials, knobs))[0].new == "nadam"


def test_diverged_and_out_of_memory_candidates_are_out() -> None:
    automation, knobs = make()
    diverged = curve(0.01)
    diverged[20] = math.nan
    trials = Trials(
        {
            "adamw": curve(0.2),
            "nadam": diverged,
            "adamwschedulefree": curve(0.15),
            "prodigy": None,  # out of memory
        }
    )
    decisions = apply(knobs, automation.run_startup(trials, knobs))
    assert decisions[0].new == "adamwschedulefree"
    status = {row.name: row.status for row in automation.rows}
    assert status["nadam"] == "diverged" and status["prodigy"] == "failed"


def test_every_candidate_failing_falls_back_to_the_default() -> None:
    automation, knobs = make(default="prodigy")
    trials = Trials({name: [math.inf] for name in CANDIDATES})
    decisions = apply(knobs, automation.run_startup(trials, knobs))
    assert decisions[0].new == "prodigy"
    assert "default" in decisions[0].reason


def test_smoothed_loss_rules() -> None:
    losses = [4.0, 3.0, 2.0, 1.0]
    assert smoothed_loss(losses, "tail_mean", 0.9, 0.5) == pytest.approx(1.5)
    # Bias-corrected EMA of a constant is that constant.
    assert smoothed_loss([2.0] * 5, "ema", 0.9, 0.25) == pytest.approx(2.0)
    assert smoothed_loss([1.0, math.nan], "ema", 0.9, 0.25) == math.inf
    assert smoothed_loss([], "tail_mean", 0.9, 0.25) == math.inf


def test_no_hook_changes_the_optimizer_during_training() -> None:
    automation, knobs = make()
    trials = Trials({name: curve(0.1 + 0.01 * i) for i, name in enumerate(CANDIDATES)})
    apply(knobs, automation.run_startup(trials, knobs))
    chosen = knobs.optimizer
    for iteration in range(1, 2001):
        record = StepRecord(iteration, {"l_g_total": torch.tensor(9.9)}, {}, {}, None, 0.0, None, 2)
        automation.observe_step(record)
        if iteration % automation.interval == 0:
            assert automation.on_interval(iteration, knobs) == []
        if iteration % 500 == 0:
            assert automation.after_validation(iteration, {"psnr": 10.0}, knobs) == []
    assert automation.on_nonfinite(7, knobs) == []
    assert automation.on_oom(7, "train", knobs) == []
    # A second call never races again.
    assert automation.run_startup(trials, knobs) == []
    assert trials.calls == CANDIDATES
    assert knobs.optimizer == chosen


def test_resume_keeps_the_choice_without_a_new_race() -> None:
    automation, knobs = make()
    trials = Trials({name: curve(0.2 - 0.01 * i) for i, name in enumerate(CANDIDATES)})
    apply(knobs, automation.run_startup(trials, knobs))
    buffer = io.BytesIO()
    torch.save(automation.state_dict(), buffer)
    buffer.seek(0)

    resumed, knobs_resumed = make()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    start = apply(
        knobs_resumed,
        resumed.on_train_start(TrainInfo(1000, 500, "cpu", False, optim_g=OPTIM_G), knobs_resumed),
    )
    assert knobs_resumed.optimizer == "prodigy" and "resume" in start[0].reason
    fresh_trials = Trials({name: curve(0.01) for name in CANDIDATES})
    assert resumed.run_startup(fresh_trials, knobs_resumed) == []
    assert fresh_trials.calls == []
    assert resumed.table() == automation.table()


def test_candidates_train_with_optim_g_overridden_by_candidate_kwargs() -> None:
    automation, knobs = make(candidate_kwargs={"nadam": {"lr": 5e-4, "weight_decay": 0.0}})
    losses = {name: curve(0.3 - 0.05 * i) for i, name in enumerate(CANDIDATES)}
    losses["nadam"] = curve(0.01)
    trials = Trials(losses)
    assert apply(knobs, automation.run_startup(trials, knobs))[0].new == "nadam"
    assert trials.kwargs["prodigy"] == {"lr": 1.0, "weight_decay": 1e-4}  # Prodigy's own lr
    assert trials.kwargs["adamw"] == OPTIM_G
    # The winner's arguments and its own weight decay become knobs with it.
    assert knobs.optimizer_kwargs == {"lr": 5e-4, "weight_decay": 0.0}
    assert knobs.weight_decay == 0.0
    assert automation.scalars()["nadam_smoothed_loss"] < automation.scalars()["adamw_smoothed_loss"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"candidates": ["adamw", "nadam"], "default": "prodigy"}, "default 'prodigy'"),
        ({"candidates": ["adamw", "AdamW"]}, "more than once"),
        ({"candidates": ["adamw"], "candidate_kwargs": {"lion": {}}}, "candidate_kwargs"),
        ({"candidates": []}, "candidates"),
    ],
)
def test_config_errors_name_the_key(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        convert(options, OptimizerSelectionConfig, "train.automations.optimizer_selection")


def test_config_lowercases_names() -> None:
    config = convert(
        {"candidates": ["AdamW", "Prodigy"], "default": "ADAMW"},
        OptimizerSelectionConfig,
        "train.automations.optimizer_selection",
    )
    assert config.candidates == ["adamw", "prodigy"] and config.default == "adamw"
