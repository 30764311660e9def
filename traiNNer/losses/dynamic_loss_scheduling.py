"""Dynamic loss scheduling: per-loss weight multipliers that adapt while training.

Every scheduled loss k has a configured weight w_k (its `loss_weight`, never 0)
and a multiplier m_k that starts at 1. The effective weight is w_k * m_k; the
training total is sum_k |w_k| * m_k * L_k. A negative w_k keeps its upstream
meaning (the model compares that loss against the bicubic upscale of the LR):
the scheduler works with |w_k| and reports effective weights with w_k's sign.

Statistics. `observe` adds each step's unweighted losses to per-interval sums on
the device. Every `update_interval` iterations `maybe_update` turns them into the
interval means M_k (averaged over DDP ranks) and smooths them once per update:
    S_k <- momentum * S_k + (1 - momentum) * M_k     (S_k = M_k on the first update)
All rules below use ratios of S_k only, so multiplying a loss by a constant does not
change its multiplier (scale-free).

Modes (targets t_k for the multipliers):
- `dwa` (Dynamic Weight Average): r_k = S_k(now) / S_k(previous update), the
  loss's descent rate over the last interval; t_k = K * softmax_k(r_k / T) with K
  the number of losses, so the targets average 1. A loss that descends slower than
  the others (r_k nearer 1, e.g. a stalled one) gets t_k > 1; a fast-falling loss
  gets t_k < 1. Per-interval rates differ by a few percent, so T is small (the
  paper's T = 2 over epochs would keep every target within a fraction of a percent).
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

Hot path: `weighted_sum` and `observe` only launch device kernels; `maybe_update`
reads the statistics on the host once per interval. Under DDP the interval sums are
all-reduced before use and the log-variance gradients are averaged across ranks, so
every rank holds identical weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec
import torch
import torch.distributed as dist
from msgspec import Meta
from torch import nn

from traiNNer.utils.errors import UserError

Mode = Literal["dwa", "uncertainty", "balance"]

STATE_VERSION = 1
# Floor for reference and smoothed values that end up in a denominator.
_TINY = 1e-12


class DynamicLossSchedulingOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`train.dynamic_loss_scheduling`: adapt each loss's weight while training."""

    enabled: Annotated[bool, Meta(description="Turn dynamic loss weighting on.")] = False
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


def dwa_targets(
    smoothed: Sequence[float], previous: Sequence[float], temperature: float
) -> list[float | None]:
    """K * softmax(r / T) over losses with a usable descent rate r = now / previous."""
    rates = [
        now / before if now > 0 and before > 0 else None
        for now, before in zip(smoothed, previous, strict=True)
    ]
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


class DynamicLossScheduler:
    """Adapts loss weights; see the module docstring for the exact rules.

    `base_weights` maps loss names (e.g. "l_g_l1") to their configured, non-zero
    `loss_weight`. Call `weighted_sum` every micro-step, `observe` after every
    optimizer step and `maybe_update` after `observe`.
    """

    def __init__(
        self,
        options: DynamicLossSchedulingOptions,
        base_weights: Mapping[str, float],
        device: torch.device | str = "cpu",
    ) -> None:
        if not base_weights:
            raise ValueError("DynamicLossScheduler needs at least one loss")
        for name, weight in base_weights.items():
            if weight == 0 or not math.isfinite(weight):
                raise ValueError(f"loss '{name}': weight {weight} cannot be scheduled")
        self.options = options
        self.names: tuple[str, ...] = tuple(base_weights)
        self.device = torch.device(device)
        self._signs = [math.copysign(1.0, base_weights[name]) for name in self.names]
        self._magnitudes = [abs(base_weights[name]) for name in self.names]
        count = len(self.names)
        self._magnitude_tensor = self._vector(self._magnitudes)
        # Per-interval device accumulators; the host only counts steps.
        self._interval_sum = self._vector([0.0] * count)
        self._interval_count = self._vector([0.0] * count)
        self._interval_steps = 0
        self._steps_observed = 0
        self._next_update: int | None = None
        self._smoothed: torch.Tensor | None = None
        self._previous: torch.Tensor | None = None
        self._reference: torch.Tensor | None = None
        self._active = False
        # dwa/balance: the host list is the source of truth, the tensor feeds weighted_sum.
        self._multipliers = [1.0] * count
        self._scaled_weights = self._magnitude_tensor.clone()
        self.log_variances: nn.Parameter | None = None
        if options.mode == "uncertainty":
            self.log_variances = nn.Parameter(torch.zeros(count, device=self.device))
            self.log_variances.register_post_accumulate_grad_hook(_average_grad_across_ranks)
        # Uncertainty mode: s_k stays inside [lower, upper]; pinned at 0 during the baseline.
        self._lower = self._vector([0.0] * count)
        self._upper = self._vector([0.0] * count)

    def _vector(self, values: Sequence[float]) -> torch.Tensor:
        return torch.tensor(list(values), dtype=torch.float32, device=self.device)

    def _stack(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [name for name in self.names if name not in losses]
        if missing:
            raise ValueError(f"losses {missing} missing; the scheduler weights {list(self.names)}")
        return torch.stack([losses[name].float().reshape(()) for name in self.names])

    # ------------------------------------------------------------ every micro-step
    def _weight_vector(self) -> torch.Tensor:
        if self.log_variances is not None:
            # Before the baseline ends the log-variances get no gradient (nothing to learn).
            log_var = self.log_variances if self._active else self.log_variances.detach()
            return self._magnitude_tensor * torch.exp(-log_var)
        return self._scaled_weights

    def weighted_terms(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each loss times the magnitude of its effective weight (no host sync)."""
        terms = self._weight_vector() * self._stack(losses)
        return dict(zip(self.names, terms.unbind(), strict=True))

    def weighted_sum(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The training total of unweighted 0-dim losses (no host sync)."""
        total = (self._weight_vector() * self._stack(losses)).sum()
        if self.log_variances is not None and self._active and self._reference is not None:
            anchor = self._magnitude_tensor * self._reference.clamp_min(_TINY)
            total = total + (anchor * self.log_variances).sum()
        return total

    # ------------------------------------------------------ every optimizer step
    def observe(self, iteration: int, losses: Mapping[str, torch.Tensor]) -> None:
        """Accumulate one step's unweighted losses on the device (no host sync).

        Non-finite values are left out of the means. `iteration` aligns the updates
        to multiples of `update_interval` from the first observed step on.
        """
        values = self._stack(losses).detach()
        finite = torch.isfinite(values)
        self._interval_sum.add_(torch.where(finite, values, 0.0))
        self._interval_count.add_(finite.float())
        self._interval_steps += 1
        self._steps_observed += 1
        if self._next_update is None:
            self._next_update = self._following_update(iteration)
        if self.log_variances is not None:
            with torch.no_grad():
                self.log_variances.clamp_(self._lower, self._upper)

    def _following_update(self, iteration: int) -> int:
        interval = self.options.update_interval
        return (iteration // interval + 1) * interval

    # ---------------------------------------------------------- every interval
    def maybe_update(self, iteration: int) -> dict[str, float] | None:
        """At an update iteration after the baseline: adapt and return the new weights."""
        if self._next_update is None or iteration < self._next_update:
            return None
        self._next_update = self._following_update(iteration)
        if not self._refresh_statistics():
            return None
        assert self._smoothed is not None
        if self._steps_observed < self.options.baseline_iterations:
            self._reference = self._smoothed
            return None
        if self._reference is None:
            self._reference = self._smoothed
        if self.log_variances is not None:
            self._anchor_log_variance_window()
        else:
            self._adapt_multipliers()
        self._active = True
        return self.current_weights()

    def _refresh_statistics(self) -> bool:
        """Fold the interval's means into the smoothed losses; False without data."""
        if self._interval_steps == 0:
            return False
        sums = torch.stack([self._interval_sum, self._interval_count])
        if _world_size() > 1:
            dist.all_reduce(sums)
        interval_sum, interval_count = sums.unbind()
        means = interval_sum / interval_count.clamp_min(1.0)
        seen = interval_count > 0
        if self._smoothed is None:
            smoothed = means
        else:
            smoothed = torch.lerp(means, self._smoothed, self.options.momentum)
            smoothed = torch.where(seen, smoothed, self._smoothed)
            self._previous = self._smoothed
        self._smoothed = smoothed
        self._interval_sum.zero_()
        self._interval_count.zero_()
        self._interval_steps = 0
        return True

    def _adapt_multipliers(self) -> None:
        assert self._smoothed is not None and self._reference is not None
        opts = self.options
        smoothed = self._smoothed.tolist()
        if opts.mode == "dwa":
            if self._previous is None:
                return
            targets = dwa_targets(smoothed, self._previous.tolist(), opts.temperature)
        else:
            targets = balance_targets(smoothed, self._reference.tolist(), self._magnitudes)
        self._multipliers = [
            current
            if target is None
            else limited_step(
                current,
                target,
                opts.adaptation_rate,
                opts.adaptation_threshold,
                opts.min_weight,
                opts.max_weight,
            )
            for current, target in zip(self._multipliers, targets, strict=True)
        ]
        self._sync_scaled_weights()

    def _sync_scaled_weights(self) -> None:
        scaled = [w * m for w, m in zip(self._magnitudes, self._multipliers, strict=True)]
        self._scaled_weights.copy_(self._vector(scaled))

    def _anchor_log_variance_window(self) -> None:
        """Allow s_k to move the multiplier by adaptation_rate until the next update."""
        assert self.log_variances is not None
        opts = self.options
        s = self.log_variances.detach()
        # m = exp(-s): m * (1 + rate) <-> s - log(1 + rate), m * (1 - rate) <-> s - log(1 - rate)
        down = -math.log(1.0 - opts.adaptation_rate) if opts.adaptation_rate < 1 else math.inf
        lower = torch.clamp_min(s - math.log1p(opts.adaptation_rate), -math.log(opts.max_weight))
        upper = torch.clamp_max(s + down, -math.log(opts.min_weight))
        self._lower.copy_(lower)
        self._upper.copy_(upper)

    # ----------------------------------------------------------------- access
    def parameters(self) -> list[nn.Parameter]:
        """Learned parameters (uncertainty mode's log-variances), else empty."""
        return [self.log_variances] if self.log_variances is not None else []

    def optimizer_param_group(self) -> dict[str, Any] | None:
        """The optimizer group for `parameters()` (weight decay 0, own lr if configured)."""
        if self.log_variances is None:
            return None
        group: dict[str, Any] = {"params": [self.log_variances], "weight_decay": 0.0}
        if self.options.uncertainty_lr is not None:
            group["lr"] = self.options.uncertainty_lr
        return group

    def multipliers(self) -> dict[str, float]:
        """Current multipliers of the configured weights (reads the device)."""
        if self.log_variances is not None:
            values = torch.exp(-self.log_variances.detach()).tolist()
        else:
            values = self._multipliers
        return dict(zip(self.names, values, strict=True))

    def current_weights(self) -> dict[str, float]:
        """Signed effective weights, e.g. for logging as `loss_weights/<loss>`."""
        return {
            name: sign * magnitude * multiplier
            for (name, multiplier), sign, magnitude in zip(
                self.multipliers().items(), self._signs, self._magnitudes, strict=True
            )
        }

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """Plain containers and CPU tensors; loads with torch.load(weights_only=True)."""

        def cpu(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.detach().cpu().clone()

        return {
            "version": STATE_VERSION,
            "mode": self.options.mode,
            "names": list(self.names),
            "multipliers": list(self._multipliers),
            "interval_sum": cpu(self._interval_sum),
            "interval_count": cpu(self._interval_count),
            "interval_steps": self._interval_steps,
            "steps_observed": self._steps_observed,
            "next_update": self._next_update,
            "smoothed": cpu(self._smoothed),
            "reference": cpu(self._reference),
            "active": self._active,
            "log_variances": cpu(self.log_variances),
            "lower": cpu(self._lower),
            "upper": cpu(self._upper),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`; the losses and mode must match the option file."""
        saved = (state.get("mode"), list(state.get("names", [])))
        wanted = (self.options.mode, list(self.names))
        if state.get("version") != STATE_VERSION or saved != wanted:
            raise UserError(
                f"train.dynamic_loss_scheduling: the resume state was saved for mode "
                f"{saved[0]!r} with losses {saved[1]}, but the option file sets mode "
                f"{wanted[0]!r} with losses {wanted[1]}; use the same mode and losses to resume"
            )

        def device(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(self.device, torch.float32)

        self._multipliers = [float(value) for value in state["multipliers"]]
        self._sync_scaled_weights()
        self._interval_sum.copy_(state["interval_sum"])
        self._interval_count.copy_(state["interval_count"])
        self._interval_steps = int(state["interval_steps"])
        self._steps_observed = int(state["steps_observed"])
        next_update = state["next_update"]
        self._next_update = None if next_update is None else int(next_update)
        self._smoothed = device(state["smoothed"])
        self._previous = None  # rebuilt by the next refresh before anything reads it
        self._reference = device(state["reference"])
        self._active = bool(state["active"])
        if self.log_variances is not None:
            with torch.no_grad():
                # In place: the optimizer holds this very Parameter.
                self.log_variances.copy_(state["log_variances"])
        self._lower.copy_(state["lower"])
        self._upper.copy_(state["upper"])


def build_dynamic_loss_scheduler(
    options: DynamicLossSchedulingOptions | None,
    loss_weights: Mapping[str, float],
    device: torch.device | str = "cpu",
) -> DynamicLossScheduler | None:
    """The scheduler when enabled, skipping 0-weight (disabled) losses; else None."""
    if options is None or not options.enabled:
        return None
    scheduled = {name: weight for name, weight in loss_weights.items() if weight != 0}
    if not scheduled:
        return None
    return DynamicLossScheduler(options, scheduled, device)
