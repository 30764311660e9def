"""precision automation: fallbacks, non-decisions, probation, OOM remedy, resume."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from tests.host_reads import host_reads_forbidden
from traiNNer.automations.base import Decision, Knobs, Precision, StepRecord, TrainInfo
from traiNNer.automations.precision import PrecisionAutomation, PrecisionConfig


def make(
    precision: Precision = "fp16", *, bf16: bool = True, ckpt: bool = True, **options: Any
) -> tuple[PrecisionAutomation, Knobs, list[Decision]]:
    automation = PrecisionAutomation(PrecisionConfig(enabled=True, **options))
    knobs = Knobs(precision=precision)
    info = TrainInfo(
        total_iter=100_000,
        start_iter=0,
        device_type="cuda",
        bf16_supported=bf16,
        supports_activation_checkpointing=ckpt,
    )
    start = apply(knobs, automation.on_train_start(info, knobs))
    return automation, knobs, start


def apply(knobs: Knobs, decisions: list[Decision]) -> list[Decision]:
    """What the controller does with knob decisions (actions go to the trainer)."""
    for decision in decisions:
        if not decision.is_action:
            knobs.set(decision.parameter, decision.new)
    return decisions


def record(iteration: int, loss_scale: float | None) -> StepRecord:
    return StepRecord(
        iteration=iteration,
        losses={"l_g_total": torch.tensor(0.1)},
        grad_norms={},
        clipped={},
        loss_scale=None if loss_scale is None else torch.tensor(loss_scale),
        step_time=0.01,
        peak_memory=None,
        batch_size=4,
    )


def precision_changes(decisions: list[Decision]) -> list[tuple[Any, Any]]:
    return [(d.old, d.new) for d in decisions if d.parameter == "precision"]


def test_a_single_nan_never_switches() -> None:
    automation, knobs, _ = make()
    assert automation.on_nonfinite(120, knobs) == []
    for iteration in range(50, 2001, 50):
        apply(knobs, automation.on_interval(iteration, knobs))
    assert knobs.precision == "fp16"


def test_sparse_nans_outside_the_window_never_switch() -> None:
    automation, knobs, _ = make(nonfinite_limit=3, nonfinite_window=200)
    for iteration in (100, 350, 600, 850, 1100):  # never 3 within 200 iterations
        assert automation.on_nonfinite(iteration, knobs) == []
    assert knobs.precision == "fp16"


def test_repeated_nans_move_fp16_to_bf16_then_fp32() -> None:
    automation, knobs, start = make(nonfinite_limit=3, nonfinite_window=200)
    assert [d.parameter for d in start] == ["save_good_state"]
    assert automation.on_nonfinite(100, knobs) == []
    assert automation.on_nonfinite(150, knobs) == []
    decisions = apply(knobs, automation.on_nonfinite(190, knobs))
    assert precision_changes(decisions) == [("fp16", "bf16")]
    assert "non-finite" in decisions[-1].reason
    # The counter starts over at bf16: two more NaNs are not enough.
    assert automation.on_nonfinite(300, knobs) == []
    assert automation.on_nonfinite(310, knobs) == []
    decisions = apply(knobs, automation.on_nonfinite(320, knobs))
    assert precision_changes(decisions) == [("bf16", "fp32")]
    # fp32 is the end of the ladder: nothing more to decide.
    for iteration in (400, 401, 402, 403):
        assert automation.on_nonfinite(iteration, knobs) == []
    assert knobs.precision == "fp32"


def record_bf16(iteration: int, grad_norm: float) -> StepRecord:
    """An applied optimizer step without a GradScaler."""
    return StepRecord(
        iteration, {"l_g_total": torch.tensor(0.1)}, {"net_g": torch.tensor(grad_norm)}, {},
        None, 0.01, None, 4,
    )  # fmt: skip


def test_restore_is_asked_only_after_an_unbroken_run_of_skipped_steps() -> None:
    # A burst with applied steps in between: the weights took only finite steps.
    automation, knobs, _ = make("bf16", nonfinite_limit=3)
    for iteration in (10, 20):
        automation.on_nonfinite(iteration, knobs)
        automation.observe_step(record_bf16(iteration + 1, 1.0))
    decisions = apply(knobs, automation.on_nonfinite(30, knobs))
    assert [d.parameter for d in decisions] == ["precision"]
    # Every step failing in a row is what non-finite weights look like: ask for the snapshot.
    automation, knobs, _ = make("bf16", nonfinite_limit=3)
    automation.observe_step(record_bf16(1, 1.0))
    automation.on_nonfinite(2, knobs)
    automation.on_nonfinite(3, knobs)
    decisions = apply(knobs, automation.on_nonfinite(4, knobs))
    assert [(d.parameter, d.new) for d in decisions] == [
        ("restore_last_good_state", 0),  # the snapshot of the start
        ("precision", "fp32"),
    ]
    assert "if they hold non-finite values" in decisions[0].reason


def test_no_snapshot_while_non_finite_steps_are_in_the_window() -> None:
    automation, knobs, _ = make("bf16", check_interval=100, snapshot_interval=100)
    automation.on_nonfinite(50, knobs)
    assert automation.on_interval(100, knobs) == []
    assert [(d.parameter, d.new) for d in automation.on_interval(300, knobs)] == [
        ("save_good_state", 300)
    ]


def test_bf16_is_skipped_when_the_device_lacks_it() -> None:
    automation, knobs, _ = make(bf16=False, nonfinite_limit=2)
    automation.on_nonfinite(10, knobs)
    decisions = apply(knobs, automation.on_nonfinite(11, knobs))
    assert precision_changes(decisions) == [("fp16", "fp32")]


def test_configured_bf16_without_support_starts_in_fp32() -> None:
    _, knobs, start = make("bf16", bf16=False)
    assert precision_changes(start) == [("bf16", "fp32")]
    assert knobs.precision == "fp32"


def test_collapsing_loss_scale_switches_at_the_interval() -> None:
    automation, knobs, _ = make(check_interval=50, loss_scale_floor=1.0)
    scale = 65536.0
    for iteration in range(1, 51):
        automation.observe_step(record(iteration, scale))
    assert automation.on_interval(50, knobs) == []  # healthy scale
    for iteration in range(51, 101):
        scale /= 2  # one overflow per step
        automation.observe_step(record(iteration, scale))
    decisions = apply(knobs, automation.on_interval(100, knobs))
    assert precision_changes(decisions) == [("fp16", "bf16")]
    assert "loss scale" in decisions[-1].reason


def test_clean_training_requests_periodic_snapshots_only_when_clean() -> None:
    automation, knobs, _ = make(check_interval=100, snapshot_interval=500, nonfinite_window=200)
    saves = []
    for iteration in range(100, 1601, 100):
        if iteration == 1000:
            automation.on_nonfinite(950, knobs)
        saves += [d.new for d in automation.on_interval(iteration, knobs)]
    # 1000 and 1100 still see the NaN of 950 in their window: the cell 1000-1499 gets its
    # snapshot at its first clean check.
    assert saves == [500, 1200, 1500]


def test_no_return_to_lower_precision_without_probation() -> None:
    automation, knobs, _ = make(nonfinite_limit=2, probation_iters=0)
    automation.on_nonfinite(10, knobs)
    apply(knobs, automation.on_nonfinite(20, knobs))
    assert knobs.precision == "bf16"
    for iteration in range(50, 50_001, 50):
        apply(knobs, automation.on_interval(iteration, knobs))
    assert knobs.precision == "bf16"


def test_probation_returns_once_and_a_nan_restarts_its_clock() -> None:
    automation, knobs, _ = make(nonfinite_limit=2, probation_iters=500, check_interval=50)
    automation.on_nonfinite(10, knobs)
    apply(knobs, automation.on_nonfinite(20, knobs))  # fp16 -> bf16 at 20
    assert automation.on_nonfinite(300, knobs) == []  # one NaN at bf16: clock restarts
    for iteration in range(50, 800, 50):
        assert precision_changes(apply(knobs, automation.on_interval(iteration, knobs))) == []
    decisions = apply(knobs, automation.on_interval(800, knobs))
    assert precision_changes(decisions) == [("bf16", "fp16")]
    assert "probation_iters 500" in decisions[-1].reason
    # fp16 fails again: back to bf16, and fp16 is never retried a second time.
    automation.on_nonfinite(810, knobs)
    assert precision_changes(apply(knobs, automation.on_nonfinite(820, knobs))) == [
        ("fp16", "bf16")
    ]
    for iteration in range(850, 5000, 50):
        apply(knobs, automation.on_interval(iteration, knobs))
    assert knobs.precision == "bf16"


def test_first_training_oom_turns_on_checkpointing_then_stays_silent() -> None:
    automation, knobs, _ = make()
    assert automation.on_oom(5, "val", knobs) == []
    decisions = apply(knobs, automation.on_oom(5, "train", knobs))
    assert [(d.parameter, d.new) for d in decisions] == [("activation_checkpointing", True)]
    assert automation.on_oom(6, "train", knobs) == []  # the batch size automation's turn


def test_oom_without_checkpointing_support_leaves_it_to_the_batch() -> None:
    automation, knobs, _ = make(ckpt=False)
    assert automation.on_oom(5, "train", knobs) == []
    automation, knobs, _ = make(activation_checkpointing=False)
    assert automation.on_oom(5, "train", knobs) == []


def test_observe_step_reads_nothing_on_the_host() -> None:
    automation, knobs, _ = make(check_interval=10, snapshot_interval=10)
    with host_reads_forbidden():
        for iteration in range(1, 11):
            automation.observe_step(record(iteration, 2.0 ** (9 - iteration)))
    decisions = automation.on_interval(10, knobs)  # reads here, at the interval
    assert precision_changes(decisions) == [("fp16", "bf16")]  # min 0.5 < floor 1.0
    # Without a scaler nothing is looked at per step but whether it was applied (a bool).
    records = [record_bf16(i, 1.0) for i in range(11, 21)]
    with host_reads_forbidden():
        for step in records:
            automation.observe_step(step)
    assert [d.parameter for d in automation.on_interval(20, knobs)] == ["save_good_state"]


def run_events(
    automation: PrecisionAutomation, knobs: Knobs, events: list[tuple[str, int, float]]
) -> list[tuple[int, str, Any]]:
    out = []
    for kind, iteration, value in events:
        if kind == "step":
            automation.observe_step(record(iteration, value))
            continue
        if kind == "nan":
            decisions = automation.on_nonfinite(iteration, knobs)
        elif kind == "oom":
            decisions = automation.on_oom(iteration, "train", knobs)
        else:
            decisions = automation.on_interval(iteration, knobs)
        out += [(iteration, d.parameter, d.new) for d in apply(knobs, decisions)]
    return out


def stream() -> list[tuple[str, int, float]]:
    events: list[tuple[str, int, float]] = []
    scale = 1024.0
    for iteration in range(1, 3001):
        if iteration in (130, 160, 170, 2100, 2150):
            events.append(("nan", iteration, 0.0))
        if iteration == 400:
            events.append(("oom", iteration, 0.0))
        if 700 < iteration < 720:
            scale /= 2
        events.append(("step", iteration, scale))
        if iteration % 50 == 0:
            events.append(("interval", iteration, 0.0))
    return events


def test_state_round_trip_gives_identical_later_decisions() -> None:
    options: dict[str, Any] = {
        "nonfinite_limit": 2,
        "probation_iters": 600,
        "snapshot_interval": 300,
    }
    full, knobs_full, _ = make(**options)
    events = stream()
    cut = events.index(("interval", 1500, 0.0)) + 1  # a checkpoint after iteration 1500
    expected = run_events(full, knobs_full, events)

    first, knobs_first, _ = make(**options)
    before = run_events(first, knobs_first, events[:cut])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    resumed = PrecisionAutomation(PrecisionConfig(enabled=True, **options))
    resumed.load_state_dict(state)
    knobs_resumed = Knobs(precision="fp16")  # what the option file says
    info = TrainInfo(100_000, 1500, "cuda", True, supports_activation_checkpointing=True)
    start = apply(knobs_resumed, resumed.on_train_start(info, knobs_resumed))
    assert knobs_resumed.precision == knobs_first.precision == "bf16"
    assert knobs_resumed.activation_checkpointing
    # The restart re-takes the in-memory snapshot at the resume point and nothing else.
    assert [(d.parameter, d.new) for d in start if d.is_action] == [("save_good_state", 1500)]
    after = run_events(resumed, knobs_resumed, events[cut:])
    assert before + after == expected
    assert any(e[1] == "precision" for e in after)  # the stream still decides after the cut


@pytest.mark.parametrize("limit", [0, 1])
def test_config_rejects_switching_on_a_single_nan(limit: int) -> None:
    from traiNNer.config.validation import convert
    from traiNNer.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="nonfinite_limit"):
        convert({"nonfinite_limit": limit}, PrecisionConfig, "train.automations.precision")
