"""batch_size: the start-up search, OOM recovery, effective batch, growth, resume."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest
import torch

from traiNNer.automations.base import Decision, Knobs, StepRecord, TrainInfo, TrialOutcome
from traiNNer.automations.batch_size import BatchSizeAutomation, BatchSizeConfig, BatchSizeSearch
from traiNNer.automations.controller import AutomationController
from traiNNer.utils.errors import UserError

GIB = 1 << 30


class Sink:
    def __init__(self) -> None:
        self.decisions: list[tuple[int, Decision]] = []

    def decision(self, iteration: int, decision: Decision, level: int = logging.INFO) -> None:
        self.decisions.append((iteration, decision))

    def scalars(self, iteration: int, automation: str, values: Any) -> None:
        pass


def fits_up_to(limit: int) -> Any:
    """A probe that runs out of memory above `limit`, recording what it was asked."""
    asked: list[int] = []

    def probe(batch_size: int) -> bool:
        asked.append(batch_size)
        return batch_size <= limit

    probe.asked = asked  # type: ignore[attr-defined]
    return probe


def as_trials(probe: Any) -> Any:
    """A trial runner whose steps run out of memory where `probe(size)` says no."""

    def run(steps: int, *, batch_size: int | None = None, optimizer: Any = None) -> TrialOutcome:
        assert batch_size is not None and optimizer is None
        fits = probe(batch_size)
        return TrialOutcome([0.1] * steps if fits else [], not fits)

    return run


def drive(search: BatchSizeSearch, probe: Any) -> int:
    while (size := search.next_candidate()) is not None:
        search.report(size, probe(size))
    return search.result()


def setup(
    batch_size: int = 16, accum_iter: int = 2, total_memory: int | None = 10 * GIB, **options: Any
) -> tuple[AutomationController, Knobs, Sink]:
    options.setdefault("enabled", True)
    knobs, sink = Knobs(batch_size=batch_size, accum_iter=accum_iter), Sink()
    automation = BatchSizeAutomation(BatchSizeConfig(**options))
    controller = AutomationController(None, knobs, sink, automations=[automation])
    controller.on_train_start(
        TrainInfo(
            total_iter=10_000,
            start_iter=0,
            device_type="cuda",
            bf16_supported=True,
            device_total_memory=total_memory,
        )
    )
    return controller, knobs, sink


# -------------------------------------------------------------------- search


def test_binsearch_finds_the_largest_fitting_size_and_keeps_the_margin() -> None:
    probe = fits_up_to(37)
    search = BatchSizeSearch(1, 128, start=8, margin=0.1, mode="binsearch")
    assert drive(search, probe) == 33  # floor(37 * 0.9)
    assert search.largest_fit == 37
    assert probe.asked == [8, 16, 32, 64, 48, 40, 36, 38, 37]
    assert search.failures == {64, 48, 40, 38}


def test_power_mode_stops_at_the_first_failure() -> None:
    probe = fits_up_to(37)
    search = BatchSizeSearch(1, 128, start=8, margin=0.0, mode="power")
    assert drive(search, probe) == 32
    assert probe.asked == [8, 16, 32, 64]


def test_search_halves_down_when_the_start_does_not_fit() -> None:
    probe = fits_up_to(5)
    search = BatchSizeSearch(2, 64, start=32, margin=0.0, mode="binsearch")
    assert drive(search, probe) == 5
    assert probe.asked[:4] == [32, 16, 8, 4]
    assert all(size >= 2 for size in probe.asked)


def test_search_never_probes_a_known_failure_or_above_the_maximum() -> None:
    probe = fits_up_to(1000)
    search = BatchSizeSearch(1, 24, start=8, margin=0.0, known_failures=[20])
    assert drive(search, probe) == 19
    assert max(probe.asked) == 19


def test_search_where_nothing_fits_names_min_batch_size() -> None:
    search = BatchSizeSearch(4, 64, start=16, margin=0.1)
    with pytest.raises(
        UserError, match=r"train\.automations\.batch_size\.min_batch_size.*tried: 16, 8, 4"
    ):
        drive(search, fits_up_to(2))


def test_search_respects_max_trials() -> None:
    probe = fits_up_to(1000)
    search = BatchSizeSearch(1, 4096, start=1, margin=0.0, max_trials=3)
    assert drive(search, probe) == 4
    assert probe.asked == [1, 2, 4]


def test_controller_search_sets_batch_and_keeps_the_effective_batch() -> None:
    controller, knobs, _ = setup(batch_size=16, accum_iter=4, max_batch_size=128, margin=0.1)
    applied = controller.run_startup(as_trials(fits_up_to(37)))
    # Largest fit 37 less 10% is 33; the largest divisor of the effective 64 below it is 32.
    assert (knobs.batch_size, knobs.accum_iter) == (32, 2)
    assert [d.parameter for d in applied] == ["batch_size", "accum_iter"]
    assert "largest fitting batch 37" in applied[0].reason and "64 (OOM)" in applied[0].reason
    automation = controller.get("batch_size")
    assert isinstance(automation, BatchSizeAutomation) and {64, 48, 40, 38} <= automation.failures


def test_search_is_skipped_when_disabled_in_config() -> None:
    controller, knobs, _ = setup(search=False)
    probe = fits_up_to(100)
    assert controller.run_startup(as_trials(probe)) == []
    assert probe.asked == [] and knobs.batch_size == 16


# ----------------------------------------------------------------------- OOM


def test_train_oom_shrinks_the_batch_and_adjusts_accumulation() -> None:
    controller, knobs, _ = setup(batch_size=16, accum_iter=2)
    applied = controller.on_oom(120, "train")
    # 16 x 0.75 = 12 does not divide the effective batch 32; 8 x 4 keeps it exactly.
    assert (knobs.batch_size, knobs.accum_iter) == (8, 4)
    assert "out of memory at batch 16 in iteration 120" in applied[0].reason
    controller.on_oom(121, "train")
    assert (knobs.batch_size, knobs.accum_iter) == (4, 8)


def test_accumulation_stays_within_its_bound() -> None:
    controller, knobs, _ = setup(batch_size=16, accum_iter=4, max_accum_iter=5)
    for iteration in range(10):
        controller.on_oom(iteration, "train")
    assert knobs.batch_size == 1 and knobs.accum_iter == 5


def test_without_keep_effective_batch_accumulation_is_untouched() -> None:
    controller, knobs, _ = setup(batch_size=16, accum_iter=2, keep_effective_batch=False)
    controller.on_oom(5, "train")
    assert (knobs.batch_size, knobs.accum_iter) == (12, 2)


def test_oom_at_min_batch_size_is_left_unhandled() -> None:
    controller, knobs, _ = setup(batch_size=4, min_batch_size=4)
    assert controller.on_oom(10, "train") == []
    assert knobs.batch_size == 4


def test_validation_oom_switches_to_tiling_and_keeps_the_training_batch() -> None:
    controller, knobs, _ = setup(batch_size=16)
    applied = controller.on_oom(1000, "val")
    assert [(d.parameter, d.new) for d in applied] == [("val_tiled", True)]
    assert knobs.batch_size == 16 and knobs.accum_iter == 2
    automation = controller.get("batch_size")
    assert isinstance(automation, BatchSizeAutomation) and automation.failures == set()


def record(iteration: int, peak: int | None, batch_size: int) -> StepRecord:
    return StepRecord(iteration, {}, {}, {}, None, 0.01, peak, batch_size)


def test_simulated_training_redoes_the_oom_iteration_and_counts_each_once() -> None:
    """A fault injected above batch 10: every iteration runs exactly once, at a size that fits."""
    controller, knobs, _ = setup(batch_size=16, accum_iter=2)
    completed: list[tuple[int, int]] = []
    iteration = 1
    while iteration <= 50:
        try:
            if knobs.batch_size > 10:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            completed.append((iteration, knobs.batch_size))
        except torch.OutOfMemoryError:
            if not controller.on_oom(iteration, "train"):
                raise
            continue  # redo the same iteration with the new knobs
        controller.observe_step(record(iteration, 2 * GIB, knobs.batch_size))
        iteration += 1
    assert [it for it, _ in completed] == list(range(1, 51))
    assert {size for _, size in completed} == {8}  # 16 -> 8 (divides the effective 32)
    assert knobs.batch_size * knobs.accum_iter == 32


# -------------------------------------------------------------------- growth


def run_steps(
    controller: AutomationController, knobs: Knobs, first: int, last: int, peak: int
) -> None:
    for iteration in range(first, last + 1):
        controller.observe_step(record(iteration, peak, knobs.batch_size))


def test_growth_after_low_peak_memory_for_the_patience() -> None:
    controller, knobs, sink = setup(
        batch_size=8, accum_iter=8, grow=True, grow_patience=500, check_interval=100
    )
    run_steps(controller, knobs, 1, 499, 3 * GIB)
    assert knobs.batch_size == 8
    run_steps(controller, knobs, 500, 500, 3 * GIB)
    assert (knobs.batch_size, knobs.accum_iter) == (10, 6)
    assert "peak memory 30%" in sink.decisions[0][1].reason


def test_no_growth_while_memory_is_high_or_unknown() -> None:
    controller, knobs, _ = setup(batch_size=8, grow=True, grow_patience=200)
    run_steps(controller, knobs, 1, 2000, 9 * GIB)
    assert knobs.batch_size == 8
    controller, knobs, _ = setup(batch_size=8, grow=True, grow_patience=200, total_memory=None)
    run_steps(controller, knobs, 1, 2000, GIB)
    assert knobs.batch_size == 8


def test_growth_never_reaches_a_size_that_failed() -> None:
    controller, knobs, _ = setup(
        batch_size=16, accum_iter=4, grow=True, grow_patience=100, check_interval=100
    )
    controller.on_oom(1, "train")  # 16 failed -> 12
    run_steps(controller, knobs, 1, 3000, GIB)
    assert knobs.batch_size == 15


def test_growth_with_keep_effective_batch_stops_at_the_effective_batch() -> None:
    controller, knobs, _ = setup(batch_size=4, accum_iter=3, grow=True, grow_patience=100)
    run_steps(controller, knobs, 1, 3000, GIB)
    assert (knobs.batch_size, knobs.accum_iter) == (12, 1)


# -------------------------------------------------------------------- resume


def test_failing_sizes_survive_a_resume() -> None:
    # Without keep_effective_batch the search may go above the configured batch.
    controller, _, _ = setup(
        batch_size=32, accum_iter=1, max_batch_size=64, keep_effective_batch=False
    )
    controller.on_oom(10, "train")  # 32 fails
    buffer = io.BytesIO()
    torch.save(controller.state_dict(), buffer)
    buffer.seek(0)

    resumed, resumed_knobs, _ = setup(
        batch_size=32, accum_iter=1, max_batch_size=64, keep_effective_batch=False
    )
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed_knobs.batch_size == 24  # the shrunk size (32 x 0.75) comes back too
    probe = fits_up_to(1000)
    resumed.run_startup(as_trials(probe))
    assert max(probe.asked) < 32
    assert resumed_knobs.batch_size == 27  # largest fit 31, less 10%


def test_search_never_exceeds_the_effective_batch_and_skips_a_cpu() -> None:
    controller, knobs, _ = setup(batch_size=4, accum_iter=1, max_batch_size=64)
    probe = fits_up_to(1000)
    controller.run_startup(as_trials(probe))
    assert max(probe.asked) <= 4 and (knobs.batch_size, knobs.accum_iter) == (4, 1)
    automation = BatchSizeAutomation(BatchSizeConfig(enabled=True))
    cpu = AutomationController(None, Knobs(batch_size=4), Sink(), automations=[automation])
    cpu.on_train_start(
        TrainInfo(total_iter=100, start_iter=0, device_type="cpu", bf16_supported=True)
    )
    probe = fits_up_to(1000)
    assert cpu.run_startup(as_trials(probe)) == [] and probe.asked == []


def test_configured_batch_outside_the_bounds_is_clamped_at_start() -> None:
    _, knobs, sink = setup(batch_size=100, accum_iter=1, max_batch_size=64)
    assert knobs.batch_size == 64
    assert "outside [1, 64]" in sink.decisions[0][1].reason
