"""early_stopping on synthetic validation-metric streams."""

from __future__ import annotations

import io
import logging
import math
from typing import Any

import torch

from traiNNer.automations.base import Decision, Knobs, TrainInfo
from traiNNer.automations.controller import AutomationController
from traiNNer.automations.early_stopping import EarlyStopping, EarlyStoppingConfig


class Sink:
    def __init__(self) -> None:
        self.decisions: list[tuple[int, Decision]] = []

    def decision(self, iteration: int, decision: Decision, level: int = logging.INFO) -> None:
        self.decisions.append((iteration, decision))

    def scalars(self, iteration: int, automation: str, values: Any) -> None:
        pass


def setup(
    state: dict[str, Any] | None = None, **options: Any
) -> tuple[AutomationController, Knobs, Sink, EarlyStopping]:
    options.setdefault("enabled", True)
    knobs, sink = Knobs(), Sink()
    automation = EarlyStopping(EarlyStoppingConfig(**options))
    controller = AutomationController(None, knobs, sink, automations=[automation])
    if state is not None:
        controller.load_state_dict(state)
    controller.on_train_start(
        TrainInfo(
            total_iter=200_000,
            start_iter=0,
            device_type="cpu",
            bf16_supported=False,
            val_freq=1000,
        )
    )
    return controller, knobs, sink, automation


def validate(
    controller: AutomationController,
    knobs: Knobs,
    values: list[float],
    every: int = 1000,
    first: int = 1,
) -> int | None:
    """Feed one validation per `every` iterations; the iteration of the stop, if any."""
    for index, value in enumerate(values, start=first):
        iteration = index * every
        controller.after_validation(iteration, {"psnr": value, "val/psnr": value})
        if knobs.stop_requested:
            return iteration
    return None


def test_stops_after_patience_validations_and_reports_the_iteration_span() -> None:
    controller, knobs, sink, automation = setup(patience=10, min_delta=0.01)
    rising = [28 + 0.2 * i for i in range(30)]  # best at validation 30, iteration 30000
    stop = validate(controller, knobs, rising + [rising[-1] - 0.05] * 20)
    # Windows without the best in them are flat from 41k, but the error is floored by the
    # recent fits' noise (the median of 12, several through the kink) until 47k.
    assert stop == 47_000
    (_, decision) = sink.decisions[0]
    assert decision.parameter == "stop_requested" and decision.new is True
    assert "gained +0 (+/- 0) over iterations 37000-47000" in decision.reason
    assert "early stop at iteration 47000" in automation.summary()
    assert "best psnr 33.8000 at iteration 30000" in automation.summary()


def test_noisy_but_improving_metric_never_stops() -> None:
    # +0.02 dB per validation under 0.05 dB of noise: slow, but real progress.
    noise = torch.randn(150, generator=torch.Generator().manual_seed(0))
    values = [28 + 0.02 * i + 0.05 * float(noise[i]) for i in range(150)]
    controller, knobs, _, automation = setup(patience=10, min_delta=0.0)
    assert validate(controller, knobs, values) is None
    assert "not triggered after 150 validations" in automation.summary()


def test_improvements_below_min_delta_do_not_reset_patience() -> None:
    creeping = [30.0 + 0.01 * i for i in range(10)]
    controller, knobs, _, _ = setup(patience=4, min_delta=0.05)
    assert validate(controller, knobs, creeping) == 5000
    controller, knobs, _, _ = setup(patience=4, min_delta=0.0)
    assert validate(controller, knobs, creeping) is None


def test_lower_is_better_direction() -> None:
    controller, knobs, _, _ = setup(metric="lpips", better="lower", patience=3)
    for index, value in enumerate([0.4, 0.3, 0.2, 0.1], start=1):
        controller.after_validation(1000 * index, {"lpips": value})
    assert not knobs.stop_requested
    for index in range(5, 12):  # flat from 5000 on
        controller.after_validation(1000 * index, {"lpips": 0.15})
        assert not knobs.stop_requested
    controller.after_validation(12_000, {"lpips": 0.15})
    assert knobs.stop_requested


def test_min_iterations_delays_a_patience_stop() -> None:
    controller, knobs, _, _ = setup(patience=2, min_iterations=10_000)
    assert validate(controller, knobs, [30.0] * 20) == 10_000


def test_non_finite_metric_stops_on_the_second_in_a_row_unless_check_finite_is_off() -> None:
    controller, knobs, sink, _ = setup(patience=50, min_iterations=100_000)
    # One NaN validation (a transient inference glitch) does not end the run.
    assert validate(controller, knobs, [30.0, 31.0, math.nan, 31.1]) is None
    assert validate(controller, knobs, [math.nan, math.nan], first=5) == 6000
    assert "psnr is nan at iteration 6000 (2 validations in a row)" in sink.decisions[0][1].reason
    assert "best psnr 31.1000 at iteration 4000" in sink.decisions[0][1].reason

    controller, knobs, _, _ = setup(patience=3, check_finite=False)
    assert validate(controller, knobs, [30.0, math.nan, math.nan, 30.5]) is None
    assert validate(controller, knobs, [math.nan] * 3, first=5) == 7000


def test_divergence_threshold_stops_when_far_below_the_best() -> None:
    controller, knobs, sink, _ = setup(patience=50, divergence_threshold=1.0)
    assert validate(controller, knobs, [30.0, 31.0, 30.5, 29.9]) == 4000
    assert "worse than the best 31" in sink.decisions[0][1].reason


def test_restore_best_weights_is_requested_on_stop_only_when_configured() -> None:
    controller, knobs, _, _ = setup(patience=2, restore_best_weights=True)
    validate(controller, knobs, [30.0] + [29.0] * 8)
    actions = controller.pop_actions()
    assert [(a.parameter, a.new) for a in actions] == [("restore_best_weights", True)]
    assert "net_g_best" in actions[0].reason

    controller, knobs, _, _ = setup(patience=2)
    validate(controller, knobs, [30.0] + [29.0] * 8)
    assert knobs.stop_requested and controller.pop_actions() == []


def test_metric_keyed_by_dataset_is_found() -> None:
    controller, knobs, _, _ = setup(metric="val/psnr", patience=2)
    assert validate(controller, knobs, [30.0, 29.0, 28.0]) == 3000


def test_resume_keeps_patience_counters() -> None:
    controller, knobs, _, _ = setup(patience=6)
    validate(controller, knobs, [30.0, 31.0, 30.0, 30.0, 30.0])  # 3 bad validations so far
    buffer = io.BytesIO()
    torch.save(controller.state_dict(), buffer)
    buffer.seek(0)
    resumed, resumed_knobs, _, automation = setup(
        state=torch.load(buffer, weights_only=True), patience=6
    )
    # The history and the noise floor came back: the run stops exactly where an
    # uninterrupted one does.
    uninterrupted, knobs_u, _, _ = setup(patience=6)
    expected = validate(uninterrupted, knobs_u, [30.0, 31.0, 30.0, 30.0, 30.0] + [30.0] * 12)
    assert expected is not None
    assert validate(resumed, resumed_knobs, [30.0] * 12, first=6) == expected
    assert automation.best == 31.0 and automation.best_iter == 2000
