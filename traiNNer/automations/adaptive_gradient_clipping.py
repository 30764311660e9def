"""`adaptive_gradient_clipping`: sets each network's clip threshold from recent gradient norms.

The trainer passes `Knobs.clip_threshold[<network>]` to clip_grad_norm_. Every step the
gradient norm goes into a preallocated ring buffer on the device (tensor writes only);
every `monitoring_frequency` iterations the window is read once and the threshold is
re-derived, by `mode`:
- `zscore` (ZClip): EMA mean and variance of the norm (decay `zscore_alpha`, spikes
  enter the EMA clipped), started after `warmup_steps`; target = mean +
  `zscore_threshold` x std. The EMA runs over the window's new norms in order at each
  interval, and the threshold is refreshed per interval rather than per step, because
  the trainer reads it as a host number.
- `percentile` (AutoClip): target = the `percentile`-th percentile of the window.
- `rule` (the seeds' rule): raise by `adjustment_factor` when the window's max exceeds
  the threshold, lower by it when the window's mean is under 30% of the threshold.
  Guards: a raise also needs more than `target_clip_rate` of the window clipped (a rare
  spike is what clipping is for), and a lowering must keep the threshold above the
  window's (1 - target_clip_rate) quantile, so the threshold never walks down into
  the norms it lets through.
In `zscore` and `percentile` modes `adjustment_factor` is a dead band: the threshold moves
to its target only when they differ by more than that ratio. Once there are enough
intervals, the target is the mean (in log) of the last `SMOOTHED_TARGETS` raw targets and
the dead band is never narrower than three standard errors of that mean (from the spread
of the last `TARGET_HISTORY` targets): a dead band narrower than the noise of its own
target would follow noise and spend `max_adjustments` on it. Under fp16 a non-finite
norm is the GradScaler's overflow (a skipped step, the scale halves), not an exploding
gradient: it is counted as `overflows` and left out of the statistics. Outside fp16 a
non-finite norm belongs to a step the trainer skipped (the precision automation and the
trainer's non-finite limit deal with those); it is not an exploding gradient either. After a change a network's
threshold stays put for `cooldown` iterations. Thresholds stay in
[min_threshold, max_threshold]. Networks (generator, discriminator) keep separate
statistics. Each interval logs threshold, windowed clip rate, norm mean and max, and
each exploding gradient (norm above `exploding_factor` x threshold) with its iteration.
The clip rate counts the window's steps whose norm exceeded the threshold then in force,
which is exactly when clip_grad_norm_ clips.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any, Literal

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
from traiNNer.automations.decision_log import LOGGER_NAME
from traiNNer.automations.registry import register_automation

logger = logging.getLogger(LOGGER_NAME)

ClipMode = Literal["zscore", "percentile", "rule"]
# Rule mode lowers the threshold when the window's mean is under this share of it.
RULE_LOW_MEAN_SHARE = 0.3
# Exploding gradients logged per network and interval (the rest are counted).
MAX_EVENTS_LOGGED = 5
# Intervals of target history whose jitter sets the smallest dead band.
TARGET_HISTORY = 100
# Targets averaged into the one the threshold moves to.
SMOOTHED_TARGETS = 10


class AdaptiveGradientClippingConfig(AutomationConfig):
    """Options of the `adaptive_gradient_clipping` automation."""

    mode: Annotated[
        ClipMode,
        Meta(description="zscore (ZClip), percentile (AutoClip) or rule (raise/lower steps)."),
    ] = "zscore"
    initial_threshold: Annotated[
        float, Meta(gt=0, description="Threshold until the first adjustment.")
    ] = 1.0
    min_threshold: Annotated[float, Meta(gt=0, description="Lowest threshold.")] = 0.01
    max_threshold: Annotated[float, Meta(gt=0, description="Highest threshold.")] = 10.0
    adjustment_factor: Annotated[
        float,
        Meta(
            gt=1,
            description="rule: step of each raise/lower; zscore/percentile: smallest "
            "target/threshold ratio that causes a change.",
        ),
    ] = 1.2
    monitoring_frequency: Annotated[
        int, Meta(ge=1, description="Iterations between two threshold updates.")
    ] = 50
    gradient_history_size: Annotated[
        int, Meta(ge=2, description="Recent gradient norms kept per network (the window).")
    ] = 100
    detailed_logging: Annotated[
        bool, Meta(description="Print the window statistics of every interval to the console.")
    ] = False
    cooldown: Annotated[
        int,
        Meta(
            ge=0, description="Iterations after a change before the same threshold changes again."
        ),
    ] = 100
    warmup_steps: Annotated[
        int, Meta(ge=1, description="Steps observed before the first change (ZClip warmup).")
    ] = 25
    zscore_threshold: Annotated[
        float, Meta(gt=0, description="zscore: threshold = EMA mean + this x EMA std.")
    ] = 2.5
    zscore_alpha: Annotated[
        float, Meta(gt=0, lt=1, description="zscore: EMA decay of the norm's mean and variance.")
    ] = 0.97
    percentile: Annotated[
        float,
        Meta(
            gt=0,
            le=100,
            description="percentile: threshold = this percentile of the window "
            "(10 = AutoClip's setting, clips most steps; 90-99 clips outliers only).",
        ),
    ] = 10.0
    target_clip_rate: Annotated[
        float,
        Meta(ge=0, lt=1, description="rule: share of clipped steps the threshold aims under."),
    ] = 0.02
    exploding_factor: Annotated[
        float, Meta(gt=1, description="A norm above this x threshold is logged as exploding.")
    ] = 3.0
    networks: Annotated[
        list[str] | None,
        Meta(description="Networks to manage, e.g. [net_g, net_d]; None: all trained networks."),
    ] = None

    def __post_init__(self) -> None:
        if self.min_threshold > self.max_threshold:
            raise ValueError(
                f"min_threshold ({self.min_threshold}) must not exceed max_threshold "
                f"({self.max_threshold})"
            )
        if self.gradient_history_size < self.monitoring_frequency:
            raise ValueError(
                f"gradient_history_size ({self.gradient_history_size}) must be at least "
                f"monitoring_frequency ({self.monitoring_frequency}) so that every norm is seen"
            )
        if not self.min_threshold <= self.initial_threshold <= self.max_threshold:
            raise ValueError(
                f"initial_threshold ({self.initial_threshold}) must lie within "
                f"[min_threshold, max_threshold] = [{self.min_threshold}, {self.max_threshold}]"
            )


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile (0 <= q <= 1) of an ascending, non-empty list."""
    position = q * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    weight = position - lower
    return sorted_values[lower] * (1 - weight) + sorted_values[upper] * weight


class NormWindow:
    """The last `size` gradient norms of one network, written on the device each step.

    A step costs one tensor write. Iterations and the threshold in force are host
    values kept alongside, so reading the window costs one transfer at the interval.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.norms: torch.Tensor | None = None
        self.iterations = [0] * size
        self.thresholds = [math.inf] * size
        self.position = 0
        self.filled = 0
        self.since_read = 0

    def push(self, iteration: int, norm: torch.Tensor, threshold: float) -> None:
        if self.norms is None:
            self.norms = torch.zeros(self.size, dtype=torch.float32, device=norm.device)
        elif self.norms.device != norm.device:
            self.norms = self.norms.to(norm.device)
        slot = self.position
        self.norms[slot] = norm.detach()
        self.iterations[slot] = iteration
        self.thresholds[slot] = threshold
        self.position = (slot + 1) % self.size
        self.filled = min(self.filled + 1, self.size)
        self.since_read += 1

    def read(self) -> tuple[list[float], list[int], list[float]]:
        """Norms, iterations and thresholds in chronological order (one transfer)."""
        if self.norms is None or self.filled == 0:
            return [], [], []
        start = (self.position - self.filled) % self.size
        order = [(start + i) % self.size for i in range(self.filled)]
        values = self.norms.tolist()
        return (
            [values[i] for i in order],
            [self.iterations[i] for i in order],
            [self.thresholds[i] for i in order],
        )

    def state_dict(self) -> dict[str, Any]:
        norms = self.norms.cpu().clone() if self.norms is not None else torch.zeros(self.size)
        return {
            "norms": norms,
            "iterations": list(self.iterations),
            "thresholds": list(self.thresholds),
            "position": self.position,
            "filled": self.filled,
            "since_read": self.since_read,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.norms = state["norms"].float().clone()
        self.iterations = [int(v) for v in state["iterations"]]
        self.thresholds = [float(v) for v in state["thresholds"]]
        self.position = int(state["position"])
        self.filled = int(state["filled"])
        self.since_read = int(state["since_read"])


class NormEMA:
    """ZClip's running mean and variance of the gradient norm.

    Fed at each interval with the norms of the steps since the previous one, in
    order, so the result equals a per-step update without any per-step device work.
    """

    def __init__(self, alpha: float, z: float, warmup_steps: int) -> None:
        self.alpha = alpha
        self.z = z
        self.warmup_steps = warmup_steps
        self.warmup_values: list[float] = []
        self.mean = 0.0
        self.variance = 0.0
        self.ready = False

    def update(self, norms: list[float]) -> None:
        for norm in norms:
            finite = math.isfinite(norm)
            if not self.ready:
                if finite:
                    self.warmup_values.append(norm)
                if len(self.warmup_values) >= self.warmup_steps:
                    count = len(self.warmup_values)
                    self.mean = sum(self.warmup_values) / count
                    self.variance = sum((v - self.mean) ** 2 for v in self.warmup_values) / count
                    self.warmup_values = []
                    self.ready = True
                continue
            # A spike enters the statistics clipped to the limit, as ZClip does.
            value = min(norm, self.limit) if finite else self.mean
            new_mean = self.alpha * self.mean + (1 - self.alpha) * value
            self.variance = self.alpha * self.variance + (1 - self.alpha) * (value - new_mean) ** 2
            self.mean = new_mean

    @property
    def std(self) -> float:
        return math.sqrt(max(self.variance, 0.0))

    @property
    def limit(self) -> float:
        return self.mean + self.z * self.std

    def state_dict(self) -> dict[str, Any]:
        return {
            "warmup_values": list(self.warmup_values),
            "mean": self.mean,
            "variance": self.variance,
            "ready": self.ready,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.warmup_values = [float(v) for v in state["warmup_values"]]
        self.mean = float(state["mean"])
        self.variance = float(state["variance"])
        self.ready = bool(state["ready"])


class NetworkClipper:
    """Window, EMA and last-change bookkeeping of one network."""

    def __init__(self, config: AdaptiveGradientClippingConfig) -> None:
        self.window = NormWindow(config.gradient_history_size)
        self.ema = NormEMA(config.zscore_alpha, config.zscore_threshold, config.warmup_steps)
        self.threshold = config.initial_threshold
        self.last_change: int | None = None
        self.exploding_total = 0
        self.overflow_total = 0
        self.stats: dict[str, float] = {}
        # log(target) of recent intervals: the target's own noise widens the dead band.
        self.log_targets: list[float] = []

    def state_dict(self) -> dict[str, Any]:
        return {
            "window": self.window.state_dict(),
            "ema": self.ema.state_dict(),
            "threshold": self.threshold,
            "last_change": self.last_change,
            "exploding_total": self.exploding_total,
            "overflow_total": self.overflow_total,
            "log_targets": list(self.log_targets),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window.load_state_dict(state["window"])
        self.ema.load_state_dict(state["ema"])
        self.threshold = float(state["threshold"])
        last = state["last_change"]
        self.last_change = None if last is None else int(last)
        self.exploding_total = int(state["exploding_total"])
        self.overflow_total = int(state["overflow_total"])
        self.log_targets = [float(v) for v in state["log_targets"]]


@register_automation
class AdaptiveGradientClipping(Automation):
    name = "adaptive_gradient_clipping"
    config_type = AdaptiveGradientClippingConfig

    def __init__(self, config: AdaptiveGradientClippingConfig) -> None:
        super().__init__(config)
        self.options = config
        self.fp16 = False
        self.clippers: dict[str, NetworkClipper] = {}
        if config.networks is not None:
            self.clippers = {net: NetworkClipper(config) for net in config.networks}

    @property
    def interval(self) -> int:
        return self.options.monitoring_frequency

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
        if self.options.networks is None:
            for net in info.networks:
                self.clippers.setdefault(net, NetworkClipper(self.options))
        decisions: list[Decision] = []
        for net, clipper in self.clippers.items():
            # On resume the clipper's own threshold (restored state) wins over the config.
            decisions += self.decide(
                knobs,
                f"clip_threshold.{net}",
                clipper.threshold,
                f"{self.options.mode} mode starts at {clipper.threshold:.4g}",
                self._bounds(),
            )
        return decisions

    def observe_step(self, record: StepRecord) -> None:
        # A host check of None, no device read: fp16 steps carry the scaler's scale.
        self.fp16 = record.loss_scale is not None
        for net, clipper in self.clippers.items():
            norm = record.grad_norms.get(net)
            if norm is None:
                continue
            clipper.window.push(record.iteration, norm, clipper.threshold)

    def on_interval(self, iteration: int, knobs: Knobs) -> list[Decision]:
        decisions: list[Decision] = []
        for net, clipper in self.clippers.items():
            current = knobs.clip_threshold.get(net)
            if current is not None:
                clipper.threshold = float(current)
            decisions += self._update_network(iteration, net, clipper, knobs)
        return decisions

    def scalars(self) -> dict[str, float]:
        return {
            f"{net}/{quantity}": value
            for net, clipper in self.clippers.items()
            for quantity, value in clipper.stats.items()
        }

    # -------------------------------------------------------------- decisions

    def _bounds(self) -> tuple[float, float]:
        return (self.options.min_threshold, self.options.max_threshold)

    def _update_network(
        self, iteration: int, net: str, clipper: NetworkClipper, knobs: Knobs
    ) -> list[Decision]:
        norms, iterations, thresholds = clipper.window.read()
        recent = min(clipper.window.since_read, len(norms))
        clipper.window.since_read = 0
        first_recent = len(norms) - recent
        if self.options.mode == "zscore":
            clipper.ema.update(norms[first_recent:])
        finite = sorted(v for v in norms if math.isfinite(v))
        if not finite:
            return []
        threshold = clipper.threshold
        mean = sum(finite) / len(finite)
        # clip_grad_norm_ clips exactly when the norm exceeds the threshold in force.
        clipped = sum(1 for v, limit in zip(norms, thresholds, strict=True) if v > limit)
        clip_rate = clipped / len(norms)
        recent_norms = norms[first_recent:]
        overflows = sum(1 for v in recent_norms if not math.isfinite(v)) if self.fp16 else 0
        clipper.overflow_total += overflows
        exploding = self._exploding(
            net, recent_norms, iterations[first_recent:], thresholds[first_recent:]
        )
        clipper.exploding_total += exploding
        clipper.stats = {
            "threshold": threshold,
            "clip_rate": clip_rate,
            "norm_mean": mean,
            "norm_max": finite[-1],
            "exploding": float(exploding),
            "overflows": float(overflows),
        }
        if self.options.detailed_logging:
            logger.info(
                "[%s] %s at iteration %d: threshold %.4g, clip rate %.2f%% (last %d steps), "
                "norm mean %.4g, max %.4g, exploding %d (total %d)",
                self.name,
                net,
                iteration,
                threshold,
                100 * clip_rate,
                len(norms),
                mean,
                finite[-1],
                exploding,
                clipper.exploding_total,
            )
        if clipper.window.filled < self.options.warmup_steps:
            return []
        if (
            clipper.last_change is not None
            and iteration - clipper.last_change < self.options.cooldown
        ):
            return []
        proposal = self._target(clipper, finite, mean, clip_rate)
        if proposal is None:
            return []
        target, reason = proposal
        low, high = self._bounds()
        target = min(max(target, low), high)
        if target == threshold:
            return []
        decisions = self.decide(knobs, f"clip_threshold.{net}", target, reason, self._bounds())
        if decisions:
            clipper.threshold = target
            clipper.last_change = iteration
        return decisions

    def _target(
        self, clipper: NetworkClipper, finite: list[float], mean: float, clip_rate: float
    ) -> tuple[float, str] | None:
        """The threshold this mode wants and why, or None to keep the current one."""
        threshold = clipper.threshold
        factor = self.options.adjustment_factor
        mode = self.options.mode
        if mode == "rule":
            largest = finite[-1]
            allowed_rate = self.options.target_clip_rate
            if largest > threshold and clip_rate > allowed_rate:
                return (
                    threshold * factor,
                    f"window max {largest:.4g} above the threshold and {clip_rate:.1%} of "
                    f"steps clipped (> target_clip_rate {allowed_rate:.1%})",
                )
            lowered = threshold / factor
            high_quantile = quantile(finite, 1 - allowed_rate)
            if mean < RULE_LOW_MEAN_SHARE * threshold and lowered >= high_quantile:
                return (
                    lowered,
                    f"window mean {mean:.4g} under {RULE_LOW_MEAN_SHARE:.0%} of the threshold "
                    f"and the {1 - allowed_rate:.0%} quantile {high_quantile:.4g} stays below",
                )
            return None
        if mode == "percentile":
            target = quantile(finite, self.options.percentile / 100)
            reason = f"{self.options.percentile:g}th percentile of the last {len(finite)} norms"
        else:
            if not clipper.ema.ready:
                return None
            target = clipper.ema.limit
            reason = (
                f"EMA mean {clipper.ema.mean:.4g} + {self.options.zscore_threshold:g} x std "
                f"{clipper.ema.std:.4g}"
            )
        history = clipper.log_targets = [*clipper.log_targets, math.log(target)][-TARGET_HISTORY:]
        if len(history) >= SMOOTHED_TARGETS:
            # Move to the mean of the recent targets, not to the latest one: a move to an
            # extreme of the target's own noise would be undone by the next interval.
            recent = history[-SMOOTHED_TARGETS:]
            target = math.exp(sum(recent) / len(recent))
            mean_log = sum(history) / len(history)
            spread = math.sqrt(sum((v - mean_log) ** 2 for v in history) / (len(history) - 1))
            factor = max(factor, math.exp(3 * spread / math.sqrt(SMOOTHED_TARGETS)))
            reason = f"mean of the last {SMOOTHED_TARGETS} targets ({reason})"
        if max(target / threshold, threshold / target) < factor:
            return None  # within the dead band
        return target, f"{reason}; dead band x{factor:.3g}"

    def _exploding(
        self, net: str, norms: list[float], iterations: list[int], thresholds: list[float]
    ) -> int:
        limit_factor = self.options.exploding_factor
        events = [
            (it, norm, thr)
            for norm, it, thr in zip(norms, iterations, thresholds, strict=True)
            # A non-finite norm is a skipped step (a scaler overflow under fp16), not this.
            if math.isfinite(norm) and norm > limit_factor * thr
        ]
        for it, norm, thr in events[:MAX_EVENTS_LOGGED]:
            logger.warning(
                "[%s] %s: exploding gradient at iteration %d: norm %.4g = %.1f x threshold %.4g",
                self.name,
                net,
                it,
                norm,
                norm / thr,
                thr,
            )
        if len(events) > MAX_EVENTS_LOGGED:
            logger.warning(
                "[%s] %s: %d more exploding gradients since the last check",
                self.name,
                net,
                len(events) - MAX_EVENTS_LOGGED,
            )
        return len(events)

    # ------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {"networks": {net: clipper.state_dict() for net, clipper in self.clippers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for net, saved in state["networks"].items():
            self.clippers.setdefault(net, NetworkClipper(self.options)).load_state_dict(saved)
