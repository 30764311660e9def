"""`dynamic_loss_scheduling`: each loss's weight adapts while training (dwa, balance).

The weighting maths (smoothed statistics, targets, the limited step) and the learned
`uncertainty` mode live in traiNNer/losses/dynamic_loss_scheduling.py; this automation
applies `dwa` / `balance` through the `loss_weights` knob (signed effective weight per
loss log name), so every change is bounded, counted, logged
(`automations/dynamic_loss_scheduling/loss_weights/<loss>` in TensorBoard, the decision
log) and broadcast from rank 0 under DDP. With `mode: uncertainty` the model trains the
weights itself and this automation decides nothing.

Each update (every `update_interval` iterations after `baseline_iterations` observed
steps) moves a multiplier m_k = weight / loss_weight by at most `adaptation_rate`
toward its target, within [min_weight, max_weight]; a target within
`adaptation_threshold` of the current multiplier is ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import torch
from msgspec import Meta

from traiNNer.automations.base import (
    Automation,
    AutomationConfig,
    Decision,
    Knobs,
    StepRecord,
    TrainInfo,
)
from traiNNer.automations.registry import register_automation
from traiNNer.losses.dynamic_loss_scheduling import (
    Mode,
    SmoothedLosses,
    balance_targets,
    dwa_rates,
    dwa_targets,
    limited_step,
)


class DynamicLossSchedulingConfig(AutomationConfig):
    """`train.dynamic_loss_scheduling` (or `train.automations.dynamic_loss_scheduling`)."""

    max_adjustments: Annotated[
        int,
        Meta(
            ge=0,
            description="After this many weight updates the weights stay as they are "
            "(0 = no limit: every update is already bounded by adaptation_rate and "
            "min_weight / max_weight).",
        ),
    ] = 0
    mode: Annotated[
        Mode,
        Meta(
            description="dwa: more weight to losses that descend slower; balance: keep each "
            "loss's share of the (scale-free) total at its loss_weight share; uncertainty: "
            "learned per-loss log-variance."
        ),
    ] = "balance"
    momentum: Annotated[
        float,
        Meta(
            ge=0,
            lt=1,
            description="EMA factor applied once per update to the per-interval mean losses "
            "(0 = use only the last interval). Higher is steadier but lags: about "
            "momentum / (1 - momentum) intervals.",
        ),
    ] = 0.8
    adaptation_rate: Annotated[
        float,
        Meta(
            gt=0,
            le=1,
            description="Largest relative change of a weight per update (0.1 = 10%).",
        ),
    ] = 0.1
    min_weight: Annotated[
        float,
        Meta(gt=0, le=1, description="Lowest weight, as a multiple of the configured loss_weight."),
    ] = 0.2
    max_weight: Annotated[
        float,
        Meta(ge=1, description="Highest weight, as a multiple of the configured loss_weight."),
    ] = 5.0
    adaptation_threshold: Annotated[
        float,
        Meta(
            ge=0,
            lt=1,
            description="Ignore a wanted change smaller than this fraction of the current "
            "weight (relative, so independent of the loss's scale; dwa and balance).",
        ),
    ] = 0.02
    baseline_iterations: Annotated[
        int,
        Meta(
            ge=0,
            description="Steps observed with the configured weights before any change; "
            "balance and uncertainty take their reference loss values here.",
        ),
    ] = 1000
    update_interval: Annotated[
        int, Meta(ge=1, description="Iterations between weight updates.")
    ] = 200
    rate_window: Annotated[
        int,
        Meta(
            ge=3,
            description="dwa: updates whose interval means a line is fitted through to "
            "measure each loss's descent rate.",
        ),
    ] = 20
    noise_sigmas: Annotated[
        float,
        Meta(
            ge=0,
            description="dwa: a descent rate within this many standard errors of the mean "
            "rate of all losses counts as the mean (noise moves no weight).",
        ),
    ] = 3.0
    temperature: Annotated[
        float,
        Meta(
            gt=0,
            description="dwa softmax temperature over per-interval descent rates; lower is "
            "sharper. Rates differ by a few percent per interval, hence the small default.",
        ),
    ] = 0.05
    uncertainty_lr: Annotated[
        Annotated[float, Meta(gt=0)] | None,
        Meta(
            description="Learning rate of the uncertainty log-variances (null = the "
            "generator's learning rate)."
        ),
    ] = None


@register_automation
class DynamicLossScheduling(Automation):
    name: ClassVar[str] = "dynamic_loss_scheduling"
    config_type: ClassVar[type[AutomationConfig]] = DynamicLossSchedulingConfig

    def __init__(self, config: DynamicLossSchedulingConfig) -> None:
        super().__init__(config)
        self.cfg = config
        # The option file's signed weights; the multipliers are knob / these.
        self.base: dict[str, float] = {}
        self.stats: SmoothedLosses | None = None
        self._saved_stats: dict[str, Any] | None = None
        # Multipliers after the last update, published every interval (TensorBoard
        # `automations/dynamic_loss_scheduling/multiplier/<loss>`).
        self._multipliers: dict[str, float] = {}
        # dwa: the last `rate_window` interval means, one list of per-loss values each.
        self.interval_means: list[list[float]] = []

    @property
    def interval(self) -> int:
        return 0 if self.cfg.mode == "uncertainty" else self.cfg.update_interval

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
        if dict(info.loss_weights) != self.base:
            # A fresh run, or the losses changed since the state was saved: start afresh.
            self._saved_stats = None
            self.interval_means = []
        self.base = dict(info.loss_weights)
        return []

    def observe_step(self, record: StepRecord) -> None:
        if self.interval == 0 or not self.base:
            return
        values = torch.stack([record.losses[n].float().reshape(()) for n in self.base])
        if self.stats is None:
            self.stats = SmoothedLosses(len(self.base), self.cfg.momentum, values.device)
            if self._saved_stats is not None:
                self.stats.load_state_dict(self._saved_stats)
        self.stats.observe(values)

    def on_interval(self, iteration: int, knobs: Knobs) -> list[Decision]:
        stats = self.stats
        if stats is None or not stats.refresh():
            return []
        assert stats.smoothed is not None and stats.means is not None
        if self.cfg.mode == "dwa":
            self.interval_means = [*self.interval_means, stats.means.tolist()][
                -self.cfg.rate_window :
            ]
        if stats.steps_observed < self.cfg.baseline_iterations or stats.reference is None:
            # The reference is the smoothed loss at the end of the baseline.
            stats.reference = stats.smoothed
            if stats.steps_observed < self.cfg.baseline_iterations:
                return []
        names = list(self.base)
        smoothed = stats.smoothed.tolist()
        if self.cfg.mode == "dwa":
            if len(self.interval_means) < self.cfg.rate_window:
                return []
            rates = dwa_rates(self.interval_means, self.cfg.noise_sigmas)
            targets = dwa_targets(rates, self.cfg.temperature)
        else:
            magnitudes = [abs(self.base[n]) for n in names]
            targets = balance_targets(smoothed, stats.reference.tolist(), magnitudes)
        decisions: list[Decision] = []
        for name, target in zip(names, targets, strict=True):
            if target is None:
                continue  # a smoothed loss <= 0 carries no relative information
            base = self.base[name]
            current = knobs.loss_weights.get(name, base) / base
            new = limited_step(
                current,
                target,
                self.cfg.adaptation_rate,
                self.cfg.adaptation_threshold,
                self.cfg.min_weight,
                self.cfg.max_weight,
            )
            self._multipliers[name] = new
            low, high = sorted((base * self.cfg.min_weight, base * self.cfg.max_weight))
            reason = (
                f"{self.cfg.mode}: target multiplier {target:.3g}, now x{new:.3g} of "
                f"loss_weight {base:g} (at most {self.cfg.adaptation_rate:.0%} per update)"
            )
            decisions += self.decide(knobs, f"loss_weights.{name}", base * new, reason, (low, high))
        return decisions

    def scalars(self) -> dict[str, float]:
        values = {f"multiplier/{name}": m for name, m in self._multipliers.items()}
        if self.stats is not None and self.stats.smoothed is not None:
            smoothed = self.stats.smoothed.tolist()
            values.update({f"smoothed/{n}": v for n, v in zip(self.base, smoothed, strict=True)})
        return values

    def state_dict(self) -> dict[str, Any]:
        stats = self.stats.state_dict() if self.stats is not None else self._saved_stats
        return {
            "mode": self.cfg.mode,
            "base": dict(self.base),
            "stats": stats,
            "multipliers": dict(self._multipliers),
            "interval_means": [list(means) for means in self.interval_means],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("mode") != self.cfg.mode:
            return  # another mode's statistics mean nothing to this one: start afresh
        self.base = {k: float(v) for k, v in state["base"].items()}
        self._multipliers = {k: float(v) for k, v in state["multipliers"].items()}
        self.interval_means = [[float(v) for v in means] for means in state["interval_means"]]
        # Tensors go to the loss device at the first observed step.
        self._saved_stats = state["stats"]
        self.stats = None
