"""augmentation_scheduling: ramped MoA probability, scaled by the metric's trend, bounded."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from traiNNer.automations.augmentation_scheduling import (
    AugmentationScheduling,
    AugmentationSchedulingConfig,
    scheduled_value,
)
from traiNNer.automations.base import Decision, Knobs, TrainInfo
from traiNNer.config.validation import convert
from traiNNer.utils.errors import ConfigError

TOTAL = 10_000


def make(start_iter: int = 0, **options: Any) -> tuple[AugmentationScheduling, Knobs]:
    automation = AugmentationScheduling(AugmentationSchedulingConfig(enabled=True, **options))
    knobs = Knobs()
    apply(knobs, automation.on_train_start(TrainInfo(TOTAL, start_iter, "cpu", False), knobs))
    return automation, knobs


def apply(knobs: Knobs, decisions: list[Decision]) -> list[Decision]:
    for decision in decisions:
        knobs.set(decision.parameter, decision.new)
    return decisions


def ramp(
    automation: AugmentationScheduling, knobs: Knobs, start: int = 100, stop: int = TOTAL
) -> tuple[list[float], list[Decision]]:
    values, decisions = [], []
    for iteration in range(start, stop + 1, automation.interval):
        decisions += apply(knobs, automation.on_interval(iteration, knobs))
        values.append(knobs.aug_prob)
    return values, decisions


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ramp_rises_to_end_prob_in_few_steps_and_never_above(schedule: str) -> None:
    automation, knobs = make(schedule=schedule, start_prob=0.1, end_prob=0.6, steps=10)
    assert knobs.aug_prob == pytest.approx(0.1)
    values, decisions = ramp(automation, knobs)
    assert values == sorted(values)  # monotone
    assert max(values) <= 0.6
    assert values[-1] == pytest.approx(0.6)
    assert len(decisions) == 10  # one per step of progress, not one per interval
    assert all(d.bounds == (0.0, 0.6) for d in decisions)


def test_ramp_window_holds_start_before_and_end_after() -> None:
    automation, knobs = make(start_prob=0.0, end_prob=0.8, ramp_start=0.2, ramp_end=0.5)
    values, _ = ramp(automation, knobs)
    by_iteration = dict(zip(range(100, TOTAL + 1, 100), values, strict=True))
    assert by_iteration[1900] == 0.0
    assert by_iteration[5000] == pytest.approx(0.8)
    assert by_iteration[9000] == pytest.approx(0.8)


def test_scheduled_value_stays_between_its_endpoints() -> None:
    for progress in [i / 50 for i in range(-5, 56)]:
        for schedule in ("linear", "cosine"):
            value = scheduled_value(schedule, 0.7, 0.2, progress)  # a falling ramp too
            assert 0.2 <= value <= 0.7


def validate(
    automation: AugmentationScheduling, knobs: Knobs, metric: list[float]
) -> list[tuple[int, Decision]]:
    out = []
    for index, value in enumerate(metric):
        iteration = 1000 * (index + 1)
        decisions = apply(knobs, automation.after_validation(iteration, {"psnr": value}, knobs))
        out += [(iteration, d) for d in decisions]
    return out


def noisy(values: list[float], seed: int = 0, sigma: float = 0.01) -> list[float]:
    generator = random.Random(seed)
    return [v + generator.gauss(0.0, sigma) for v in values]


def test_a_metric_that_falls_with_confidence_lowers_by_the_factor() -> None:
    automation, knobs = make(schedule="constant", end_prob=0.8, metric="psnr", window=5)
    decisions = validate(automation, knobs, noisy([30.0 - 0.1 * i for i in range(10)]))
    # Two windows of 5 validations, both falling: one lowering at the 10th.
    assert [(iteration, d.new) for iteration, d in decisions] == [(10_000, 0.4)]
    assert "fell with confidence" in decisions[0][1].reason


@pytest.mark.parametrize("seed", range(5))
def test_a_plateau_or_noise_never_lowers(seed: int) -> None:
    automation, knobs = make(schedule="constant", end_prob=0.8, metric="psnr")
    flat = noisy([30.0] * 200, seed=seed, sigma=0.05)
    assert validate(automation, knobs, flat) == []
    rising = noisy([30.0 + 0.01 * i for i in range(200)], seed=seed, sigma=0.05)
    assert validate(automation, knobs, rising) == []
    assert knobs.aug_prob == 0.8


def test_the_penalty_recovers_when_the_metric_rises_again() -> None:
    automation, knobs = make(schedule="constant", end_prob=0.8, metric="psnr", window=4)
    falling = [30.0 - 0.1 * i for i in range(8)]
    rising = [29.2 + 0.1 * i for i in range(8)]
    decisions = validate(automation, knobs, noisy(falling + rising))
    assert [d.new for _, d in decisions] == [0.4, 0.8]  # lowered, then back, never above
    assert "rose with confidence" in decisions[1][1].reason
    assert automation.penalty == 1.0


def test_min_prob_is_a_floor_and_a_fresh_window_spaces_the_lowerings() -> None:
    automation, knobs = make(
        schedule="constant", end_prob=0.8, metric="psnr", window=3, min_prob=0.15
    )
    decisions = validate(automation, knobs, [30.0 - i for i in range(24)])
    # One lowering per two fresh windows of 3 validations; the floor ends the decisions.
    assert [iteration for iteration, _ in decisions] == [6000, 12_000, 18_000]
    assert [d.new for _, d in decisions] == [0.4, 0.2, 0.15]
    assert knobs.aug_prob == 0.15


def test_a_non_finite_validation_is_ignored() -> None:
    automation, knobs = make(schedule="constant", end_prob=0.8, metric="psnr", window=3)
    assert validate(automation, knobs, [30.0, math.nan, 30.1, math.inf]) == []
    assert [v for _, v in automation.history] == [30.0, 30.1]


def test_lowering_persists_through_the_ramp_and_never_exceeds_end_prob() -> None:
    automation, knobs = make(start_prob=0.2, end_prob=0.6, metric="psnr", window=3)
    validate(automation, knobs, [30.0 - i for i in range(6)])  # confirmed fall: penalty 0.5
    values, _ = ramp(automation, knobs)
    assert values[-1] == pytest.approx(0.3)
    assert max(values) <= 0.6


def test_config_rejects_an_inverted_ramp_window() -> None:
    with pytest.raises(ConfigError, match="ramp_start"):
        convert(
            {"ramp_start": 0.8, "ramp_end": 0.2},
            AugmentationSchedulingConfig,
            "train.automations.augmentation_scheduling",
        )
    with pytest.raises(ConfigError, match=r"end_prob"):
        convert(
            {"end_prob": 1.5},
            AugmentationSchedulingConfig,
            "train.automations.augmentation_scheduling",
        )


def test_state_round_trip_gives_identical_later_decisions() -> None:
    options = {"start_prob": 0.1, "end_prob": 0.9, "metric": "psnr", "window": 3}
    metric = [30.0 - 0.3 * i for i in range(20)]  # a validation every 500 iterations

    def run(automation: AugmentationScheduling, knobs: Knobs, first: int, last: int) -> list[Any]:
        out = []
        for iteration in range(first, last + 1, 100):
            out += [
                (iteration, d.new) for d in apply(knobs, automation.on_interval(iteration, knobs))
            ]
            if iteration % 500 == 0:
                value = metric[iteration // 500 - 1]
                decisions = automation.after_validation(iteration, {"psnr": value}, knobs)
                out += [(iteration, d.new) for d in apply(knobs, decisions)]
        return out

    full, knobs_full = make(**options)
    expected = run(full, knobs_full, 100, TOTAL)
    first, knobs_first = make(**options)
    before = run(first, knobs_first, 100, 5000)
    resumed = AugmentationScheduling(AugmentationSchedulingConfig(enabled=True, **options))
    resumed.load_state_dict(first.state_dict())
    knobs_resumed = Knobs()
    apply(
        knobs_resumed, resumed.on_train_start(TrainInfo(TOTAL, 5000, "cpu", False), knobs_resumed)
    )
    assert knobs_resumed.aug_prob == knobs_first.aug_prob
    after = run(resumed, knobs_resumed, 5100, TOTAL)
    assert before + after == expected
    assert resumed.penalty < first.penalty < 1.0  # lowered before and after the resume
