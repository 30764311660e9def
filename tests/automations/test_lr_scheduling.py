"""lr_scheduling on synthetic loss and metric streams."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
import torch

from traiNNer.automations.base import Decision, Knobs, StepRecord, TrainInfo
from traiNNer.automations.controller import AutomationController
from traiNNer.automations.lr_scheduling import LRScheduling, LRSchedulingConfig
from traiNNer.config.validation import convert
from traiNNer.utils.errors import ConfigError


class Sink:
    def __init__(self) -> None:
        self.decisions: list[tuple[int, Decision]] = []

    def decision(self, iteration: int, decision: Decision, level: int = logging.INFO) -> None:
        self.decisions.append((iteration, decision))

    def scalars(self, iteration: int, automation: str, values: Any) -> None:
        pass

    def changes(self, parameter: str = "lr_multiplier") -> list[tuple[int, Any]]:
        return [(it, d.new) for it, d in self.decisions if d.parameter == parameter]


def setup(
    base_lr: float | None = 1e-3, state: dict[str, Any] | None = None, **options: Any
) -> tuple[AutomationController, Knobs, Sink]:
    """A started controller; `state` is loaded first, as on resume."""
    options.setdefault("enabled", True)
    knobs, sink = Knobs(), Sink()
    automation = LRScheduling(LRSchedulingConfig(**options))
    controller = AutomationController(None, knobs, sink, automations=[automation])
    if state is not None:
        controller.load_state_dict(state)
    controller.on_train_start(
        TrainInfo(
            total_iter=100_000,
            start_iter=0,
            device_type="cpu",
            bf16_supported=False,
            base_lr=base_lr,
            val_freq=1000,
        )
    )
    return controller, knobs, sink


def step(iteration: int, loss: float) -> StepRecord:
    return StepRecord(iteration, {"l_g_total": torch.tensor(loss)}, {}, {}, None, 0.0, None, 8)


def feed(
    controller: AutomationController,
    knobs: Knobs,
    loss_at: Callable[[int, float], float],
    first: int,
    last: int,
) -> list[float]:
    """Run iterations first..last; `loss_at(iteration, multiplier)` gives the loss. Returns multipliers."""
    multipliers = []
    for iteration in range(first, last + 1):
        multipliers.append(knobs.lr_multiplier)
        controller.observe_step(step(iteration, loss_at(iteration, knobs.lr_multiplier)))
    return multipliers


def noisy(sigma: float, seed: int, length: int) -> Callable[[int], float]:
    """Multiplicative log-normal noise with mean 1, one draw per iteration."""
    draws = torch.randn(length + 1, generator=torch.Generator().manual_seed(seed))
    return lambda iteration: math.exp(sigma * float(draws[iteration]) - sigma**2 / 2)


def improving(iteration: float) -> float:
    """A power-law training curve, like an SR L1 loss."""
    return 0.02 + 0.1 * (1 + iteration / 1000) ** -0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_noisy_but_improving_loss_never_reduces_the_lr(seed: int) -> None:
    controller, knobs, sink = setup(patience=2000)
    noise = noisy(0.3, seed, 12_000)
    feed(controller, knobs, lambda it, m: improving(it) * noise(it), 1, 12_000)
    assert sink.changes() == []
    assert knobs.lr_multiplier == 1.0


def test_constant_loss_reduces_after_patience_down_to_the_floor() -> None:
    controller, knobs, sink = setup(patience=500, check_interval=100, factor=0.5, min_lr_factor=0.1)
    feed(controller, knobs, lambda it, m: 1.0, 1, 4000)
    # A cut compares two windows of `patience` iterations: each needs 1000 fresh iterations.
    assert sink.changes() == [(1000, 0.5), (2000, 0.25), (3000, 0.125), (4000, 0.1)]
    first = sink.decisions[0][1]
    assert "improved +0.00% (+/- 0.00%) over the last 500 iterations" in first.reason


def test_absolute_min_lr_bounds_the_multiplier_through_the_base_lr() -> None:
    controller, knobs, sink = setup(
        patience=100, check_interval=100, min_lr=2.5e-4, min_lr_factor=0.01
    )
    feed(controller, knobs, lambda it, m: 1.0, 1, 3000)
    assert [new for _, new in sink.changes()] == [0.5, 0.25]
    assert knobs.lr_multiplier * 1e-3 >= 2.5e-4


def test_cooldown_spaces_reductions() -> None:
    controller, knobs, sink = setup(
        patience=200, check_interval=100, cooldown=1000, min_lr_factor=0.001
    )
    feed(controller, knobs, lambda it, m: 1.0, 1, 5000)
    iterations = [it for it, _ in sink.changes()]
    assert len(iterations) >= 2
    assert all(later - earlier >= 1000 for earlier, later in pairwise(iterations))


def test_metric_plateau_reduces_after_patience_validations_with_the_iteration_span() -> None:
    controller, _, sink = setup(
        monitor_train_loss=False, metric="val/psnr", metric_patience=2, restore_best_on_reduce=True
    )
    values = [30.0, 30.5, 31.0, 31.0, 30.99] + [31.0] * 7
    for index, value in enumerate(values, start=1):
        controller.after_validation(1000 * index, {"val/psnr": value, "psnr": value})
    # The line through the span of 2 x val_freq = 2000 iterations, 3000-5000, is flat
    # within 2.5 standard errors of metric_min_delta: a cut. The next needs a fresh span
    # after it, and its error is floored by the recent fits' noise (the rising ones).
    assert sink.changes() == [(5000, 0.5), (9000, 0.25), (12_000, 0.125)]
    reason = sink.decisions[0][1].reason
    assert "over iterations 3000-5000" in reason and "metric_min_delta 0.01" in reason
    assert [a.parameter for a in controller.pop_actions()] == ["restore_best_weights"] * 3


def test_metric_that_improves_in_its_direction_never_reduces() -> None:
    controller, _, sink = setup(
        monitor_train_loss=False, metric="lpips", metric_better="lower", metric_patience=1
    )
    for index in range(1, 20):
        controller.after_validation(1000 * index, {"lpips": 0.3 / index})
    assert sink.changes() == []


def test_missing_metric_disables_with_a_message_naming_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    controller, knobs, sink = setup(monitor_train_loss=False, metric="psnr")
    with caplog.at_level(logging.WARNING, logger="traiNNer.automations"):
        controller.after_validation(1000, {"ssim": 0.9})
    assert not controller.is_active("lr_scheduling")
    assert "train.automations.lr_scheduling.metric: 'psnr'" in sink.decisions[0][1].reason
    assert knobs.lr_multiplier == 1.0


def test_steady_improvement_increases_at_most_once_per_window_and_within_bounds() -> None:
    controller, knobs, sink = setup(
        increase=True, max_lr_factor=1.5, patience=5000, increase_window=5
    )
    feed(controller, knobs, lambda it, m: math.exp(-it / 4000), 1, 8000)
    changes = sink.changes()
    assert [new for _, new in changes] == pytest.approx([1.1, 1.21, 1.331, 1.4641, 1.5])
    iterations = [it for it, _ in changes]
    assert all(b - a >= 600 for a, b in pairwise(iterations))


def test_noise_without_trend_never_increases() -> None:
    controller, knobs, sink = setup(increase=True, max_lr_factor=4.0, patience=3000)
    noise = noisy(0.3, 5, 8000)
    feed(controller, knobs, lambda it, m: 0.05 * noise(it), 1, 8000)
    assert all(new < 1.0 for _, new in sink.changes())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_increase_has_no_runaway_when_a_large_lr_hurts(seed: int) -> None:
    """Closed loop: a larger LR trains faster until 1.5x, beyond which training regresses."""
    controller, knobs, sink = setup(
        increase=True, max_lr_factor=4.0, patience=1000, cooldown=500, max_adjustments=0
    )
    noise = noisy(0.25, seed, 12_000)
    progress = 0.0

    def loss_at(iteration: int, multiplier: float) -> float:
        nonlocal progress
        excess = max(0.0, multiplier - 1.5)
        progress = progress + multiplier if excess == 0 else max(0.0, progress - 20 * excess)
        return (0.02 + 0.1 * (1 + progress / 500) ** -0.5 + 0.05 * excess) * noise(iteration)

    multipliers = feed(controller, knobs, loss_at, 1, 12_000)
    assert all(math.isfinite(m) and 0.01 <= m <= 4.0 for m in multipliers)
    assert max(multipliers) < 2.0  # it came back down long before the 4.0 cap
    longest_above, run = 0, 0
    for m in multipliers:
        run = run + 1 if m > 1.5 else 0
        longest_above = max(longest_above, run)
    assert longest_above <= 2000  # patience plus the EMA's lag
    iterations = [it for it, _ in sink.changes()]
    assert all(b - a >= 500 for a, b in pairwise(iterations))


def test_missing_loss_key_is_reported_with_the_available_losses() -> None:
    controller, _, sink = setup(loss_key="l_g_l1")
    controller.observe_step(step(1, 0.1))
    assert not controller.is_active("lr_scheduling")
    assert "'l_g_l1' is not among the training losses (l_g_total)" in sink.decisions[0][1].reason


def test_non_finite_losses_do_not_poison_the_smoothed_loss() -> None:
    controller, knobs, sink = setup(patience=300, check_interval=100)
    feed(
        controller,
        knobs,
        lambda it, m: math.nan if it % 7 == 0 else (math.inf if it % 11 == 0 else improving(it)),
        1,
        3000,
    )
    assert sink.changes() == []
    automation = controller.get("lr_scheduling")
    assert automation is not None and math.isfinite(automation.scalars()["smoothed_loss"])


def test_resume_continues_with_identical_decisions() -> None:
    noise = noisy(0.3, 9, 6000)

    def loss_at(it: int, m: float) -> float:
        return improving(min(it, 2000)) * noise(it)

    options: dict[str, Any] = {"patience": 500, "cooldown": 300, "min_lr_factor": 0.001}
    straight, straight_knobs, straight_sink = setup(**options)
    feed(straight, straight_knobs, loss_at, 1, 6000)

    first, first_knobs, _ = setup(**options)
    feed(first, first_knobs, loss_at, 1, 3050)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed, resumed_knobs, resumed_sink = setup(
        state=torch.load(buffer, weights_only=True), **options
    )
    feed(resumed, resumed_knobs, loss_at, 3051, 6000)

    later = [(it, new) for it, new in straight_sink.changes() if it > 3050]
    assert later  # the plateau after 2000 leads to reductions after the resume point
    assert resumed_sink.changes() == later
    assert resumed_knobs.lr_multiplier == straight_knobs.lr_multiplier


def test_config_rejects_nothing_to_watch_and_an_increase_without_room() -> None:
    with pytest.raises(ConfigError, match=r"^train\.automations\.lr_scheduling: nothing to watch"):
        convert(
            {"monitor_train_loss": False},
            LRSchedulingConfig,
            prefix="train.automations.lr_scheduling",
        )
    with pytest.raises(ConfigError, match="max_lr_factor > 1"):
        convert({"increase": True}, LRSchedulingConfig, prefix="train.automations.lr_scheduling")
    with pytest.raises(ConfigError, match=r"lr_scheduling\.factor"):
        convert({"factor": 1.5}, LRSchedulingConfig, prefix="train.automations.lr_scheduling")
