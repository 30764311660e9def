"""adaptive_gradient_clipping on synthetic gradient-norm streams."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
import torch

from tests.host_reads import host_reads_forbidden
from traiNNer.automations.adaptive_gradient_clipping import (
    AdaptiveGradientClipping,
    AdaptiveGradientClippingConfig,
    quantile,
)
from traiNNer.automations.base import Decision, Knobs, StepRecord, TrainInfo
from traiNNer.automations.controller import AutomationController
from traiNNer.config.validation import convert

Norms = Callable[[int], dict[str, float]]


class Sink:
    def __init__(self) -> None:
        self.decisions: list[tuple[int, Decision]] = []
        self.scalars_at: dict[int, dict[str, float]] = {}

    def decision(self, iteration: int, decision: Decision, level: int = logging.INFO) -> None:
        self.decisions.append((iteration, decision))

    def scalars(self, iteration: int, automation: str, values: Any) -> None:
        self.scalars_at[iteration] = dict(values)

    def changes(self, net: str = "net_g") -> list[tuple[int, Any]]:
        return [(it, d.new) for it, d in self.decisions if d.parameter == f"clip_threshold.{net}"]


def setup(
    networks: tuple[str, ...] = ("net_g",), state: dict[str, Any] | None = None, **options: Any
) -> tuple[AutomationController, Knobs, Sink]:
    """A started controller; `state` is loaded first, as on resume."""
    options.setdefault("enabled", True)
    knobs, sink = Knobs(), Sink()
    automation = AdaptiveGradientClipping(AdaptiveGradientClippingConfig(**options))
    controller = AutomationController(None, knobs, sink, automations=[automation])
    if state is not None:
        controller.load_state_dict(state)
    controller.on_train_start(
        TrainInfo(
            total_iter=10_000,
            start_iter=0,
            device_type="cpu",
            bf16_supported=False,
            networks=networks,
        )
    )
    return controller, knobs, sink


def feed(controller: AutomationController, norms: Norms, first: int, last: int) -> None:
    for iteration in range(first, last + 1):
        values = norms(iteration)
        controller.observe_step(
            StepRecord(
                iteration,
                {},
                {net: torch.tensor(value) for net, value in values.items()},
                {},
                None,
                0.0,
                None,
                8,
            )
        )


def lognormal(scale: float, sigma: float, seed: int, length: int = 6001) -> list[float]:
    draws = torch.randn(length, generator=torch.Generator().manual_seed(seed))
    return [scale * math.exp(sigma * float(d)) for d in draws]


def with_rare_spikes(values: list[float], rate: float, factor: float, seed: int) -> list[float]:
    draws = torch.rand(len(values), generator=torch.Generator().manual_seed(seed + 100))
    return [v * factor if float(d) < rate else v for v, d in zip(values, draws, strict=True)]


@pytest.mark.parametrize("mode", ["zscore", "percentile", "rule"])
def test_observe_step_does_not_read_device_values(mode: str) -> None:
    controller, _, _ = setup(
        mode=mode, monitoring_frequency=1000, gradient_history_size=1000, warmup_steps=10
    )
    automation = controller.get("adaptive_gradient_clipping")
    assert automation is not None
    with host_reads_forbidden():
        for iteration in range(1, 60):  # past the zscore warmup, before the interval
            automation.observe_step(
                StepRecord(iteration, {}, {"net_g": torch.tensor(0.5)}, {}, None, 0.0, None, 8)
            )


def test_rule_mode_does_not_walk_to_the_floor_when_few_steps_clip() -> None:
    normal = lognormal(0.05, 0.2, seed=1)
    stream = with_rare_spikes(normal, rate=0.002, factor=40, seed=1)
    controller, knobs, sink = setup(mode="rule", min_threshold=0.01, adjustment_factor=1.2)
    feed(controller, lambda it: {"net_g": stream[it]}, 1, 6000)
    threshold = knobs.clip_threshold["net_g"]
    assert threshold > quantile(sorted(normal), 0.98)
    assert threshold > 5 * 0.01
    clipped_normal_steps = sum(v > threshold for v in normal) / len(normal)
    assert clipped_normal_steps < 0.02
    assert [it for it, _ in sink.changes() if it > 3000] == []  # settled, no oscillation


def test_rule_mode_raises_when_norms_grow_for_good() -> None:
    small, large = lognormal(0.05, 0.2, seed=2), lognormal(0.5, 0.2, seed=3)
    controller, knobs, sink = setup(mode="rule", cooldown=100)
    feed(controller, lambda it: {"net_g": small[it] if it <= 1500 else large[it]}, 1, 5000)
    before = [new for it, new in sink.changes() if 0 < it <= 1500]
    after = [new for it, new in sink.changes() if it > 1500]
    assert before[-1] < 0.2 and after
    assert all(b > a for a, b in pairwise([before[-1], *after]))
    assert knobs.clip_threshold["net_g"] >= quantile(sorted(large), 0.95)


def test_zscore_mode_sets_mean_plus_z_std_and_clips_spikes() -> None:
    normal = lognormal(1.0, 0.1, seed=4)
    stream = with_rare_spikes(normal, rate=0.005, factor=30, seed=4)
    controller, knobs, _ = setup(mode="zscore", initial_threshold=5.0, zscore_threshold=2.5)
    feed(controller, lambda it: {"net_g": stream[it]}, 1, 3000)
    mean = sum(normal) / len(normal)
    std = math.sqrt(sum((v - mean) ** 2 for v in normal) / len(normal))
    expected = mean + 2.5 * std
    # Within the dead band (adjustment_factor 1.2) of ZClip's target; spikes did not inflate it.
    assert expected / 1.2 <= knobs.clip_threshold["net_g"] <= expected * 1.2
    assert max(stream) > 10 * knobs.clip_threshold["net_g"]


def test_percentile_mode_follows_the_window_percentile_within_bounds() -> None:
    stream = lognormal(0.2, 0.3, seed=5)
    controller, knobs, _ = setup(mode="percentile", percentile=90, gradient_history_size=200)
    feed(controller, lambda it: {"net_g": stream[it]}, 1, 2000)
    target = quantile(sorted(stream[1801:2001]), 0.9)
    assert target / 1.2 <= knobs.clip_threshold["net_g"] <= target * 1.2

    controller, knobs, sink = setup(mode="percentile", percentile=10, min_threshold=0.5)
    feed(controller, lambda it: {"net_g": stream[it]}, 1, 500)
    assert knobs.clip_threshold["net_g"] == 0.5  # target below the floor is held at it
    assert all(new >= 0.5 for _, new in sink.changes())


def test_networks_keep_separate_statistics() -> None:
    generator, discriminator = lognormal(0.05, 0.2, seed=6), lognormal(2.0, 0.2, seed=7)
    controller, knobs, sink = setup(networks=("net_g", "net_d"), mode="zscore")
    feed(controller, lambda it: {"net_g": generator[it], "net_d": discriminator[it]}, 1, 1000)
    assert knobs.clip_threshold["net_g"] < 0.1
    assert 2.0 < knobs.clip_threshold["net_d"] < 4.0
    scalars = sink.scalars_at[1000]
    assert scalars["net_g/norm_mean"] < 0.1 and scalars["net_d/norm_mean"] > 1.0


def test_clip_rate_is_windowed_not_cumulative() -> None:
    # Threshold pinned at 1.0: first 300 steps all clip, the next 300 none.
    controller, _, sink = setup(
        mode="rule",
        initial_threshold=1.0,
        min_threshold=1.0,
        max_threshold=1.0,
        gradient_history_size=100,
        monitoring_frequency=100,
    )
    feed(controller, lambda it: {"net_g": 5.0 if it <= 300 else 0.5}, 1, 600)
    assert sink.scalars_at[300]["net_g/clip_rate"] == 1.0
    assert sink.scalars_at[600]["net_g/clip_rate"] == 0.0
    assert sink.scalars_at[600]["net_g/norm_max"] == pytest.approx(0.5)


def test_exploding_gradients_are_logged_with_their_iteration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    controller, _, sink = setup(mode="zscore", monitoring_frequency=50, exploding_factor=3.0)
    spikes = {777: 80.0, 790: math.inf}
    with caplog.at_level(logging.WARNING, logger="traiNNer.automations"):
        feed(controller, lambda it: {"net_g": spikes.get(it, 0.5)}, 1, 800)
    messages = [m for m in caplog.messages if "exploding" in m]
    # An infinite norm is a step the trainer skipped, not an exploding gradient.
    assert len(messages) == 1 and "iteration 777: norm 80" in messages[0]
    assert sink.scalars_at[800]["net_g/exploding"] == 1.0
    assert sink.scalars_at[750]["net_g/exploding"] == 0.0
    assert math.isfinite(sink.scalars_at[800]["net_g/norm_max"])  # inf kept out of the statistics


def test_cooldown_spaces_changes_of_one_network() -> None:
    stream = lognormal(0.2, 0.6, seed=8)
    controller, _, sink = setup(
        mode="percentile", percentile=50, adjustment_factor=1.05, cooldown=300
    )
    feed(controller, lambda it: {"net_g": stream[it]}, 1, 4000)
    iterations = [it for it, _ in sink.changes() if it > 0]
    assert len(iterations) >= 2
    assert all(b - a >= 300 for a, b in pairwise(iterations))


def test_resume_gives_identical_thresholds_and_decisions() -> None:
    stream = with_rare_spikes(lognormal(0.3, 0.4, seed=9), rate=0.01, factor=20, seed=9)
    options: dict[str, Any] = {"mode": "zscore", "adjustment_factor": 1.05, "cooldown": 50}

    def norms(it: int) -> dict[str, float]:
        return {"net_g": stream[it] * (1 + it / 1000)}

    straight, straight_knobs, straight_sink = setup(**options)
    feed(straight, norms, 1, 3000)

    first, _, _ = setup(**options)
    feed(first, norms, 1, 1530)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed, resumed_knobs, resumed_sink = setup(
        state=torch.load(buffer, weights_only=True), **options
    )
    feed(resumed, norms, 1531, 3000)

    later = [change for change in straight_sink.changes() if change[0] > 1530]
    assert len(later) >= 2  # the drift moves the (smoothed) target after the resume too
    assert resumed_sink.changes() == later
    assert resumed_knobs.clip_threshold == straight_knobs.clip_threshold


def test_seed_option_keys_are_accepted_and_detailed_logging_prints_statistics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed_options = {
        "enabled": True,
        "initial_threshold": 1.0,
        "min_threshold": 0.1,
        "max_threshold": 10.0,
        "adjustment_factor": 1.2,
        "monitoring_frequency": 50,
        "gradient_history_size": 100,
        "detailed_logging": True,
    }
    config = convert(seed_options, AdaptiveGradientClippingConfig, prefix="x")
    assert config.monitoring_frequency == 50 and config.gradient_history_size == 100
    controller, _, _ = setup(**{k: v for k, v in seed_options.items() if k != "enabled"})
    with caplog.at_level(logging.INFO, logger="traiNNer.automations"):
        feed(controller, lambda it: {"net_g": 0.05}, 1, 50)
    assert any("net_g at iteration 50: threshold 1, clip rate 0.00%" in m for m in caplog.messages)
