"""regularization_scheduling: weight decay ramp, overfitting raise, bounds, resume."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch

from tests.host_reads import host_reads_forbidden
from traiNNer.automations.base import Decision, Knobs, StepRecord, TrainInfo
from traiNNer.automations.regularization_scheduling import (
    RegularizationScheduling,
    RegularizationSchedulingConfig,
)
from traiNNer.config.validation import convert
from traiNNer.utils.errors import ConfigError

TOTAL = 10_000


def make(start_iter: int = 0, **options: Any) -> tuple[RegularizationScheduling, Knobs]:
    automation = RegularizationScheduling(RegularizationSchedulingConfig(enabled=True, **options))
    knobs = Knobs(weight_decay=1e-4)
    apply(knobs, automation.on_train_start(TrainInfo(TOTAL, start_iter, "cpu", False), knobs))
    return automation, knobs


def apply(knobs: Knobs, decisions: list[Decision]) -> list[Decision]:
    for decision in decisions:
        knobs.set(decision.parameter, decision.new)
    return decisions


def number(decision: Decision) -> float:
    assert isinstance(decision.new, int | float)
    return float(decision.new)


def step(iteration: int, loss: float, key: str = "l_g_total") -> StepRecord:
    return StepRecord(iteration, {key: torch.tensor(loss)}, {}, {}, None, 0.0, None, 2)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedule_ramps_from_start_to_end_within_bounds(schedule: str) -> None:
    automation, knobs = make(schedule=schedule, start=0.04, end=0.4, max_weight_decay=0.5)
    assert knobs.weight_decay == pytest.approx(0.04)
    values, decisions = [], []
    for iteration in range(100, TOTAL + 1, automation.interval):
        decisions += apply(knobs, automation.on_interval(iteration, knobs))
        values.append(knobs.weight_decay)
    assert values == sorted(values)
    assert values[-1] == pytest.approx(0.4)
    assert all(0.04 <= v <= 0.4 for v in values)
    assert len(decisions) == 20  # `steps` changes, not one per interval
    assert all(d.bounds == (0.0, 0.5) for d in decisions)


def test_cosine_starts_slower_than_linear() -> None:
    cosine, knobs_c = make(schedule="cosine", start=0.0, end=1e-3)
    linear, knobs_l = make(schedule="linear", start=0.0, end=1e-3)
    apply(knobs_c, cosine.on_interval(2000, knobs_c))
    apply(knobs_l, linear.on_interval(2000, knobs_l))
    assert 0 < knobs_c.weight_decay < knobs_l.weight_decay


def feed(
    automation: RegularizationScheduling, knobs: Knobs, losses: list[float], metrics: list[float]
) -> list[tuple[int, Decision]]:
    """Each validation follows 10 steps at the given mean loss."""
    out = []
    iteration = 0
    for loss, metric in zip(losses, metrics, strict=True):
        for _ in range(10):
            iteration += 1
            automation.observe_step(step(iteration, loss))
        decisions = apply(knobs, automation.after_validation(iteration, {"psnr": metric}, knobs))
        out += [(iteration, d) for d in decisions]
    return out


def test_falling_loss_with_a_falling_metric_raises_weight_decay() -> None:
    automation, knobs = make(schedule="constant", end=1e-3, overfit_metric="psnr", patience=2)
    losses = [0.10 - 0.005 * i for i in range(12)]
    # Flat, then falling with confidence: a stalled metric alone is not a gap.
    metrics = [30.2, 30.21, 30.2, 30.21, 30.2, 30.21, 30.2, 30.1, 30.0, 29.9, 29.8, 29.7]
    decisions = feed(automation, knobs, losses, metrics)
    assert decisions and "training loss fell" in decisions[0][1].reason
    assert decisions[0][1].new == pytest.approx(1.5e-3)
    assert (
        feed(
            *make(schedule="constant", end=1e-3, overfit_metric="psnr", patience=2),
            losses,
            [30.2, 30.21] * 6,
        )
        == []
    )


def test_improving_metric_or_flat_loss_is_not_overfitting() -> None:
    automation, knobs = make(schedule="constant", end=1e-3, overfit_metric="psnr", patience=1)
    assert (
        feed(
            automation, knobs, [0.1 - 0.01 * i for i in range(8)], [30 + 0.1 * i for i in range(8)]
        )
        == []
    )
    automation, knobs = make(schedule="constant", end=1e-3, overfit_metric="psnr", patience=1)
    assert feed(automation, knobs, [0.05] * 8, [30.0] * 8) == []
    assert knobs.weight_decay == 1e-3


def test_raises_never_leave_the_bounds() -> None:
    automation, knobs = make(
        schedule="constant", end=1e-3, max_weight_decay=4e-3, overfit_metric="psnr", patience=1
    )
    losses = [1.0 * 0.9**i for i in range(30)]
    decisions = feed(automation, knobs, losses, [30.0 - 0.1 * i for i in range(30)])
    values = [number(d) for _, d in decisions]
    assert values and max(values) == 4e-3
    assert all(d.bounds == (0.0, 4e-3) for _, d in decisions)
    assert knobs.weight_decay == 4e-3
    # Once at the bound, further overfitting changes nothing.
    assert decisions[-1][1].new == 4e-3 and len(values) == len(set(values))


def test_skipped_nonfinite_losses_do_not_poison_the_mean() -> None:
    automation, knobs = make(schedule="constant", end=1e-3, overfit_metric="psnr")
    for iteration, loss in enumerate([0.2, math.nan, 0.4, math.inf], start=1):
        automation.observe_step(step(iteration, loss))
    automation.after_validation(4, {"psnr": 30.0}, knobs)
    assert automation.scalars()["train_loss_mean"] == pytest.approx(0.3)


def test_missing_loss_key_falls_back_to_the_sum_of_losses() -> None:
    automation, knobs = make(schedule="constant", end=1e-3, overfit_metric="psnr")
    record = StepRecord(
        1, {"l_g_l1": torch.tensor(0.1), "l_g_ssim": torch.tensor(0.2)}, {}, {}, None, 0.0, None, 2
    )
    automation.observe_step(record)
    automation.after_validation(1, {"psnr": 30.0}, knobs)
    assert automation.scalars()["train_loss_mean"] == pytest.approx(0.3)


def test_observe_step_reads_nothing_on_the_host() -> None:
    automation, knobs = make(schedule="constant", end=1e-3, overfit_metric="psnr")
    records = [step(i, 0.1 * i) for i in range(1, 5)]
    with host_reads_forbidden():
        for record in records:
            automation.observe_step(record)
    automation.after_validation(4, {"psnr": 30.0}, knobs)
    assert automation.scalars()["train_loss_mean"] == pytest.approx(0.25)


def test_config_keeps_start_and_end_inside_the_bounds() -> None:
    prefix = "train.automations.regularization_scheduling"
    with pytest.raises(ConfigError, match=r"end \(0.5\).*max_weight_decay"):
        convert({"end": 0.5, "max_weight_decay": 0.1}, RegularizationSchedulingConfig, prefix)
    with pytest.raises(ConfigError, match="min_weight_decay"):
        convert(
            {"min_weight_decay": 0.2, "max_weight_decay": 0.1},
            RegularizationSchedulingConfig,
            prefix,
        )


def test_state_round_trip_gives_identical_later_decisions() -> None:
    options = {"start": 1e-4, "end": 1e-3, "overfit_metric": "psnr", "patience": 1}
    losses = [0.1 * 0.95**i for i in range(10)]
    metrics = [30.6 - 0.05 * i for i in range(10)]  # falling: raises from the 8th validation

    def run(automation: RegularizationScheduling, knobs: Knobs, first: int, last: int) -> list[Any]:
        out = []
        for iteration in range(first, last + 1):
            automation.observe_step(step(iteration, losses[(iteration - 1) // 1000]))
            if iteration % automation.interval == 0:
                out += [
                    (iteration, d.new)
                    for d in apply(knobs, automation.on_interval(iteration, knobs))
                ]
            if iteration % 1000 == 0:
                metric = {"psnr": metrics[iteration // 1000 - 1]}
                out += [
                    (iteration, d.new)
                    for d in apply(knobs, automation.after_validation(iteration, metric, knobs))
                ]
        return out

    full, knobs_full = make(**options)
    expected = run(full, knobs_full, 1, TOTAL)
    first, knobs_first = make(**options)
    before = run(first, knobs_first, 1, 4500)  # checkpoint between two validations
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = RegularizationScheduling(RegularizationSchedulingConfig(enabled=True, **options))
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    knobs_resumed = Knobs(weight_decay=1e-4)
    apply(
        knobs_resumed, resumed.on_train_start(TrainInfo(TOTAL, 4500, "cpu", False), knobs_resumed)
    )
    assert knobs_resumed.weight_decay == knobs_first.weight_decay
    after = run(resumed, knobs_resumed, 4501, TOTAL)
    assert before + after == expected
    assert resumed.multiplier > 1.0  # the overfitting raise is part of the stream
