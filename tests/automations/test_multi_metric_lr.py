"""multi_metric_lr: plateau only when the weighted composite of metrics stops improving."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import base_options
from traiNNer.automations.base import Decision, Knobs
from traiNNer.automations.multi_metric_lr import MultiMetricLR, MultiMetricLRConfig
from traiNNer.config.loader import decode_options, validate
from traiNNer.config.validation import convert
from traiNNer.utils.errors import ConfigError, UserError

PSNR_SSIM = {"psnr": {"better": "higher"}, "ssim": {"better": "higher"}}


def make(metrics: dict[str, Any] | None = None, **options: Any) -> MultiMetricLR:
    config = convert(
        {"enabled": True, "metrics": metrics or PSNR_SSIM, **options},
        MultiMetricLRConfig,
        "train.automations.multi_metric_lr",
    )
    return MultiMetricLR(config)


def apply(knobs: Knobs, decisions: list[Decision]) -> list[Decision]:
    for decision in decisions:
        knobs.set(decision.parameter, decision.new)
    return decisions


def run(automation: MultiMetricLR, knobs: Knobs, stream: list[dict[str, float]]) -> list[int]:
    """Validation numbers (1-based) at which the LR was reduced."""
    reductions = []
    for index, metrics in enumerate(stream, start=1):
        if apply(knobs, automation.after_validation(1000 * index, metrics, knobs)):
            reductions.append(index)
    return reductions


def wobble(rng: random.Random, centre: float, amplitude: float) -> float:
    return centre + rng.uniform(-amplitude, amplitude)


def test_one_metric_wobbling_while_another_improves_is_not_a_plateau() -> None:
    for seed in range(5):
        rng = random.Random(seed)
        stream = [{"psnr": 28.0 + 0.05 * i, "ssim": wobble(rng, 0.90, 0.004)} for i in range(40)]
        knobs = Knobs()
        assert run(make(), knobs, stream) == []
        assert knobs.lr_multiplier == 1.0


def test_both_metrics_flat_is_a_plateau_after_patience() -> None:
    rng = random.Random(1)
    rising = [{"psnr": 28.0 + 0.05 * i, "ssim": 0.85 + 0.001 * i} for i in range(10)]
    flat = [{"psnr": wobble(rng, 28.5, 0.01), "ssim": wobble(rng, 0.86, 0.0002)} for _ in range(25)]
    knobs = Knobs()
    automation = make(patience=5, cooldown=0)
    reductions = run(automation, knobs, rising + flat)
    assert reductions and reductions[0] > 10 + 5  # not while rising, not before patience
    assert knobs.lr_multiplier == pytest.approx(0.5 ** len(reductions))


def test_direction_is_explicit_lower_is_better_counts_as_progress() -> None:
    rng = random.Random(2)
    metrics = {"psnr": {"better": "higher"}, "lpips": {"better": "lower"}}
    stream = [{"psnr": wobble(rng, 30.0, 0.01), "lpips": 0.30 - 0.005 * i} for i in range(30)]
    assert run(make(metrics), Knobs(), stream) == []
    # The same numbers with LPIPS declared higher-is-better are a plateau.
    wrong = {"psnr": {"better": "higher"}, "lpips": {"better": "higher"}}
    assert run(make(wrong), Knobs(), stream)


def test_weights_decide_which_metric_dominates() -> None:
    falling_ssim = [{"psnr": 28.0 + 0.05 * i, "ssim": 0.90 - 0.001 * i} for i in range(20)]
    psnr_heavy = {"psnr": {"better": "higher", "weight": 3.0}, "ssim": {"better": "higher"}}
    ssim_heavy = {"psnr": {"better": "higher"}, "ssim": {"better": "higher", "weight": 3.0}}
    assert run(make(psnr_heavy, patience=2), Knobs(), falling_ssim) == []
    assert run(make(ssim_heavy, patience=2), Knobs(), falling_ssim)


def test_reductions_stop_at_min_lr_factor() -> None:
    knobs = Knobs()
    automation = make(patience=0, cooldown=0, min_lr_factor=0.1)
    stream = [{"psnr": 30.0, "ssim": 0.9}] * 30
    reductions = run(automation, knobs, stream)
    assert knobs.lr_multiplier == pytest.approx(0.1)
    assert len(reductions) == 4  # 0.5, 0.25, 0.125, then clamped to 0.1


def test_nonfinite_metric_counts_as_no_improvement() -> None:
    automation = make(patience=1, cooldown=0)
    knobs = Knobs()
    stream = [{"psnr": 28.0 + 0.1 * i, "ssim": 0.8 + 0.01 * i} for i in range(5)]
    stream += [{"psnr": float("nan"), "ssim": 0.9}] * 2
    assert run(automation, knobs, stream) == [7]


def test_scalars_report_each_metric_and_the_composite() -> None:
    automation = make()
    knobs = Knobs()
    run(automation, knobs, [{"psnr": 28.0 + 0.1 * i, "ssim": 0.8 + 0.01 * i} for i in range(4)])
    scalars = automation.scalars()
    assert {"psnr_normalised", "psnr_scale", "ssim_normalised", "ssim_scale", "composite"} <= set(
        scalars
    )
    # Steady steps: 3 typical steps of progress each, so the composite is 3 as well.
    assert scalars["psnr_normalised"] == pytest.approx(3.0)
    assert scalars["composite"] == pytest.approx(3.0)


def test_missing_metric_names_the_option() -> None:
    automation = make()
    with pytest.raises(UserError, match=r"multi_metric_lr\.metrics\.ssim"):
        automation.after_validation(1000, {"psnr": 30.0}, Knobs())


def options_with(automation: dict[str, Any], metrics: dict[str, Any]) -> Any:
    data = base_options(Path("/unused"), Path("/unused"))
    data["val"]["metrics"] = metrics
    data["train"]["automations"] = {"multi_metric_lr": automation}
    return validate(decode_options(data), for_training=True)


def test_enabled_alone_combines_every_validation_metric_in_its_direction() -> None:
    metrics = {
        "psnr": {"type": "calculate_psnr", "crop_border": 2},
        "ssim": {"type": "calculate_ssim", "crop_border": 2},
        "noise": {"type": "calculate_psnr", "crop_border": 2, "better": "lower"},
    }
    opt = options_with({"enabled": True}, metrics)
    config = opt.train.automations.multi_metric_lr
    assert {name: (t.better, t.weight) for name, t in config.metrics.items()} == {
        "psnr": ("higher", 1.0),
        "ssim": ("higher", 1.0),
        "noise": ("lower", 1.0),
    }
    # A term named without a direction takes the one val.metrics gives it.
    opt = options_with({"enabled": True, "metrics": {"noise": {"weight": 2}}}, metrics)
    assert opt.train.automations.multi_metric_lr.metrics["noise"].better == "lower"


def test_no_metric_to_combine_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"multi_metric_lr\.metrics"):
        options_with({"enabled": True}, {})
    with pytest.raises(ConfigError, match="weight"):
        convert(
            {"metrics": {"psnr": {"better": "higher", "weight": 0}}},
            MultiMetricLRConfig,
            "train.automations.multi_metric_lr",
        )


def test_state_round_trip_gives_identical_later_decisions() -> None:
    rng = random.Random(3)
    stream = [{"psnr": 28.0 + 0.05 * i, "ssim": wobble(rng, 0.9, 0.003)} for i in range(12)]
    stream += [
        {"psnr": wobble(rng, 28.6, 0.01), "ssim": wobble(rng, 0.9, 0.003)} for _ in range(20)
    ]
    knobs_full = Knobs()
    expected = run(make(patience=2), knobs_full, stream)

    first, knobs_first = make(patience=2), Knobs()
    before = run(first, knobs_first, stream[:15])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = make(patience=2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    knobs_resumed = Knobs(lr_multiplier=knobs_first.lr_multiplier)  # the controller restores it
    after = [15 + i for i in run(resumed, knobs_resumed, stream[15:])]
    assert before + after == expected
    assert after  # reductions happen after the resume point
    assert resumed.scalars() == pytest.approx(make_full_scalars(stream))


def make_full_scalars(stream: list[dict[str, float]]) -> dict[str, float]:
    automation = make(patience=2)
    run(automation, Knobs(), stream)
    return automation.scalars()
