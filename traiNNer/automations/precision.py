"""`precision`: falls back fp16 -> bf16 -> fp32 when mixed precision is unstable.

Signals: the GradScaler's loss scale (fp16 only; its minimum is kept on the device and
read every `check_interval` iterations) and the trainer's reports of skipped
non-finite steps. A single non-finite step never causes a switch: it takes
`nonfinite_limit` of them within `nonfinite_window` iterations, or a loss scale below
`loss_scale_floor`. bf16 is skipped when the device does not support it.

Snapshots: while training is clean the automation asks the trainer to keep a copy of
the weights and optimizer state (`save_good_state`, once per `snapshot_interval`
iterations, and at every (re)start). A step the trainer skipped (non-finite loss or
gradient) changed no weight, and under fp16 the GradScaler skips overflowing steps
itself, so a burst of non-finite steps leaves the weights intact: snapshots go on and
training simply continues at the higher precision. Only when the switch comes at the
end of an unbroken run of `nonfinite_limit` or more skipped steps (what weights or
optimizer moments that went non-finite look like: every forward fails) does it also
ask for the last snapshot (`restore_last_good_state`); the trainer restores it only if
the weights or the optimizer state really hold a non-finite value, and says so. The
streak is counted from `StepRecord.applied`, a host value: nothing is read from the
device per step.

Going back to a lower precision happens only after `probation_iters` clean
iterations at the higher one (0 = never), and each precision is retried at most once.

Memory pressure: on the first out-of-memory error of a training step the automation
turns on activation checkpointing (when the architecture supports it); on later ones
it stays silent so that the batch_size automation shrinks the batch.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import torch
from msgspec import Meta

from traiNNer.automations.base import (
    Automation,
    AutomationConfig,
    Decision,
    Knobs,
    Precision,
    StepRecord,
    TrainInfo,
)
from traiNNer.automations.registry import register_automation

# From least to most numerically robust; fallbacks only move right.
LADDER: tuple[Precision, ...] = ("fp16", "bf16", "fp32")


class PrecisionConfig(AutomationConfig):
    """Options of the `precision` automation."""

    check_interval: Annotated[
        int, Meta(ge=1, description="Iterations between reads of the loss scale.")
    ] = 50
    loss_scale_floor: Annotated[
        float,
        Meta(
            gt=0,
            description="fp16 is unstable when the GradScaler's scale falls below this "
            "(it starts at 65536 and halves on every overflow).",
        ),
    ] = 1.0
    nonfinite_limit: Annotated[
        int,
        Meta(
            ge=2,
            description="Non-finite steps within `nonfinite_window` that trigger a switch "
            "(at least 2: one NaN never switches).",
        ),
    ] = 3
    nonfinite_window: Annotated[
        int, Meta(ge=1, description="Iterations over which non-finite steps are counted.")
    ] = 200
    probation_iters: Annotated[
        int,
        Meta(
            ge=0,
            description="Clean iterations at the higher precision before the lower one is "
            "retried (once); 0 never goes back.",
        ),
    ] = 0
    snapshot_interval: Annotated[
        int,
        Meta(
            ge=1,
            description="Iterations between requests to snapshot weights and optimizer while "
            "training is clean (no non-finite step within the window, loss scale above floor).",
        ),
    ] = 1000
    restore_on_switch: Annotated[
        bool,
        Meta(
            description="On a switch after an unbroken run of non-finite steps, ask the "
            "trainer to restore the last good snapshot (it does if the weights or optimizer "
            "state hold a non-finite value)."
        ),
    ] = True
    activation_checkpointing: Annotated[
        bool,
        Meta(
            description="On a training out-of-memory error, turn on activation checkpointing "
            "(architectures that support it) before the batch shrinks."
        ),
    ] = True


def _fallback_for(current: Precision, bf16_supported: bool) -> Precision | None:
    """The next more robust precision, or None at fp32."""
    if current == "fp16":
        return "bf16" if bf16_supported else "fp32"
    if current == "bf16":
        return "fp32"
    return None


@register_automation
class PrecisionAutomation(Automation):
    name: ClassVar[str] = "precision"
    config_type: ClassVar[type[AutomationConfig]] = PrecisionConfig
    actions = frozenset({"save_good_state", "restore_last_good_state"})
    # Memory savings (activation checkpointing) come before a smaller batch.
    oom_priority = 10

    def __init__(self, config: PrecisionConfig) -> None:
        super().__init__(config)
        self.cfg = config
        self.bf16_supported = False
        self.supports_checkpointing = False
        # Persistent state (see state_dict).
        self.current: Precision | None = None
        self.fell_from: list[Precision] = []
        self.retried: list[Precision] = []
        self.nonfinite_iters: list[int] = []
        self.switched_at: int | None = None
        self.last_nonfinite: int | None = None
        self.last_snapshot: int | None = None
        self.checkpointing_on = False
        self.train_ooms = 0
        self.min_scale: torch.Tensor | None = None
        # Device flag: an applied step without a scaler had a non-finite loss or gradient.
        # Steps skipped in a row up to now (the trainer's StepRecord.applied).
        self.skipped_streak = 0
        # Monitoring only.
        self.last_scale: float | None = None

    @property
    def interval(self) -> int:
        return self.cfg.check_interval

    # -- hooks -------------------------------------------------------------------------

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
        self.bf16_supported = info.bf16_supported
        self.supports_checkpointing = info.supports_activation_checkpointing
        resumed = self.current is not None
        wanted = self.current if self.current is not None else knobs.precision
        decisions: list[Decision] = []
        if wanted == "bf16" and not self.bf16_supported:
            decisions += self._switch_to(
                "fp32", info.start_iter, knobs, f"bf16 is not supported on {info.device_type}"
            )
        else:
            self.current = wanted
            decisions += self.decide(
                knobs, "precision", wanted, "resume: keep the precision chosen before"
            )
        if resumed and self.checkpointing_on:
            decisions += self.decide(
                knobs, "activation_checkpointing", True, "resume: keep activation checkpointing"
            )
        # Always: the trainer's snapshots live in memory and do not survive a restart.
        return decisions + self._snapshot(info.start_iter, "training (re)starts from a good state")

    def observe_step(self, record: StepRecord) -> None:
        if record.applied:  # skipped steps are counted by on_nonfinite, which comes first
            self.skipped_streak = 0
        if record.loss_scale is None:
            return
        scale = record.loss_scale.detach()
        # Device-side running minimum: no host read until on_interval.
        if self.min_scale is None:
            self.min_scale = scale.clone()
        else:
            if self.min_scale.device != scale.device:  # restored from a CPU state
                self.min_scale = self.min_scale.to(scale.device)
            self.min_scale = torch.minimum(self.min_scale, scale)

    def on_interval(self, iteration: int, knobs: Knobs) -> list[Decision]:
        self._forget_old_nonfinite(iteration)
        scale_ok = True
        if self.min_scale is not None:
            self.last_scale = float(self.min_scale)
            self.min_scale = None
            if knobs.precision == "fp16" and self.last_scale < self.cfg.loss_scale_floor:
                scale_ok = False
                switch = self._fall_back(
                    iteration,
                    knobs,
                    f"loss scale fell to {self.last_scale:g} "
                    f"(< loss_scale_floor {self.cfg.loss_scale_floor:g})",
                )
                if switch:
                    return switch
        probation = self._end_probation(iteration, knobs)
        if probation:
            return probation
        clean = scale_ok and not self.nonfinite_iters
        # One snapshot per `snapshot_interval` cell of iterations, at its first clean check:
        # a fixed grid, so a resume does not shift later snapshots.
        every = self.cfg.snapshot_interval
        due = self.last_snapshot is None or iteration // every > self.last_snapshot // every
        if clean and due:
            return self._snapshot(
                iteration, f"no non-finite step in the last {self.cfg.nonfinite_window} iterations"
            )
        return []

    def on_nonfinite(self, iteration: int, knobs: Knobs) -> list[Decision]:
        self.skipped_streak += 1
        self.nonfinite_iters.append(iteration)
        self.last_nonfinite = iteration
        self._forget_old_nonfinite(iteration)
        count = len(self.nonfinite_iters)
        if count < self.cfg.nonfinite_limit:
            return []
        return self._fall_back(
            iteration,
            knobs,
            f"{count} non-finite steps within {self.cfg.nonfinite_window} iterations "
            f"(nonfinite_limit {self.cfg.nonfinite_limit})",
        )

    def on_oom(
        self, iteration: int, phase: Literal["train", "val"], knobs: Knobs
    ) -> list[Decision]:
        if phase != "train":
            return []
        self.train_ooms += 1
        if (
            not self.cfg.activation_checkpointing
            or not self.supports_checkpointing
            or knobs.activation_checkpointing
        ):
            return []
        self.checkpointing_on = True
        return self.decide(
            knobs,
            "activation_checkpointing",
            True,
            "out of memory in a training step: recompute activations before shrinking the batch",
        )

    def _weights_may_be_corrupt(self) -> bool:
        return self.skipped_streak >= self.cfg.nonfinite_limit

    # -- decisions ---------------------------------------------------------------------

    def _fall_back(self, iteration: int, knobs: Knobs, cause: str) -> list[Decision]:
        target = _fallback_for(knobs.precision, self.bf16_supported)
        if target is None:
            return []  # already fp32: nothing more robust; the trainer's NaN limit applies
        self.fell_from.append(knobs.precision)
        decisions: list[Decision] = []
        restore = self.cfg.restore_on_switch and self.last_snapshot is not None
        if restore and self._weights_may_be_corrupt():
            decisions.append(
                Decision(
                    self.name,
                    "restore_last_good_state",
                    None,
                    self.last_snapshot,
                    f"the last {self.skipped_streak} steps at {knobs.precision} were all "
                    "non-finite: restore weights and optimizer from iteration "
                    f"{self.last_snapshot} if they hold non-finite values",
                )
            )
        return decisions + self._switch_to(target, iteration, knobs, cause)

    def _end_probation(self, iteration: int, knobs: Knobs) -> list[Decision]:
        if self.cfg.probation_iters == 0 or not self.fell_from or self.switched_at is None:
            return []
        clean_since = max(self.switched_at, self.last_nonfinite or self.switched_at)
        if iteration - clean_since < self.cfg.probation_iters:
            return []
        target = self.fell_from[-1]
        if target in self.retried:
            return []  # it failed after its one retry: stay where training is stable
        self.fell_from.pop()
        self.retried.append(target)
        return self._switch_to(
            target,
            iteration,
            knobs,
            f"no non-finite step for {iteration - clean_since} iterations at {knobs.precision} "
            f"(probation_iters {self.cfg.probation_iters}): retrying {target} once",
        )

    def _switch_to(
        self, target: Precision, iteration: int, knobs: Knobs, reason: str
    ) -> list[Decision]:
        self.current = target
        self.switched_at = iteration
        self.nonfinite_iters.clear()
        self.min_scale = None
        return self.decide(knobs, "precision", target, reason)

    def _snapshot(self, iteration: int, reason: str) -> list[Decision]:
        self.last_snapshot = iteration
        return [Decision(self.name, "save_good_state", None, iteration, reason)]

    def _forget_old_nonfinite(self, iteration: int) -> None:
        oldest = iteration - self.cfg.nonfinite_window
        self.nonfinite_iters = [i for i in self.nonfinite_iters if i > oldest]

    # -- monitoring and resume ---------------------------------------------------------

    def scalars(self) -> dict[str, float]:
        values: dict[str, float] = {
            "nonfinite_in_window": float(len(self.nonfinite_iters)),
            "activation_checkpointing": float(self.checkpointing_on),
        }
        if self.current is not None:
            values["precision_level"] = float(LADDER.index(self.current))
        if self.last_scale is not None:
            values["loss_scale_min"] = self.last_scale
        return values

    def state_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "fell_from": list(self.fell_from),
            "retried": list(self.retried),
            "nonfinite_iters": list(self.nonfinite_iters),
            "switched_at": self.switched_at,
            "last_nonfinite": self.last_nonfinite,
            "last_snapshot": self.last_snapshot,
            "checkpointing_on": self.checkpointing_on,
            "train_ooms": self.train_ooms,
            "min_scale": None if self.min_scale is None else self.min_scale.detach().cpu(),
            "skipped_streak": self.skipped_streak,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = state["current"]
        self.fell_from = list(state["fell_from"])
        self.retried = list(state["retried"])
        self.nonfinite_iters = [int(i) for i in state["nonfinite_iters"]]
        self.switched_at = state["switched_at"]
        self.last_nonfinite = state["last_nonfinite"]
        self.last_snapshot = state["last_snapshot"]
        self.checkpointing_on = bool(state["checkpointing_on"])
        self.train_ooms = int(state["train_ooms"])
        min_scale = state["min_scale"]
        self.min_scale = None if min_scale is None else min_scale.clone()
        self.skipped_streak = int(state.get("skipped_streak", 0))
