"""`batch_size`: largest fitting batch at start, recovery from out-of-memory, optional growth.

- Start: `BatchSizeSearch` is a pure search strategy, driven in `run_startup` with real
  training steps from the trainer's trial runner; the result keeps a safety `margin`
  below the largest size that fitted.
- Training OOM (torch.OutOfMemoryError only, caught by the trainer): the failing size
  is remembered (also across resume) and the batch shrinks by `oom_backoff`; the
  trainer redoes the same iteration.
- Validation OOM: switches validation to tiled inference; the training batch is left alone.
- `keep_effective_batch`: accum_iter follows so that batch x accum_iter stays near the
  configured product, within [1, max_accum_iter].
- `grow`: while peak memory stays under `target_memory_fraction` of the device for
  `grow_patience` iterations the batch grows by `grow_factor`, never to a size that
  failed before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from msgspec import Meta

from traiNNer.automations.base import (
    Automation,
    AutomationConfig,
    Decision,
    Knobs,
    StepRecord,
    TrainInfo,
    TrialSteps,
)
from traiNNer.automations.decision_log import LOGGER_NAME
from traiNNer.automations.registry import register_automation
from traiNNer.utils.errors import UserError

logger = logging.getLogger(LOGGER_NAME)

SearchMode = Literal["power", "binsearch"]


class BatchSizeConfig(AutomationConfig):
    """Options of the `batch_size` automation."""

    search: Annotated[
        bool, Meta(description="At start, find the largest batch size that fits (real steps).")
    ] = True
    search_mode: Annotated[
        SearchMode,
        Meta(description="power: doubling only; binsearch: doubling, then bisection."),
    ] = "binsearch"
    search_on_cpu: Annotated[
        bool,
        Meta(
            description="Search on a CPU too (memory does not limit a CPU run, so by "
            "default the configured batch is kept there)."
        ),
    ] = False
    steps_per_trial: Annotated[
        int, Meta(ge=1, description="Training steps run at each candidate size.")
    ] = 3
    max_trials: Annotated[int, Meta(ge=1, description="Most sizes tried by the search.")] = 25
    min_batch_size: Annotated[int, Meta(ge=1, description="Smallest batch size per GPU.")] = 1
    max_batch_size: Annotated[int, Meta(ge=1, description="Largest batch size per GPU.")] = 64
    margin: Annotated[
        float,
        Meta(
            ge=0,
            lt=1,
            description="Safety margin: use this fraction less than the largest fitting size.",
        ),
    ] = 0.1
    oom_backoff: Annotated[
        float, Meta(gt=0, lt=1, description="On a training OOM the batch becomes batch x this.")
    ] = 0.75
    keep_effective_batch: Annotated[
        bool,
        Meta(
            description="Change accum_iter so that batch x accum_iter stays the configured "
            "effective batch (the search then never goes above it)."
        ),
    ] = True
    max_accum_iter: Annotated[int, Meta(ge=1, description="Largest accum_iter it may set.")] = 16
    grow: Annotated[
        bool, Meta(description="Grow the batch while peak memory stays low (needs a GPU).")
    ] = False
    target_memory_fraction: Annotated[
        float, Meta(gt=0, lt=1, description="Growth only while peak memory is below this fraction.")
    ] = 0.85
    grow_patience: Annotated[
        int, Meta(ge=1, description="Iterations of low peak memory before growing.")
    ] = 2000
    grow_factor: Annotated[float, Meta(gt=1, description="Growth multiplier (at least +1).")] = 1.25
    check_interval: Annotated[
        int, Meta(ge=1, description="Iterations between two peak-memory checks.")
    ] = 100

    def __post_init__(self) -> None:
        if self.min_batch_size > self.max_batch_size:
            raise ValueError(
                f"min_batch_size ({self.min_batch_size}) must not exceed "
                f"max_batch_size ({self.max_batch_size})"
            )


class BatchSizeSearch:
    """Finds the largest batch size that fits, one probe at a time.

    Drive it with `while (size := search.next_candidate()) is not None:
    search.report(size, probe(size))`, then read `result()`. It starts at `start`,
    doubles while sizes fit and halves while they fail; `power` stops at the first
    boundary, `binsearch` then bisects between the largest fit and the smallest failure.
    Sizes at or above a known failure are never tried.
    """

    def __init__(
        self,
        min_size: int,
        max_size: int,
        *,
        start: int,
        margin: float = 0.1,
        mode: SearchMode = "binsearch",
        known_failures: Iterable[int] = (),
        max_trials: int = 25,
    ) -> None:
        self.min_size = min_size
        self.max_size = max_size
        self.start = min(max(start, min_size), max_size)
        self.margin = margin
        self.mode = mode
        self.max_trials = max_trials
        self.failures = {size for size in known_failures}
        self.largest_fit = 0
        self.trials: list[tuple[int, bool]] = []

    @property
    def smallest_failure(self) -> int:
        """Smallest size known not to fit (max_size + 1 when none)."""
        return min([self.max_size + 1, *self.failures])

    def next_candidate(self) -> int | None:
        if len(self.trials) >= self.max_trials:
            return None
        fail = self.smallest_failure
        if self.largest_fit == 0:
            # Nothing fitted yet: try `start`, then halve below the failure.
            candidate = (
                min(self.start, fail - 1) if not self.trials else max(self.min_size, fail // 2)
            )
            if candidate < self.min_size or candidate >= fail:
                return None
            return candidate
        if fail > self.max_size:
            # No failure yet: double up to max_size.
            if self.largest_fit >= self.max_size:
                return None
            return min(self.max_size, self.largest_fit * 2)
        if self.mode == "power" or fail - self.largest_fit <= 1:
            return None
        return (self.largest_fit + fail) // 2

    def report(self, batch_size: int, fits: bool) -> None:
        self.trials.append((batch_size, fits))
        if fits:
            self.largest_fit = max(self.largest_fit, batch_size)
        else:
            self.failures.add(batch_size)

    def result(self) -> int:
        """The size to train with: the largest fit less the margin, within bounds."""
        if self.largest_fit == 0:
            tried = ", ".join(f"{size}" for size, _ in self.trials) or "none"
            raise UserError(
                f"train.automations.batch_size.min_batch_size: no batch size from "
                f"{self.min_size} up fits in memory (tried: {tried}); lower lq_size or "
                f"min_batch_size, or enable the precision automation"
            )
        if not self.failures and self.largest_fit >= self.max_size:
            return self.largest_fit  # the cap was reached without an OOM: no margin needed
        return max(self.min_size, math.floor(self.largest_fit * (1 - self.margin)))


@register_automation
class BatchSizeAutomation(Automation):
    name = "batch_size"
    config_type = BatchSizeConfig
    oom_priority = 20
    # Measures the optimizer in use, so it runs after the optimizer race.
    startup_priority = 20

    def __init__(self, config: BatchSizeConfig) -> None:
        super().__init__(config)
        self.options = config
        self.failures: set[int] = set()
        self.effective_batch: int | None = None
        self.total_memory: int | None = None
        self.device_type = "cuda"
        self._window_peak = 0
        self._low_since: int | None = None
        self._last_fraction = math.nan

    @property
    def interval(self) -> int:
        return self.options.check_interval if self.options.grow else 0

    # -------------------------------------------------------------- search

    def new_search(self, start: int) -> BatchSizeSearch:
        # With keep_effective_batch a micro-batch never exceeds the effective batch: the
        # search trades accumulation for micro-batch size, it does not grow the batch.
        high = self.options.max_batch_size
        if self.options.keep_effective_batch and self.effective_batch is not None:
            high = max(self.options.min_batch_size, min(high, self.effective_batch))
        return BatchSizeSearch(
            self.options.min_batch_size,
            high,
            start=start,
            margin=self.options.margin,
            mode=self.options.search_mode,
            known_failures=self.failures,
            max_trials=self.options.max_trials,
        )

    def finish_search(
        self, search: BatchSizeSearch, knobs: Knobs, iteration: int
    ) -> list[Decision]:
        self.failures |= search.failures
        # A divisor of the effective batch, so batch x accum_iter is exactly what was asked.
        size = self._divisor_at_most(search.result())
        trials = ", ".join(f"{s}{'' if ok else ' (OOM)'}" for s, ok in search.trials)
        reason = (
            f"largest fitting batch {search.largest_fit} less margin {self.options.margin:.0%} "
            f"(tried {trials})"
        )
        return self._set_batch(knobs, size, reason)

    def run_startup(self, trials: TrialSteps, knobs: Knobs) -> list[Decision]:
        """Find the largest batch that fits with real steps (`steps_per_trial` per size)."""
        if not self.options.search:
            return []
        if self.device_type == "cpu" and not self.options.search_on_cpu:
            logger.info("[batch_size] no batch search on a CPU: memory is not what limits it")
            return []
        if self.effective_batch is None:
            self.effective_batch = knobs.batch_size * knobs.accum_iter
        search = self.new_search(knobs.batch_size)
        while (size := search.next_candidate()) is not None:
            outcome = trials(self.options.steps_per_trial, batch_size=size)
            search.report(size, not outcome.out_of_memory)
        # Nothing fitting even at min_batch_size raises UserError: the user has to fix it.
        return self.finish_search(search, knobs, 0)

    # --------------------------------------------------------------- hooks

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
        self.total_memory = info.device_total_memory
        self.device_type = info.device_type
        if self.effective_batch is None:
            self.effective_batch = knobs.batch_size * knobs.accum_iter
        if self.options.grow and self.total_memory is None:
            logger.warning("[batch_size] grow needs the device memory size; growth is off")
        low, high = self.options.min_batch_size, self.options.max_batch_size
        if not low <= knobs.batch_size <= high:
            size = min(max(knobs.batch_size, low), high)
            return self._set_batch(
                knobs, size, f"configured batch {knobs.batch_size} is outside [{low}, {high}]"
            )
        return []

    def on_oom(
        self, iteration: int, phase: Literal["train", "val"], knobs: Knobs
    ) -> list[Decision]:
        if phase == "val":
            return self.decide(
                knobs,
                "val_tiled",
                True,
                f"out of memory during validation at iteration {iteration}: tiled inference "
                "from now on (training batch unchanged)",
            )
        size = knobs.batch_size
        self.failures.add(size)
        self._low_since = None
        new = max(
            self.options.min_batch_size, min(size - 1, math.floor(size * self.options.oom_backoff))
        )
        new = self._divisor_at_most(new)
        if new >= size:
            logger.warning(
                "[batch_size] out of memory at batch %d, already min_batch_size: nothing left to shrink",
                size,
            )
            return []
        return self._set_batch(
            knobs,
            new,
            f"out of memory at batch {size} in iteration {iteration}; iteration is redone",
        )

    def observe_step(self, record: StepRecord) -> None:
        # peak_memory is a host integer from the allocator's counters: no device sync.
        if self.options.grow and record.peak_memory is not None:
            self._window_peak = max(self._window_peak, record.peak_memory)

    def on_interval(self, iteration: int, knobs: Knobs) -> list[Decision]:
        if self.total_memory is None or self._window_peak == 0:
            return []
        fraction = self._window_peak / self.total_memory
        self._window_peak = 0
        self._last_fraction = fraction
        if fraction >= self.options.target_memory_fraction:
            self._low_since = None
            return []
        if self._low_since is None:
            self._low_since = iteration - self.options.check_interval
        low_for = iteration - self._low_since
        if low_for < self.options.grow_patience:
            return []
        size = knobs.batch_size
        new = min(self.growth_cap(), max(size + 1, math.floor(size * self.options.grow_factor)))
        if new <= size:
            return []
        self._low_since = None
        reason = (
            f"peak memory {fraction:.0%} of the device stayed under target_memory_fraction "
            f"{self.options.target_memory_fraction:.0%} for {low_for} iterations"
        )
        return self._set_batch(knobs, new, reason)

    def growth_cap(self) -> int:
        """Largest size growth may reach: below every failure, within the bounds."""
        cap = self.options.max_batch_size
        if self.failures:
            cap = min(cap, min(self.failures) - 1)
        if self.options.keep_effective_batch and self.effective_batch is not None:
            cap = min(cap, self.effective_batch)
        return cap

    def _divisor_at_most(self, size: int) -> int:
        """With keep_effective_batch, the largest divisor of the effective batch <= size.

        Then batch x accum_iter equals the effective batch exactly, so the redone
        iteration sees the same samples and later batches the same stream.
        """
        effective = self.effective_batch
        if not self.options.keep_effective_batch or effective is None:
            return size
        for candidate in range(size, self.options.min_batch_size - 1, -1):
            fits_accum = effective // candidate <= self.options.max_accum_iter
            if effective % candidate == 0 and fits_accum:
                return candidate
        return size

    def _set_batch(self, knobs: Knobs, size: int, reason: str) -> list[Decision]:
        bounds = (float(self.options.min_batch_size), float(self.options.max_batch_size))
        decisions = self.decide(knobs, "batch_size", size, reason, bounds)
        if self.options.keep_effective_batch and self.effective_batch is not None:
            accum = min(self.options.max_accum_iter, max(1, round(self.effective_batch / size)))
            decisions += self.decide(
                knobs,
                "accum_iter",
                accum,
                f"batch {size} x accum_iter {accum} keeps the effective batch near "
                f"{self.effective_batch}",
                (1.0, float(self.options.max_accum_iter)),
            )
        return decisions

    def scalars(self) -> dict[str, float]:
        return {"peak_memory_fraction": self._last_fraction}

    # --------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "failures": sorted(self.failures),
            "effective_batch": self.effective_batch,
            "window_peak": self._window_peak,
            "low_since": self._low_since,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.failures = {int(size) for size in state["failures"]}
        effective = state["effective_batch"]
        self.effective_batch = None if effective is None else int(effective)
        self._window_peak = int(state["window_peak"])
        low_since = state["low_since"]
        self._low_since = None if low_since is None else int(low_since)
