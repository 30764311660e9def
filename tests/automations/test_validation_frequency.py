"""validation_frequency: interval follows the metric's progress, always within bounds."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from traiNNer.automations.base import Decision, Knobs, TrainInfo
from traiNNer.automations.validation_frequency import (
    ValidationFrequency,
    ValidationFrequencyConfig,
    improvement_rate,
)
from traiNNer.config.validation import convert
from traiNNer.utils.errors import ConfigError, UserError

OPTIONS: dict[str, Any] = {"min_interval": 250, "max_interval": 4000, "cooldown": 0, "window": 3}


def make(val_interval: int = 1000, **options: Any) -> tuple[ValidationFrequency, Knobs]:
    automation = ValidationFrequency(
        ValidationFrequencyConfig(enabled=True, **{**OPTIONS, **options})
    )
    knobs = Knobs(val_interval=val_interval)
    apply(knobs, automation.on_train_start(TrainInfo(200_000, 0, "cpu", False), knobs))
    return automation, knobs


def apply(knobs: Knobs, decisions: list[Decision]) -> list[Decision]:
    for decision in decisions:
        knobs.set(decision.parameter, decision.new)
    return decisions


def grew(decision: Decision) -> bool:
    assert isinstance(decision.new, int) and isinstance(decision.old, int)
    return decision.new > decision.old


def run(
    automation: ValidationFrequency, knobs: Knobs, metric_at: Any, validations: int, start: int = 0
) -> tuple[list[int], list[Decision], int]:
    """Validate at the knob's interval; return the intervals used and the decisions."""
    iteration, intervals, decisions = start, [], []
    for _ in range(validations):
        iteration += knobs.val_interval
        intervals.append(knobs.val_interval)
        decisions += apply(
            knobs, automation.after_validation(iteration, {"psnr": metric_at(iteration)}, knobs)
        )
    return intervals, decisions, iteration


def fast(iteration: int) -> float:
    return 25.0 * math.exp(0.02 * iteration / 1000)  # 2% (0.5 dB and more) per 1000


def flat(iteration: int) -> float:
    return 30.0 + 0.0001 * ((iteration // 250) % 3)  # wobbles by 0.0001 dB


def test_fast_progress_grows_the_interval_up_to_max_only() -> None:
    automation, knobs = make()
    intervals, decisions, _ = run(automation, knobs, fast, 20)
    assert intervals[-1] == 4000
    assert max(intervals) == 4000
    assert all(grew(d) for d in decisions)
    assert all(d.bounds == (250.0, 4000.0) for d in decisions)
    assert "validate less often" in decisions[0].reason


def test_plateau_shrinks_the_interval_down_to_min_only() -> None:
    automation, knobs = make(val_interval=4000)
    intervals, decisions, _ = run(automation, knobs, flat, 20)
    assert intervals[-1] == 250 and min(intervals) == 250
    assert not any(grew(d) for d in decisions)
    assert "near a plateau" in decisions[0].reason


def test_degrading_metric_shrinks_the_interval() -> None:
    automation, knobs = make()
    _, decisions, _ = run(automation, knobs, lambda it: 30.0 - it * 1e-5, 3)
    assert decisions and decisions[0].new == 500


def test_moderate_progress_keeps_the_interval() -> None:
    automation, knobs = make()
    # 0.01 dB per 1000 iterations: between slow_rate 0.001 and fast_rate 0.05 dB.
    _, decisions, _ = run(automation, knobs, lambda it: 30.0 + 0.01 * it / 1000, 10)
    assert decisions == []
    assert knobs.val_interval == 1000


def test_rate_is_per_iteration_so_a_longer_interval_is_not_faster_progress() -> None:
    short = [(1000, 30.0), (2000, 30.03), (3000, 30.06)]
    long = [(4000, 30.0), (8000, 30.12), (12000, 30.24)]
    assert improvement_rate(short, "higher")[0] == pytest.approx(0.03)  # dB per 1000
    assert improvement_rate(long, "higher")[0] == pytest.approx(0.03)
    assert improvement_rate([(0, 0.2), (1000, 0.19)], "lower")[0] > 0  # lower is better
    assert improvement_rate([(0, 30.0), (1000, math.nan)], "higher")[0] == -math.inf


def test_noise_within_the_rates_moves_nothing() -> None:
    # 0.01 dB per 1000 iterations under 0.05 dB of validation noise: neither fast nor slow.
    generator = random.Random(12)
    automation, knobs = make(window=6)
    _, decisions, _ = run(
        automation, knobs, lambda it: 30.0 + 0.01 * it / 1000 + generator.gauss(0, 0.05), 150
    )
    assert decisions == []


def test_bounds_default_to_half_and_twice_the_configured_val_freq() -> None:
    automation = ValidationFrequency(ValidationFrequencyConfig(enabled=True, cooldown=0, window=3))
    knobs = Knobs(val_interval=1000)
    automation.on_train_start(TrainInfo(200_000, 0, "cpu", False, val_freq=1000), knobs)
    intervals, _, _ = run(automation, knobs, flat, 10)
    assert min(intervals) == 500
    intervals, _, _ = run(automation, knobs, fast, 10, start=20_000)
    assert max(intervals) == 2000


def test_configured_interval_outside_bounds_is_clamped_at_start() -> None:
    _, knobs = make(val_interval=10)
    assert knobs.val_interval == 250


def test_disabled_validation_stays_disabled() -> None:
    _, knobs = make(val_interval=0)
    assert knobs.val_interval == 0


def test_cooldown_spaces_out_changes() -> None:
    automation, knobs = make(val_interval=4000, cooldown=2)
    _, decisions, _ = run(automation, knobs, flat, 9)
    # Changes at validations 3 (the first full window), 6 and 9 (two quiet ones after each).
    assert [d.new for d in decisions] == [2000, 1000, 500]


def test_missing_metric_names_the_option() -> None:
    automation, knobs = make(metric="lpips")
    with pytest.raises(UserError, match=r"validation_frequency\.metric.*lpips.*psnr"):
        automation.after_validation(1000, {"psnr": 30.0}, knobs)


def test_config_checks_bounds_and_rates() -> None:
    prefix = "train.automations.validation_frequency"
    with pytest.raises(ConfigError, match="min_interval"):
        convert({"min_interval": 5000, "max_interval": 1000}, ValidationFrequencyConfig, prefix)
    with pytest.raises(ConfigError, match="slow_rate"):
        convert({"slow_rate": 0.1, "fast_rate": 0.01}, ValidationFrequencyConfig, prefix)


def test_state_round_trip_gives_identical_later_decisions() -> None:
    def metric(iteration: int) -> float:
        return fast(iteration) if iteration < 20_000 else fast(20_000) + flat(iteration) - 30

    full, knobs_full = make()
    expected_intervals, expected, _ = run(full, knobs_full, metric, 30)

    first, knobs_first = make()
    intervals_a, decisions_a, iteration = run(first, knobs_first, metric, 7)
    resumed = ValidationFrequency(ValidationFrequencyConfig(enabled=True, **OPTIONS))
    resumed.load_state_dict(first.state_dict())
    knobs_resumed = Knobs(val_interval=1000)  # the option file's val_freq
    start = apply(
        knobs_resumed,
        resumed.on_train_start(TrainInfo(200_000, iteration, "cpu", False), knobs_resumed),
    )
    assert knobs_resumed.val_interval == knobs_first.val_interval
    assert all("resume" in d.reason for d in start)
    intervals_b, decisions_b, _ = run(resumed, knobs_resumed, metric, 23, start=iteration)
    assert intervals_a + intervals_b == expected_intervals
    assert [(d.old, d.new) for d in decisions_a + decisions_b] == [(d.old, d.new) for d in expected]
    assert decisions_b  # the part after the resume still decides
