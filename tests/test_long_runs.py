"""Long-run scenarios: 100k-200k-step traces replayed through the automations.

Each scenario is a synthetic trace shaped like a real ParagonSR2 run (power-law loss with
lognormal noise, PSNR creeping up in hundredths of a dB) plus the event under test, fed
through the real controller by the replay engine (open loop: no training). They assert
what must happen and, as much, what must not happen on a healthy run.
"""

from __future__ import annotations

import copy
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scripts.automations.make_trace import TraceSpec, clean_loss, synthetic_trace
from tests.conftest import base_options
from traiNNer.config.loader import decode_options, validate
from traiNNer.training.replay import ReplayResult, replay
from traiNNer.utils.errors import ConfigError

SEEDS = (1, 2)


def options(
    automations: dict[str, Any], total_iter: int, root: dict[str, Any] | None = None, **train: Any
) -> Any:
    data = base_options(Path("/unused"), Path("/unused"))
    data.update(root or {})
    data["train"]["total_iter"] = total_iter
    data["train"]["scheduler"] = None
    data["train"]["automations"] = copy.deepcopy(automations)
    data["train"].update(train)
    data["val"]["val_freq"] = 1000
    data["val"]["metrics"] = {"psnr": {"type": "calculate_psnr", "crop_border": 2}}
    return validate(decode_options(data), for_training=True)


def run(
    automations: dict[str, Any],
    spec: TraceSpec,
    root: dict[str, Any] | None = None,
    **train: Any,
) -> ReplayResult:
    return replay(options(automations, spec.steps, root, **train), synthetic_trace(spec))


def changes(result: ReplayResult, parameter: str) -> list[tuple[int, Any]]:
    return [(r["iteration"], r["new"]) for r in result.decisions if r["parameter"] == parameter]


# ------------------------------------------------------------------------ lr_scheduling
@pytest.mark.parametrize("seed", SEEDS)
def test_no_lr_cut_while_the_loss_still_falls_by_the_threshold(seed: int) -> None:
    spec = TraceSpec(steps=200_000, seed=seed)
    result = run({"lr_scheduling": {"enabled": True}}, spec)
    # Relative improvement of the noise-free loss over the 10k window before each cut.
    for iteration, _ in changes(result, "lr_multiplier"):
        t = np.array([iteration - 10_000, iteration], dtype=float)
        before, now = clean_loss(spec, t)
        assert (before - now) / before < 0.01, (iteration, (before - now) / before)
    # Cuts come at a bounded rate: each needs two fresh 10k windows after the last one.
    iterations = [it for it, _ in changes(result, "lr_multiplier")]
    assert all(later - earlier >= 20_000 for earlier, later in pairwise(iterations))


@pytest.mark.parametrize("seed", SEEDS)
def test_a_real_loss_plateau_is_cut_within_a_bounded_delay(seed: int) -> None:
    spec = TraceSpec(steps=100_000, seed=seed, loss_plateau_at=30_000, loss_floor=0.02)
    result = run({"lr_scheduling": {"enabled": True}}, spec)
    cuts = changes(result, "lr_multiplier")
    assert cuts, "a flat loss was never cut"
    # Two 10k windows have to fill after the plateau starts; then the test fires soon.
    assert 30_000 < cuts[0][0] <= 30_000 + 2 * 10_000 + 10_000


def test_the_loss_rule_is_off_under_a_decaying_schedule_by_default() -> None:
    spec = TraceSpec(steps=100_000, seed=1, loss_plateau_at=20_000)
    schedule = {"type": "MultiStepLR", "milestones": [50_000], "gamma": 0.5}
    result = run({"lr_scheduling": {"enabled": True, "metric": "psnr"}}, spec, scheduler=schedule)
    assert all(
        r["automation"] != "lr_scheduling" or "psnr" in r["reason"] for r in result.decisions
    )


def test_both_lr_automations_need_an_explicit_compound() -> None:
    both = {
        "lr_scheduling": {"enabled": True},
        "multi_metric_lr": {"enabled": True, "metrics": {"psnr": {"better": "higher"}}},
    }
    with pytest.raises(ConfigError, match="compound_with_lr_scheduling"):
        options(both, 1000)
    both["multi_metric_lr"]["compound_with_lr_scheduling"] = True
    options(both, 1000)


# ---------------------------------------------------------------- early stopping (PSNR)
@pytest.mark.parametrize("seed", SEEDS)
def test_no_early_stop_while_psnr_gains_more_than_min_delta_per_patience(seed: int) -> None:
    # 33 - (1 + t/3000)^-0.7 gains about 0.015 dB per 10k at 60k, 0.002 dB at 200k.
    spec = TraceSpec(steps=200_000, seed=seed)
    stopping = {"enabled": True, "patience": 10, "min_delta": 0.001}
    result = run({"early_stopping": stopping}, spec)
    assert result.stopped_at is None, result.decisions


@pytest.mark.parametrize("seed", SEEDS)
def test_a_flat_metric_stops_the_run_after_patience_iterations(seed: int) -> None:
    spec = TraceSpec(steps=100_000, seed=seed, metric_plateau_at=40_000)
    stopping = {"enabled": True, "patience": 10, "min_delta": 0.01}
    result = run({"early_stopping": stopping}, spec)
    assert result.stopped_at is not None and 40_000 < result.stopped_at <= 40_000 + 20_000


def test_one_nan_validation_does_not_stop_a_long_run() -> None:
    spec = TraceSpec(steps=100_000, seed=1, nan_metric_at=(50_000,))
    result = run({"early_stopping": {"enabled": True, "min_delta": 0.002}}, spec)
    assert result.stopped_at is None


def test_early_stop_patience_means_iterations_when_validation_frequency_moves() -> None:
    # Fast early gains (the interval grows to 4000), then a plateau from 40k.
    spec = TraceSpec(steps=100_000, seed=2, metric_plateau_at=40_000, val_every=250, psnr_amp=8.0)
    automations = {
        "early_stopping": {"enabled": True, "patience": 10, "min_delta": 0.01},
        "validation_frequency": {"enabled": True, "min_interval": 250, "max_interval": 4000},
    }
    result = run(automations, spec)
    # The fitted span is 10 x val_freq = 10,000 iterations however often validation ran:
    # counted in validations at 4000 it would have waited 40,000 after the plateau.
    # (Sparse validations make the fit slower to be sure, never quicker.)
    assert result.stopped_at is not None and result.stopped_at >= 40_000 + 5_000
    assert any(r["parameter"] == "val_interval" and r["new"] == 4000 for r in result.decisions)


# --------------------------------------------------------------------------- precision
def test_skipped_nan_steps_do_not_stop_snapshots_or_roll_back_to_the_start() -> None:
    # bf16 run: one NaN at 7, three at 40-42 (a fallback), then a long healthy run with a
    # NaN burst at 141k: the next fallback must not restore a snapshot from iteration 0.
    spec = TraceSpec(steps=150_000, seed=1, nan_at=(7, 40, 41, 42, 141_000, 141_001, 141_002))
    precision = {"enabled": True, "snapshot_interval": 1000}
    bf16 = {"use_amp": True, "amp_bf16": True}
    result = replay(options({"precision": precision}, spec.steps, bf16), synthetic_trace(spec))
    # Skipped steps changed no weight: snapshots went on all along, and the fallback at 41
    # (NaNs at 7, 40, 41: applied steps in between) asks for no restore.
    snapshots = [it for it, _ in changes(result, "save_good_state")]
    assert max(snapshots) >= 140_000
    assert changes(result, "restore_last_good_state") == []
    assert changes(result, "precision") == [(41, "fp32")]


def test_an_unbroken_nan_streak_asks_for_a_snapshot_no_older_than_the_interval() -> None:
    spec = TraceSpec(steps=100_000, seed=1, nan_at=tuple(range(77_001, 77_004)))
    precision = {"enabled": True, "snapshot_interval": 1000}
    bf16 = {"use_amp": True, "amp_bf16": True}
    result = replay(options({"precision": precision}, spec.steps, bf16), synthetic_trace(spec))
    # The trainer then restores it only if the weights hold a non-finite value
    # (tests/test_precision_e2e.py).
    assert changes(result, "restore_last_good_state") == [(77_003, 77_000)]


def test_fp16_loss_scale_collapse_falls_back() -> None:
    spec = TraceSpec(
        steps=100_000, seed=1, fp16=True, scale_collapse_at=60_000, scale_collapse_steps=17
    )
    result = replay(
        options({"precision": {"enabled": True}}, spec.steps, {"use_amp": True}),
        synthetic_trace(spec),
    )
    switches = changes(result, "precision")
    assert switches and switches[0][1] == "bf16" and 60_000 <= switches[0][0] <= 60_100


# ---------------------------------------------------------- adaptive_gradient_clipping
S_RECIPE_CLIPPING = {
    "enabled": True,
    "mode": "zscore",
    "initial_threshold": 1.0,
    "min_threshold": 0.01,
    "max_threshold": 10.0,
    "adjustment_factor": 1.1,
    "monitoring_frequency": 75,
    "gradient_history_size": 120,
}


@pytest.mark.parametrize("seed", SEEDS)
def test_clipping_does_not_follow_the_noise_of_its_own_target(seed: int) -> None:
    spec = TraceSpec(steps=200_000, seed=seed)
    result = run({"adaptive_gradient_clipping": S_RECIPE_CLIPPING}, spec)
    # A stationary norm: a handful of moves, far from the default max_adjustments of 100.
    assert len(changes(result, "clip_threshold.net_g")) <= 20
    assert not any(r["parameter"] == "frozen" for r in result.decisions)


def test_clipping_follows_a_real_drift_of_the_norms() -> None:
    spec = TraceSpec(steps=200_000, seed=1, grad_drift=3.0)
    result = run({"adaptive_gradient_clipping": S_RECIPE_CLIPPING}, spec)
    thresholds = changes(result, "clip_threshold.net_g")
    # The norms end 3x higher: the threshold has risen with them (mean + 2.5 std of ~0.15).
    assert thresholds and thresholds[-1][1] > 0.2


def test_fp16_overflows_are_not_exploding_gradients(caplog: pytest.LogCaptureFixture) -> None:
    spec = TraceSpec(steps=20_000, seed=1, fp16=True, scale_collapse_at=10_000)
    clipping = {**S_RECIPE_CLIPPING, "detailed_logging": False}
    with caplog.at_level("WARNING", logger="traiNNer.automations"):
        replay(
            options({"adaptive_gradient_clipping": clipping}, spec.steps, {"use_amp": True}),
            synthetic_trace(spec),
        )
    assert not any("exploding gradient" in message for message in caplog.messages)


# ------------------------------------------------------------- regularization_scheduling
REGULARIZATION = {"enabled": True, "overfit_metric": "psnr", "start": 1e-4, "end": 1e-3}


@pytest.mark.parametrize("seed", SEEDS)
def test_no_weight_decay_raise_on_a_healthy_run(seed: int) -> None:
    result = run({"regularization_scheduling": REGULARIZATION}, TraceSpec(steps=200_000, seed=seed))
    raises = [r for r in result.decisions if "fell with confidence" in r["reason"]]
    assert raises == []
    assert all(
        r["new"] <= 1e-3 + 1e-12 for r in result.decisions if r["parameter"] == "weight_decay"
    )


def test_a_real_train_validation_gap_raises_weight_decay() -> None:
    spec = TraceSpec(steps=150_000, seed=1, overfit_at=60_000, overfit_rate=0.05)
    result = run({"regularization_scheduling": REGULARIZATION}, spec)
    raised = [r["iteration"] for r in result.decisions if "fell with confidence" in r["reason"]]
    assert raised and all(it > 60_000 for it in raised)


# ---------------------------------------------------------------- augmentation_scheduling
AUGMENTATION = {"enabled": True, "schedule": "constant", "end_prob": 0.8, "metric": "psnr"}


@pytest.mark.parametrize("seed", SEEDS)
def test_a_healthy_run_keeps_its_augmentation(seed: int) -> None:
    result = run({"augmentation_scheduling": AUGMENTATION}, TraceSpec(seed=seed), use_moa=True)
    assert [new for _, new in changes(result, "aug_prob")] == [0.8]  # the start, then nothing


def test_augmentation_is_lowered_when_the_metric_falls_and_restored_when_it_recovers() -> None:
    # PSNR falls 0.05 dB per 10k from 60k on: lowered after 60k, never before.
    spec = TraceSpec(steps=150_000, seed=1, overfit_at=60_000, psnr_noise=0.01)
    result = run({"augmentation_scheduling": AUGMENTATION}, spec, use_moa=True)
    lowered = [(it, new) for it, new in changes(result, "aug_prob") if new < 0.8]
    assert lowered and all(it > 60_000 for it, _ in lowered)


def test_the_penalty_is_not_a_ratchet_on_a_plateau() -> None:
    # A flat PSNR from 40k on (the late phase of any run) lowers nothing.
    spec = TraceSpec(steps=200_000, seed=2, metric_plateau_at=40_000)
    result = run({"augmentation_scheduling": AUGMENTATION}, spec, use_moa=True)
    assert [new for _, new in changes(result, "aug_prob")] == [0.8]


# ------------------------------------------------------------------ validation_frequency
@pytest.mark.parametrize("seed", SEEDS)
def test_validation_cost_stays_within_twice_the_configured_one(seed: int) -> None:
    result = run({"validation_frequency": {"enabled": True}}, TraceSpec(seed=seed, val_every=250))
    intervals = [new for _, new in changes(result, "val_interval")]
    assert all(500 <= interval <= 4000 for interval in intervals)
    assert len(result.validations) <= 2 * 200_000 // 1000
    assert len(intervals) <= 12  # a few deliberate moves, not a walk


def test_fast_progress_validates_less_and_a_plateau_more() -> None:
    spec = TraceSpec(steps=100_000, seed=1, val_every=250, psnr_amp=8.0, metric_plateau_at=40_000)
    result = run({"validation_frequency": {"enabled": True}}, spec)
    intervals = changes(result, "val_interval")
    assert any(new > 1000 for it, new in intervals if it < 40_000)
    assert intervals[-1][1] == 500 and intervals[-1][0] > 40_000


def test_early_stopping_with_validation_frequency_does_not_stop_a_healthy_run() -> None:
    automations = {
        "validation_frequency": {"enabled": True},
        "early_stopping": {"enabled": True, "patience": 10, "min_delta": 0.001},
    }
    result = run(automations, TraceSpec(seed=1, val_every=250))
    assert result.stopped_at is None


# ----------------------------------------------------------------------- multi_metric_lr
def test_multi_metric_patience_is_counted_in_iterations() -> None:
    spec = TraceSpec(steps=100_000, seed=1, val_every=250, metric_plateau_at=40_000)
    multi = {"enabled": True, "patience": 10}
    slow = run({"multi_metric_lr": multi}, spec)
    often = run(
        {"multi_metric_lr": multi, "validation_frequency": {"enabled": True, "min_interval": 250}},
        spec,
    )
    first = [changes(r, "lr_multiplier")[0][0] for r in (slow, often)]
    assert all(it > 40_000 + 10_000 for it in first), first


# ------------------------------------------------- every automation with `enabled: true`
ALL_ENABLED = (
    "adaptive_gradient_clipping",
    "augmentation_scheduling",
    "early_stopping",
    "lr_scheduling",
    "precision",
    "regularization_scheduling",
    "validation_frequency",
)


@pytest.mark.parametrize("seed", SEEDS)
def test_enabled_alone_the_automations_leave_a_healthy_200k_run_alone(seed: int) -> None:
    spec = TraceSpec(seed=seed, val_every=250)
    schedule = {"type": "CosineAnnealingLR", "T_max": 200_000, "eta_min": 1e-6}
    result = run(
        {name: {"enabled": True} for name in ALL_ENABLED},
        spec,
        {"use_amp": True, "amp_bf16": True},
        scheduler=schedule,
        use_moa=True,
    )
    assert result.stopped_at is None
    assert changes(result, "lr_multiplier") == []
    assert not any(r["parameter"] == "frozen" for r in result.decisions)
    assert not any("fell with confidence" in r["reason"] for r in result.decisions)


# ------------------------------------------------------------ dynamic loss scheduling, dwa
DWA = {"enabled": True, "mode": "dwa"}
TWO_LOSSES = [
    {"type": "l1loss", "loss_weight": 1.0},
    {"type": "mssimloss", "loss_weight": 0.05},
]


def dwa_multipliers(spec: TraceSpec) -> dict[str, list[float]]:
    result = run({"dynamic_loss_scheduling": DWA}, spec, losses=TWO_LOSSES)
    base = {"l_g_l1": 1.0, "l_g_mssim": 0.05}
    out: dict[str, list[float]] = {name: [1.0] for name in base}
    for name, weight in base.items():
        out[name] += [new / weight for _, new in changes(result, f"loss_weights.{name}")]
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", ["flat", "same_trend"])
def test_dwa_does_not_follow_noise(seed: int, shape: str) -> None:
    # Two losses with independent lognormal noise (sigma 0.3), both flat or both on the
    # same power law: nothing tells them apart, so no weight walks.
    plateau = 1 if shape == "flat" else None
    spec = TraceSpec(
        steps=100_000, seed=seed, loss_plateau_at=plateau, extra_losses={"l_g_mssim": 0.5}
    )
    multipliers = dwa_multipliers(spec)
    spread = max(abs(m - 1.0) for series in multipliers.values() for m in series)
    assert spread <= 0.02, spread  # within adaptation_threshold: not one change


def test_dwa_gives_a_stalled_loss_more_weight_than_a_falling_one() -> None:
    spec = TraceSpec(
        steps=30_000,
        seed=1,
        loss_amp=0.04,
        extra_losses={"l_g_mssim": 0.5},
        stalled_losses=("l_g_mssim",),
    )
    multipliers = dwa_multipliers(spec)
    assert max(multipliers["l_g_mssim"]) > 1.02
    assert min(multipliers["l_g_mssim"]) >= 1.0
    assert max(multipliers["l_g_l1"]) <= 1.0


# ------------------------------------------------ early_stopping with an LR automation
def test_an_lr_cut_gets_a_full_patience_span_before_early_stopping_judges() -> None:
    spec = TraceSpec(steps=150_000, seed=1, metric_plateau_at=30_000)
    lr = {"enabled": True, "metric": "psnr", "monitor_train_loss": None, "min_lr_factor": 0.25}
    automations = {
        "lr_scheduling": lr,
        "early_stopping": {"enabled": True, "patience": 20, "min_delta": 0.01},
    }
    result = run(automations, spec)
    cuts = [it for it, _ in changes(result, "lr_multiplier")]
    assert len(cuts) == 2 and result.stopped_at is not None
    # The fit restarts at the validation after each cut: the stop waits for a full span
    # (at least 0.9 x 20 x 1000 iterations) after the last one.
    assert result.stopped_at >= cuts[-1] + 18_000
