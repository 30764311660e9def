"""`early_stopping`: stops training when a validation metric stops improving or diverges.

The stop is decided statistically, on the trend of the metric rather than on its
noisy best: over the last `patience` validation intervals (patience x the option file's
`val_freq` iterations, so the span is the same when validation_frequency changes the
interval) a straight line is fitted to the validations, and training stops when even the
upper confidence bound of the gain it gives over that span (estimate + `noise_sigmas`
standard errors, never less than the recent fits' noise gives) is not above `min_delta`, in the metric's own unit (dB for PSNR). A metric
that still gains `min_delta` per patience span is never stopped by its noise; a flat or
falling one is. When the LR multiplier changes (lr_scheduling or multi_metric_lr cut the
LR), the fit starts again from that validation: a cut is the remedy for a plateau, and
it gets a full patience span to work before the run is judged. Every message gives the
iteration span. A non-finite metric stops the run only when
`nonfinite_validations` validations in a row were non-finite: one bad validation (a
transient NaN in inference) does not end a two-day run. On stop the automation sets
`Knobs.stop_requested` and, with `restore_best_weights`, asks the trainer to load the
best weights into the final model. The trainer saves the final checkpoint and the best
weights as `net_g_best`, and prints `summary()`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from msgspec import Meta

from traiNNer.automations.base import (
    Automation,
    AutomationConfig,
    BetterOption,
    Decision,
    Knobs,
    TrainInfo,
)
from traiNNer.automations.registry import register_automation
from traiNNer.automations.trend import NoiseFloor


class EarlyStoppingConfig(AutomationConfig):
    """Options of the `early_stopping` automation."""

    metric: Annotated[
        str | None,
        Meta(
            description="Validation metric to monitor, e.g. psnr or <dataset>/psnr; null: "
            "the first of val.metrics."
        ),
    ] = None
    better: BetterOption = None
    patience: Annotated[
        int,
        Meta(
            ge=1,
            description="Stop after this many validation intervals (at the option file's "
            "val_freq, so counted in iterations) without improvement.",
        ),
    ] = 10
    min_delta: Annotated[
        float,
        Meta(
            ge=0,
            description="Smallest gain that counts as improvement, in the metric's unit "
            "(dB for PSNR).",
        ),
    ] = 0.0
    min_iterations: Annotated[
        int, Meta(ge=0, description="No stop for lack of improvement before this iteration.")
    ] = 0
    noise_sigmas: Annotated[
        float,
        Meta(
            ge=0,
            description="Standard errors of the fitted gain added before it is compared "
            "with min_delta (higher: fewer stops caused by noise, later stops).",
        ),
    ] = 3.0
    check_finite: Annotated[
        bool,
        Meta(
            description="Stop when the metric is NaN or infinite nonfinite_validations times in a row."
        ),
    ] = True
    nonfinite_validations: Annotated[
        int, Meta(ge=1, description="Consecutive non-finite validations that stop the run.")
    ] = 2
    divergence_threshold: Annotated[
        Annotated[float, Meta(gt=0)] | None,
        Meta(
            description="Stop at once when the metric is worse than the best by more "
            "than this (in the metric's unit); None disables the rule."
        ),
    ] = None
    restore_best_weights: Annotated[
        bool, Meta(description="On stop, load the best weights into the final model.")
    ] = False


@register_automation
class EarlyStopping(Automation):
    name = "early_stopping"
    config_type = EarlyStoppingConfig
    actions = frozenset({"restore_best_weights"})
    metric_options = (("metric", "better"),)
    default_metric_keys = ("metric",)

    def __init__(self, config: EarlyStoppingConfig) -> None:
        config = self.completed(config)
        super().__init__(config)
        self.options = config
        self.best = -math.inf if config.better == "higher" else math.inf
        self.best_iter: int | None = None
        self.bad_validations = 0
        self.validations = 0
        self.nonfinite_in_a_row = 0
        self.patience_iters = config.patience
        # Finite validations within the last patience span: (iteration, value).
        self.history: list[tuple[int, float]] = []
        self.last_fit: tuple[float, float] = (math.nan, math.nan)  # gain, its standard error
        self.stop_iter: int | None = None
        self.stop_reason = ""
        # The LR multiplier at the last validation: a change restarts the fitted span.
        self.lr_multiplier: float | None = None
        self.noise = NoiseFloor()

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
        self.patience_iters = self.options.patience * max(1, info.val_freq)
        return []

    def _gain(self, value: float) -> float:
        """How much `value` beats the best (positive = better), in the metric's unit."""
        return value - self.best if self.options.better == "higher" else self.best - value

    def after_validation(
        self, iteration: int, metrics: dict[str, float], knobs: Knobs
    ) -> list[Decision]:
        if self.stop_iter is not None:
            return []
        metric = self.options.metric
        if metric not in metrics:
            raise ValueError(
                f"train.automations.early_stopping.metric: '{metric}' is not among the "
                f"validation metrics ({', '.join(sorted(metrics))})"
            )
        value = float(metrics[metric])
        self.validations += 1
        if not math.isfinite(value):
            self.bad_validations += 1
            self.nonfinite_in_a_row += 1
            if self.options.check_finite and (
                self.nonfinite_in_a_row >= self.options.nonfinite_validations
            ):
                return self._stop(
                    iteration,
                    knobs,
                    f"{metric} is {value} at iteration {iteration} "
                    f"({self.nonfinite_in_a_row} validations in a row); {self._best_text()}",
                )
            # Counted as no gain: a metric that stays non-finite for the patience span stops.
            last_finite = self.history[-1][0] if self.history else 0
            if iteration - last_finite >= self.patience_iters:
                return self._stop(
                    iteration,
                    knobs,
                    f"{metric} not finite since iteration {last_finite}; {self._best_text()}",
                )
            return []
        self.nonfinite_in_a_row = 0
        if self.lr_multiplier is not None and knobs.lr_multiplier != self.lr_multiplier:
            self.history = []  # the LR was cut: judge the run from here on
        self.lr_multiplier = knobs.lr_multiplier
        self.history = [
            (it, v) for it, v in self.history if iteration - it <= self.patience_iters
        ] + [(iteration, value)]
        if self.best_iter is None or self._gain(value) > 0:
            self.best = value
            self.best_iter = iteration
            self.bad_validations = 0
        else:
            self.bad_validations += 1
        limit = self.options.divergence_threshold
        if limit is not None and -self._gain(value) > limit:
            return self._stop(
                iteration,
                knobs,
                f"{metric} {value:.4g} is worse than the best {self.best:.4g} "
                f"(iteration {self.best_iter}) by more than divergence_threshold {limit:g}",
            )
        return self._patience_check(iteration, knobs)

    def _fitted_gain(self) -> tuple[float, float] | None:
        """Gain over the patience span from a line through the history, and its error."""
        points = self.history
        if len(points) < 2 or points[-1][0] - points[0][0] < self.patience_iters * 0.9:
            return None
        fit = self.noise.fitted_gain(points, self.patience_iters)
        if fit is None:
            return None
        sign = 1.0 if self.options.better == "higher" else -1.0
        return sign * fit[0], fit[1]

    def _patience_check(self, iteration: int, knobs: Knobs) -> list[Decision]:
        if iteration < self.options.min_iterations:
            return []
        fit = self._fitted_gain()
        if fit is None:
            return []
        gain, error = fit
        self.last_fit = fit
        bound = gain + self.options.noise_sigmas * error
        if bound > self.options.min_delta:
            return []
        since = self.history[0][0]
        reason = (
            f"{self.options.metric} gained {gain:+.4g} (+/- {error:.2g}) over iterations "
            f"{since}-{iteration}; even {self.options.noise_sigmas:g} standard errors up "
            f"({bound:+.4g}) is not above min_delta {self.options.min_delta:g}; {self._best_text()}"
        )
        return self._stop(iteration, knobs, reason)

    def _stop(self, iteration: int, knobs: Knobs, reason: str) -> list[Decision]:
        self.stop_iter = iteration
        self.stop_reason = reason
        decisions = self.decide(knobs, "stop_requested", True, reason)
        if self.options.restore_best_weights and self.best_iter is not None:
            decisions.append(
                Decision(
                    self.name,
                    "restore_best_weights",
                    None,
                    True,
                    "early stop: the final model gets the best validated weights (net_g_best)",
                )
            )
        return decisions

    def _best_text(self) -> str:
        metric = self.options.metric
        if self.best_iter is None:
            return f"no finite {metric} yet"
        return f"best {metric} {self.best:.4f} at iteration {self.best_iter}"

    def summary(self) -> str:
        if self.stop_iter is None:
            return (
                f"early stopping not triggered after {self.validations} validations "
                f"({self.bad_validations} without improvement); {self._best_text()}"
            )
        return f"early stop at iteration {self.stop_iter}: {self.stop_reason}"

    def scalars(self) -> dict[str, float]:
        gain, error = self.last_fit
        return {
            "best": self.best,
            "bad_validations": float(self.bad_validations),
            "fitted_gain": gain,
            "fitted_gain_se": error,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_iter": self.best_iter,
            "bad_validations": self.bad_validations,
            "validations": self.validations,
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "history": [list(point) for point in self.history],
            "stop_iter": self.stop_iter,
            "stop_reason": self.stop_reason,
            "lr_multiplier": self.lr_multiplier,
            "noise": self.noise.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_iter = None if state["best_iter"] is None else int(state["best_iter"])
        self.bad_validations = int(state["bad_validations"])
        self.validations = int(state["validations"])
        self.nonfinite_in_a_row = int(state["nonfinite_in_a_row"])
        self.history = [(int(it), float(v)) for it, v in state["history"]]
        self.stop_iter = None if state["stop_iter"] is None else int(state["stop_iter"])
        self.stop_reason = str(state["stop_reason"])
        self.lr_multiplier = state.get("lr_multiplier")
        self.noise.load_state_dict(state.get("noise", []))
