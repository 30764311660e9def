"""`regularization_scheduling`: weight decay on a schedule, raised when overfitting.

`Knobs.weight_decay` is written by the trainer into every optimizer param group that
was configured with weight decay > 0; learning rates are untouched. While this
automation is on, `start` and `end` replace optim_g's `weight_decay`. The value follows
a cosine or linear ramp from `start` to `end` over training (as DINO ramps 0.04 -> 0.4;
the defaults keep that 10x ratio at the scale of SR AdamW settings), in `steps` equal
steps of progress. When `overfit_metric` is set, each validation compares the trend of
the mean training loss since the previous validation with the validation metric: the
loss still falling while the metric falls with confidence (a line through the last
`OVERFIT_WINDOW` validations: its gain plus three standard errors below zero) for
`patience` validations in a row is the overfitting gap, and the schedule is multiplied by `raise_factor` (a
permanent multiplier). The result always stays within
`[min_weight_decay, max_weight_decay]`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

import torch
from msgspec import Meta

from traiNNer.automations.augmentation_scheduling import ramp_progress, scheduled_value
from traiNNer.automations.base import (
    Automation,
    AutomationConfig,
    BetterOption,
    Decision,
    Knobs,
    StepRecord,
    TrainInfo,
    metric_value,
)
from traiNNer.automations.plateau import PlateauDetector
from traiNNer.automations.registry import register_automation
from traiNNer.automations.trend import fitted_gain

OPTION = "train.automations.regularization_scheduling"
NonNegativeFloat = Annotated[float, Meta(ge=0)]


# Validations a line is fitted through to decide that the metric is falling.
OVERFIT_WINDOW = 8


class RegularizationSchedulingConfig(AutomationConfig):
    """Options of the `regularization_scheduling` automation."""

    schedule: Annotated[
        Literal["cosine", "linear", "constant"],
        Meta(description="Ramp shape from start to end; constant uses end throughout."),
    ] = "cosine"
    start: Annotated[NonNegativeFloat, Meta(description="Weight decay at the start.")] = 1e-4
    end: Annotated[NonNegativeFloat, Meta(description="Weight decay at total_iter.")] = 1e-3
    steps: Annotated[
        int, Meta(ge=1, description="The ramp moves in this many equal steps of progress.")
    ] = 20
    update_interval: Annotated[
        int, Meta(ge=1, description="Iterations between schedule updates.")
    ] = 100
    min_weight_decay: Annotated[NonNegativeFloat, Meta(description="Lower bound.")] = 0.0
    max_weight_decay: Annotated[NonNegativeFloat, Meta(description="Upper bound.")] = 0.1
    overfit_metric: Annotated[
        str | None,
        Meta(description='Validation metric for the overfitting check ("psnr"); null: off.'),
    ] = None
    better: BetterOption = None
    loss_key: Annotated[
        str,
        Meta(description="Training loss followed (the sum of all losses if it is absent)."),
    ] = "l_g_total"
    patience: Annotated[
        int, Meta(ge=1, description="Consecutive overfitting validations before raising.")
    ] = 2
    threshold: Annotated[
        float, Meta(ge=0, description="Relative metric gain that counts as improving.")
    ] = 1e-4
    loss_threshold: Annotated[
        float, Meta(ge=0, description="Relative loss drop that counts as still falling.")
    ] = 0.0
    raise_factor: Annotated[
        float, Meta(gt=1, description="Multiplier applied when overfitting is detected.")
    ] = 1.5

    def __post_init__(self) -> None:
        low, high = self.min_weight_decay, self.max_weight_decay
        if low > high:
            raise ValueError(
                f"min_weight_decay ({low:g}) must not exceed max_weight_decay ({high:g})"
            )
        for key, value in (("start", self.start), ("end", self.end)):
            if not low <= value <= high:
                raise ValueError(
                    f"{key} ({value:g}) must lie within [min_weight_decay, max_weight_decay] "
                    f"= [{low:g}, {high:g}]"
                )


@register_automation
class RegularizationScheduling(Automation):
    name: ClassVar[str] = "regularization_scheduling"
    config_type: ClassVar[type[AutomationConfig]] = RegularizationSchedulingConfig
    metric_options = (("overfit_metric", "better"),)

    def __init__(self, config: RegularizationSchedulingConfig) -> None:
        config = self.completed(config)
        super().__init__(config)
        self.cfg = config
        self.total_iter = 1
        self.multiplier = 1.0
        self.overfit_count = 0
        self.previous_loss: float | None = None
        self.metric_tracker = PlateauDetector(
            "max" if config.better == "higher" else "min",
            patience=0,
            threshold=config.threshold,
            threshold_mode="rel",
        )
        self.metric_history: list[tuple[int, float]] = []
        # Device-side sums of the finite training losses since the last validation.
        self.loss_sum: torch.Tensor | None = None
        self.loss_count: torch.Tensor | None = None
        self.last_value: float | None = None
        self.last_loss: float | None = None

    @property
    def interval(self) -> int:
        return self.cfg.update_interval

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.cfg.min_weight_decay, self.cfg.max_weight_decay)

    def value_at(self, iteration: int) -> float:
        cfg = self.cfg
        progress = ramp_progress(iteration, self.total_iter, 0.0, 1.0, cfg.steps)
        scheduled = scheduled_value(cfg.schedule, cfg.start, cfg.end, progress)
        low, high = self.bounds
        return float(f"{min(max(scheduled * self.multiplier, low), high):.6g}")

    def _apply(self, iteration: int, knobs: Knobs, reason: str) -> list[Decision]:
        self.last_value = self.value_at(iteration)
        return self.decide(knobs, "weight_decay", self.last_value, reason, self.bounds)

    def _schedule_reason(self, iteration: int) -> str:
        reason = (
            f"{self.cfg.schedule} schedule {self.cfg.start:g} -> {self.cfg.end:g} at "
            f"{iteration / max(self.total_iter, 1):.0%} of training"
        )
        if self.multiplier != 1.0:
            reason += f", times overfitting multiplier {self.multiplier:g}"
        return reason

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
        self.total_iter = info.total_iter
        return self._apply(info.start_iter, knobs, self._schedule_reason(info.start_iter))

    def on_interval(self, iteration: int, knobs: Knobs) -> list[Decision]:
        return self._apply(iteration, knobs, self._schedule_reason(iteration))

    def observe_step(self, record: StepRecord) -> None:
        if self.cfg.overfit_metric is None:
            return
        loss = record.losses.get(self.cfg.loss_key)
        if loss is None:
            if not record.losses:
                return
            loss = torch.stack([v.detach().float() for v in record.losses.values()]).sum()
        loss = loss.detach().float()
        finite = torch.isfinite(loss)
        # Tensor ops only: skipped non-finite steps must not poison the mean.
        contribution = torch.where(finite, loss, torch.zeros_like(loss))
        if self.loss_sum is None or self.loss_count is None:
            self.loss_sum, self.loss_count = contribution, finite.float()
        else:
            self.loss_sum = self.loss_sum + contribution
            self.loss_count = self.loss_count + finite.float()

    def _mean_loss_since_last_validation(self) -> float | None:
        if self.loss_sum is None or self.loss_count is None:
            return None
        count = float(self.loss_count)  # read once per validation, not per step
        mean = float(self.loss_sum) / count if count > 0 else None
        self.loss_sum = self.loss_count = None
        return mean

    def after_validation(
        self, iteration: int, metrics: dict[str, float], knobs: Knobs
    ) -> list[Decision]:
        if self.cfg.overfit_metric is None:
            return []
        value = metric_value(metrics, self.cfg.overfit_metric, f"{OPTION}.overfit_metric")
        loss = self._mean_loss_since_last_validation()
        self.metric_tracker.update(value)
        if math.isfinite(value):
            self.metric_history = [*self.metric_history, (iteration, value)][-OVERFIT_WINDOW:]
        # The metric must be falling with confidence, not merely short of a noisy best: a
        # line through the last validations, its gain + 3 standard errors below zero.
        metric_improved = not self._metric_falls()
        previous, self.previous_loss = self.previous_loss, loss
        if loss is not None:
            self.last_loss = loss
        loss_falling = (
            loss is not None
            and previous is not None
            and loss < previous * (1.0 - self.cfg.loss_threshold)
        )
        self.overfit_count = self.overfit_count + 1 if loss_falling and not metric_improved else 0
        if self.overfit_count < self.cfg.patience:
            return []
        self.overfit_count = 0
        if self.value_at(iteration) >= self.cfg.max_weight_decay:
            return []  # already at the bound: a larger multiplier would change nothing
        self.multiplier *= self.cfg.raise_factor
        return self._apply(
            iteration,
            knobs,
            f"training loss fell ({previous:.4g} -> {loss:.4g}) while "
            f"{self.cfg.overfit_metric} fell with confidence for {self.cfg.patience} validations: "
            f"weight decay x{self.cfg.raise_factor:g} (multiplier {self.multiplier:g})",
        )

    def _metric_falls(self) -> bool:
        points = self.metric_history
        if len(points) < OVERFIT_WINDOW:
            return False
        fit = fitted_gain(points, points[-1][0] - points[0][0])
        if fit is None:
            return False
        sign = 1.0 if self.cfg.better == "higher" else -1.0
        return sign * fit[0] + 3.0 * fit[1] < 0

    def scalars(self) -> dict[str, float]:
        values = {"multiplier": self.multiplier, "overfit_count": float(self.overfit_count)}
        if self.last_value is not None:
            values["weight_decay"] = self.last_value
        if self.last_loss is not None:
            values["train_loss_mean"] = self.last_loss
        return values

    def state_dict(self) -> dict[str, Any]:
        return {
            "multiplier": self.multiplier,
            "overfit_count": self.overfit_count,
            "previous_loss": self.previous_loss,
            "metric": self.metric_tracker.state_dict(),
            "metric_history": [list(point) for point in self.metric_history],
            "loss_sum": None if self.loss_sum is None else self.loss_sum.detach().cpu(),
            "loss_count": None if self.loss_count is None else self.loss_count.detach().cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.multiplier = float(state["multiplier"])
        self.overfit_count = int(state["overfit_count"])
        self.previous_loss = state["previous_loss"]
        self.metric_tracker.load_state_dict(state["metric"])
        self.metric_history = [(int(it), float(v)) for it, v in state["metric_history"]]
        self.loss_sum = state["loss_sum"]
        self.loss_count = state["loss_count"]
