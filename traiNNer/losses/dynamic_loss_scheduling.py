"""Dynamic loss scheduling maths: per-loss weight multipliers that adapt while training.

`dwa` and `balance` are the `dynamic_loss_scheduling` automation
(traiNNer/automations/dynamic_loss_scheduling.py): it sets the `loss_weights` knob
through the controller, so its changes get bounds, `max_adjustments`, the decision log
and the DDP broadcast like every other automation. `uncertainty` learns its weights as
parameters, so it lives here as a loss-side module (`UncertaintyWeighting`).

Every scheduled loss k has a configured weight w_k (its `loss_weight`, never 0)
and a multiplier m_k that starts at 1. The effective weight is w_k * m_k; the
training total is sum_k |w_k| * m_k * L_k. A negative w_k keeps its upstream
meaning (the model compares that loss against the bicubic upscale of the LR):
the scheduler works with |w_k| and reports effective weights with w_k's sign.

Statistics (`SmoothedLosses`). `observe` adds each step's unweighted losses to
per-interval sums on the device. Every `update_interval` iterations `refresh` turns
them into the interval means M_k and smooths them once per update:
    S_k <- momentum * S_k + (1 - momentum) * M_k     (S_k = M_k on the first update)
All rules below use ratios of S_k only, so multiplying a loss by a constant does not
change its multiplier (scale-free).

Modes (targets t_k for the multipliers):
- `dwa` (Dynamic Weight Average): r_k is the loss's descent rate per interval,
  exp of the slope of a line fitted through log M_k over the last `rate_window`
  updates; t_k = K * softmax_k(r_k / T) with K the number of losses, so the targets
  average 1. A loss that descends slower than the others (r_k nearer 1, e.g. a
  stalled one) gets t_k > 1; a fast-falling loss gets t_k < 1. A slope that does not
  differ from the mean slope of all losses by more than `noise_sigmas` of its own
  standard error is taken as that mean: noise alone moves no weight (the ratio of two
  consecutive smoothed values, the textbook rate, moved weights 5-8% on flat losses).
  Rates differ by a few percent per interval, so T is small (the paper's T = 2 over
  epochs would keep every target within a fraction of a percent).
- `balance`: q_k = S_k / R_k, the loss relative to its reference R_k (S_k at the
  end of the baseline). The loss's share of the scale-free total is
  |w_k| m_k q_k / sum_j |w_j| m_j q_j; its target share is |w_k| / sum_j |w_j|.
  Exactly that share is reached by t_k = c / q_k with c chosen so that
  sum_k |w_k| t_k = sum_k |w_k| (the total weight stays as configured). A loss whose
  share drifts above target (it falls slower than the others, e.g. stalls) has its
  multiplier lowered; a loss that falls faster is raised so it does not fade out.
- `uncertainty`: a learned log-variance s_k per loss (`parameters()`, trained by
  the generator's optimizer, weight decay 0); m_k = exp(-s_k) and the total is
      sum_k |w_k| * (exp(-s_k) * L_k + R_k * s_k).
  This is Kendall et al.'s weighting exp(-s) * L + s applied to the relative loss
  L_k / R_k and scaled back by |w_k| R_k, so the network's gradient is exactly
  |w_k| m_k dL_k and the optimum m_k = R_k / S_k is scale-free (plain Kendall would
  drive every loss below 1 to the upper bound). A loss that keeps falling below
  its reference gains weight; a stalled one stays near 1. The regulariser adds
  |w_k| R_k s_k to the logged total. `adaptation_threshold` and `temperature` are
  not used.

Limits shared by all modes: each update moves a multiplier by at most
`adaptation_rate` relative to its value at the previous update (uncertainty: the
log-variances are clamped after every step to that window), multipliers stay in
[min_weight, max_weight], and for `dwa`/`balance` a target within
`adaptation_threshold` (relative) of the current multiplier is ignored. Weights are
not touched before `baseline_iterations` observed steps; a smoothed loss <= 0
carries no relative information and keeps that loss's multiplier.

Hot path: `weighted_sum` and `observe` only launch device kernels; the statistics are
read on the host once per interval. Under DDP the automation decides on rank 0 and its
weights are broadcast; the learned log-variances get their gradients and interval
statistics averaged across ranks, so every rank holds identical weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist
from torch import nn

from traiNNer.automations.trend import fitted_gain
from traiNNer.utils.errors import UserError

if TYPE_CHECKING:
    from traiNNer.automations.dynamic_loss_scheduling import DynamicLossSchedulingConfig

Mode = Literal["dwa", "uncertainty", "balance"]

STATE_VERSION = 2
# Floor for reference and smoothed values that end up in a denominator.
_TINY = 1e-12


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _average_grad_across_ranks(parameter: torch.Tensor) -> None:
    """Keep learned log-variances identical on every rank (DDP leaves them alone)."""
    world_size = _world_size()
    if world_size > 1 and parameter.grad is not None:
        # Linear, so averaging the accumulated gradient after each micro-step is exact.
        dist.all_reduce(parameter.grad)
        parameter.grad.div_(world_size)


def dwa_rates(interval_means: Sequence[Sequence[float]], noise_sigmas: float) -> list[float | None]:
    """Per loss, exp(slope) of a line through log(interval mean) over the updates given.

    A slope within `noise_sigmas` standard errors of the mean slope of all losses
    becomes that mean; a loss with fewer than 3 positive finite means has no rate.
    """
    count = len(interval_means[0]) if interval_means else 0
    fits: list[tuple[float, float] | None] = []
    for k in range(count):
        points = [
            (i, math.log(means[k]))
            for i, means in enumerate(interval_means)
            if means[k] > 0 and math.isfinite(means[k])
        ]
        fit = fitted_gain(points, 1.0) if len(points) >= 3 else None
        fits.append(fit)
    usable = [fit for fit in fits if fit is not None]
    if not usable:
        return [None] * count
    mean_slope = sum(slope for slope, _ in usable) / len(usable)
    rates: list[float | None] = []
    for fit in fits:
        if fit is None:
            rates.append(None)
            continue
        slope, error = fit
        if abs(slope - mean_slope) <= noise_sigmas * error:
            slope = mean_slope
        rates.append(math.exp(slope))
    return rates


def dwa_targets(rates: Sequence[float | None], temperature: float) -> list[float | None]:
    """K * softmax(r / T) over the losses with a descent rate."""
    usable = [rate for rate in rates if rate is not None]
    if not usable:
        return [None] * len(rates)
    peak = max(usable) / temperature  # subtracted for a stable softmax
    exps = [math.exp(rate / temperature - peak) if rate is not None else None for rate in rates]
    total = sum(value for value in exps if value is not None)
    return [len(usable) * value / total if value is not None else None for value in exps]


def balance_targets(
    smoothed: Sequence[float], reference: Sequence[float], magnitudes: Sequence[float]
) -> list[float | None]:
    """c / q_k with q_k = smoothed / reference, keeping sum |w| * t = sum |w|."""
    relative = [
        now / ref if now > 0 and ref > 0 else None
        for now, ref in zip(smoothed, reference, strict=True)
    ]
    active = [(q, w) for q, w in zip(relative, magnitudes, strict=True) if q is not None]
    if not active:
        return [None] * len(relative)
    scale = sum(w for _, w in active) / sum(w / max(q, _TINY) for q, w in active)
    return [scale / max(q, _TINY) if q is not None else None for q in relative]


def limited_step(
    current: float,
    target: float,
    rate: float,
    threshold: float,
    lower: float,
    upper: float,
) -> float:
    """Move `current` toward `target` by at most `rate` (relative), within bounds."""
    if abs(target / current - 1.0) < threshold:
        return current
    stepped = min(max(target, current * (1.0 - rate)), current * (1.0 + rate))
    return min(max(stepped, lower), upper)


def _cpu(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach().cpu().clone()


class SmoothedLosses:
    """Per-interval loss means on the device, smoothed once per update (module docstring).

    `observe` only launches kernels; `refresh` folds an interval in (the caller reads
    `smoothed` / `previous` / `reference` on the host at that moment). With
    `all_reduce` the interval sums are summed over DDP ranks first.
    """

    def __init__(self, count: int, momentum: float, device: torch.device) -> None:
        self.momentum = momentum
        self.device = device
        self.interval_sum = torch.zeros(count, device=device)
        self.interval_count = torch.zeros(count, device=device)
        self.interval_steps = 0
        self.steps_observed = 0
        self.smoothed: torch.Tensor | None = None
        self.means: torch.Tensor | None = None  # the last refreshed interval's means
        self.previous: torch.Tensor | None = None
        self.reference: torch.Tensor | None = None

    def observe(self, values: torch.Tensor) -> None:
        """One step's unweighted losses; non-finite values are left out of the means."""
        values = values.detach().float()
        finite = torch.isfinite(values)
        self.interval_sum.add_(torch.where(finite, values, 0.0))
        self.interval_count.add_(finite.float())
        self.interval_steps += 1
        self.steps_observed += 1

    def refresh(self, all_reduce: bool = False) -> bool:
        """Fold the interval's means into the smoothed losses; False without data."""
        if self.interval_steps == 0:
            return False
        sums = torch.stack([self.interval_sum, self.interval_count])
        if all_reduce and _world_size() > 1:
            dist.all_reduce(sums)
        interval_sum, interval_count = sums.unbind()
        means = interval_sum / interval_count.clamp_min(1.0)
        # An interval where a loss was never finite has no mean (NaN: dwa skips it).
        self.means = torch.where(interval_count > 0, means, torch.nan)
        if self.smoothed is None:
            smoothed = means
        else:
            smoothed = torch.lerp(means, self.smoothed, self.momentum)
            smoothed = torch.where(interval_count > 0, smoothed, self.smoothed)
            self.previous = self.smoothed
        self.smoothed = smoothed
        self.interval_sum.zero_()
        self.interval_count.zero_()
        self.interval_steps = 0
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "interval_sum": _cpu(self.interval_sum),
            "interval_count": _cpu(self.interval_count),
            "interval_steps": self.interval_steps,
            "steps_observed": self.steps_observed,
            "smoothed": _cpu(self.smoothed),
            "previous": _cpu(self.previous),
            "reference": _cpu(self.reference),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        def device(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(self.device, torch.float32)

        self.interval_sum.copy_(state["interval_sum"])
        self.interval_count.copy_(state["interval_count"])
        self.interval_steps = int(state["interval_steps"])
        self.steps_observed = int(state["steps_observed"])
        self.smoothed = device(state["smoothed"])
        self.previous = device(state["previous"])
        self.reference = device(state["reference"])


class UncertaintyWeighting:
    """`mode: uncertainty`: learned log-variances s_k, m_k = exp(-s_k) (module docstring).

    `base_weights` maps loss names (e.g. "l_g_l1") to their configured, non-zero
    `loss_weight`. Call `weighted_sum` every micro-step and `observe` after every
    applied optimizer step; `parameters()` go into the generator's optimizer.
    """

    def __init__(
        self,
        config: DynamicLossSchedulingConfig,
        base_weights: Mapping[str, float],
        device: torch.device | str = "cpu",
    ) -> None:
        if not base_weights:
            raise ValueError("UncertaintyWeighting needs at least one loss")
        for name, weight in base_weights.items():
            if weight == 0 or not math.isfinite(weight):
                raise ValueError(f"loss '{name}': weight {weight} cannot be scheduled")
        self.config = config
        self.names: tuple[str, ...] = tuple(base_weights)
        self.device = torch.device(device)
        self._signs = [math.copysign(1.0, base_weights[name]) for name in self.names]
        count = len(self.names)
        self._magnitudes = torch.tensor(
            [abs(base_weights[name]) for name in self.names], device=self.device
        )
        self.stats = SmoothedLosses(count, config.momentum, self.device)
        self._next_update: int | None = None
        self._active = False
        self.log_variances = nn.Parameter(torch.zeros(count, device=self.device))
        self.log_variances.register_post_accumulate_grad_hook(_average_grad_across_ranks)
        # s_k stays inside [lower, upper]; pinned at 0 during the baseline.
        self._lower = torch.zeros(count, device=self.device)
        self._upper = torch.zeros(count, device=self.device)

    def _stack(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [name for name in self.names if name not in losses]
        if missing:
            raise ValueError(f"losses {missing} missing; the weighting has {list(self.names)}")
        return torch.stack([losses[name].float().reshape(()) for name in self.names])

    def weighted_sum(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The training total of unweighted 0-dim losses (no host sync)."""
        # Before the baseline ends the log-variances get no gradient (nothing to learn).
        log_var = self.log_variances if self._active else self.log_variances.detach()
        total = (self._magnitudes * torch.exp(-log_var) * self._stack(losses)).sum()
        if self._active and self.stats.reference is not None:
            anchor = self._magnitudes * self.stats.reference.clamp_min(_TINY)
            total = total + (anchor * self.log_variances).sum()
        return total

    def observe(self, iteration: int, losses: Mapping[str, torch.Tensor]) -> None:
        """One applied step: statistics on the device, the window moved once per interval."""
        self.stats.observe(self._stack(losses))
        # The step's movement is held to the current window before a new one is anchored.
        with torch.no_grad():
            self.log_variances.clamp_(self._lower, self._upper)
        interval = self.config.update_interval
        if self._next_update is None:
            self._next_update = (iteration // interval + 1) * interval
        if iteration >= self._next_update:
            self._next_update = (iteration // interval + 1) * interval
            self._update()

    def _update(self) -> None:
        if not self.stats.refresh(all_reduce=True):
            return
        if self.stats.steps_observed < self.config.baseline_iterations:
            self.stats.reference = self.stats.smoothed
            return
        if self.stats.reference is None:
            self.stats.reference = self.stats.smoothed
        self._anchor_window()
        self._active = True

    def _anchor_window(self) -> None:
        """Allow s_k to move the multiplier by adaptation_rate until the next update."""
        config = self.config
        s = self.log_variances.detach()
        # m = exp(-s): m * (1 + rate) <-> s - log(1 + rate), m * (1 - rate) <-> s - log(1 - rate)
        down = -math.log(1.0 - config.adaptation_rate) if config.adaptation_rate < 1 else math.inf
        lower = torch.clamp_min(
            s - math.log1p(config.adaptation_rate), -math.log(config.max_weight)
        )
        upper = torch.clamp_max(s + down, -math.log(config.min_weight))
        self._lower.copy_(lower)
        self._upper.copy_(upper)

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_variances]

    def optimizer_param_group(self) -> dict[str, Any]:
        """The optimizer group of the log-variances (weight decay 0, own lr if configured)."""
        group: dict[str, Any] = {"params": [self.log_variances], "weight_decay": 0.0}
        if self.config.uncertainty_lr is not None:
            group["lr"] = self.config.uncertainty_lr
        return group

    def weights_tensor(self) -> torch.Tensor:
        """Signed effective weights on the device (read it at a logging interval)."""
        signs = torch.tensor(self._signs, device=self.device)
        return signs * self._magnitudes * torch.exp(-self.log_variances.detach())

    def current_weights(self) -> dict[str, float]:
        """Signed effective weights (reads the device)."""
        return dict(zip(self.names, self.weights_tensor().tolist(), strict=True))

    def state_dict(self) -> dict[str, Any]:
        """Plain containers and CPU tensors; loads with torch.load(weights_only=True)."""
        return {
            "version": STATE_VERSION,
            "names": list(self.names),
            "stats": self.stats.state_dict(),
            "next_update": self._next_update,
            "active": self._active,
            "log_variances": _cpu(self.log_variances),
            "lower": _cpu(self._lower),
            "upper": _cpu(self._upper),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`; the losses must match the option file."""
        saved = list(state.get("names", []))
        if state.get("version") != STATE_VERSION or saved != list(self.names):
            raise UserError(
                f"train.dynamic_loss_scheduling: the resume state was saved with losses "
                f"{saved}, but the option file sets {list(self.names)}; use the same losses "
                "to resume"
            )
        self.stats.load_state_dict(state["stats"])
        next_update = state["next_update"]
        self._next_update = None if next_update is None else int(next_update)
        self._active = bool(state["active"])
        with torch.no_grad():
            # In place: the optimizer holds this very Parameter.
            self.log_variances.copy_(state["log_variances"])
        self._lower.copy_(state["lower"])
        self._upper.copy_(state["upper"])
