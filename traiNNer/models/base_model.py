"""BaseModel: the one place a training step happens (`optimize_parameters`)."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn
from torch.amp.grad_scaler import _refresh_per_optimizer_state
from torch.nn.parallel import DistributedDataParallel

from traiNNer.automations.base import StepRecord
from traiNNer.config.schema import Options, TrainOptions
from traiNNer.models.ema import EMA
from traiNNer.models.precision import autocast, make_scaler
from traiNNer.optimizers import build_optimizer, is_schedule_free
from traiNNer.schedulers import Schedule, build_schedule, set_momentum, warmup_factor
from traiNNer.training.knobs import Knobs, Precision
from traiNNer.utils.dist import DistInfo
from traiNNer.utils.errors import UserError

logger = logging.getLogger(__name__)


class StepObserver(Protocol):
    """What the model notifies after each optimizer step (the automation controller)."""

    def observe_step(self, record: StepRecord) -> None: ...

    def on_nonfinite(self, iteration: int) -> object: ...


class NonFiniteLossError(UserError):
    """Too many non-finite losses in a row: training cannot continue."""


class BaseModel:
    """Holds the generator, its optimizer, schedule, precision state and EMA.

    Subclasses provide `compute_losses` (unweighted losses of one micro-batch and
    their weighted total) and the data handling; everything about stepping the
    optimizer lives here so automations see every step.
    """

    net_g: nn.Module

    def __init__(self, opt: Options, device: torch.device, knobs: Knobs, dist: DistInfo) -> None:
        self.opt = opt
        self.device = device
        self.knobs = knobs
        self.dist = dist
        self.observer: StepObserver | None = None
        self.precision: Precision = knobs.precision
        self.scaler = make_scaler(device, self.precision)
        self.ema: EMA | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.schedule: Schedule = build_schedule(None, {}, 1, 1.0)
        # What the schedule is built from; a resume may bring back the saved one.
        self.schedule_options: dict[str, Any] = {}
        self.base_lrs: list[float] = []
        self.optimizer_type = ""
        self._extra_param_groups: list[dict[str, Any]] = []
        self.nonfinite_streak = 0
        self.nonfinite_total = 0
        # The weight-decay knob value last pushed into the optimizer (None: push now).
        self._applied_weight_decay: float | None = knobs.weight_decay
        # A trial step's optimizer (the optimizer race), which the knobs must not undo.
        self._trial_optimizer: tuple[str, dict[str, Any]] | None = None
        self._last_step_end: float | None = None
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._grad_norm_sum: torch.Tensor | None = None
        self._logged_steps = 0
        self.peak_memory_since_log = 0

    # ----------------------------------------------------------------- building
    @property
    def train_opt(self) -> TrainOptions:
        assert self.opt.train is not None
        return self.opt.train

    @property
    def bare_net_g(self) -> nn.Module:
        """The generator without DDP / torch.compile wrappers (what gets saved)."""
        net = self.net_g
        if isinstance(net, DistributedDataParallel):
            net = net.module
        return getattr(net, "_orig_mod", net)

    def setup_optimization(self, extra_param_groups: list[dict[str, Any]] | None = None) -> None:
        train = self.train_opt
        self._extra_param_groups = extra_param_groups or []
        self.schedule_options = {
            "scheduler": copy.deepcopy(train.scheduler),
            "total_iter": train.total_iter,
        }
        self.replace_optimizer(*self._wanted_optimizer())
        if train.ema_decay > 0:
            self.ema = EMA(
                self.bare_net_g, train.ema_decay, train.ema_update_after_step, train.ema_power
            )

    def _build_schedule(self) -> None:
        options = self.schedule_options
        scheduler = dict(options["scheduler"] or {})
        sched_type = scheduler.pop("type", None)
        self.schedule = build_schedule(
            sched_type, scheduler, options["total_iter"], self.base_lrs[0]
        )

    def replace_optimizer(self, type_name: str, kwargs: dict[str, Any]) -> None:
        """A fresh optimizer (and the schedule bound to its LR) over the same parameters."""
        params = [p for p in self.net_g.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": params}, *self._extra_param_groups]
        self.optimizer = build_optimizer(type_name, groups, kwargs)
        self.optimizer_type = type_name.lower()
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self._build_schedule()
        if self._trial_optimizer is None:
            # The weight-decay knob is the run's weight decay, whichever optimizer holds it;
            # a race candidate trains with its own arguments.
            self._applied_weight_decay = None
        # Schedule-free optimizers are built in eval mode and refuse to step in it.
        self.optimizer_train_mode()

    def _wanted_optimizer(self) -> tuple[str, dict[str, Any]]:
        """(type, kwargs): a trial's, else the one optimizer_selection chose, else optim_g."""
        if self._trial_optimizer is not None:
            return self._trial_optimizer
        if self.knobs.optimizer:
            return self.knobs.optimizer, dict(self.knobs.optimizer_kwargs)
        kwargs = dict(self.train_opt.optim_g)
        return kwargs.pop("type"), kwargs

    def use_trial_optimizer(self, optimizer: tuple[str, dict[str, Any]] | None) -> None:
        """Train with `optimizer` until called with None (trial steps only)."""
        self._trial_optimizer = optimizer
        self.apply_knobs()

    # ------------------------------------------------------------ knobs -> state
    def set_precision(self, precision: Precision) -> None:
        """Switch autocast dtype; a fresh GradScaler for fp16 (old scale is meaningless)."""
        if precision != self.precision:
            self.precision = precision
            self.scaler = make_scaler(self.device, precision)

    def apply_knobs(self) -> None:
        """Push knob values the automations may have changed into the training objects."""
        type_name, kwargs = self._wanted_optimizer()
        if self.optimizer is not None and type_name.lower() != self.optimizer_type:
            self.replace_optimizer(type_name, kwargs)
        if self.knobs.precision != self.precision:
            self.set_precision(self.knobs.precision)
        setter = getattr(self.bare_net_g, "set_activation_checkpointing", None)
        if setter is not None:
            setter(self.knobs.activation_checkpointing)
        if self.optimizer is not None and self.knobs.weight_decay != self._applied_weight_decay:
            for group in self.optimizer.param_groups:
                if group.get("weight_decay", 0.0) > 0 or group is self.optimizer.param_groups[0]:
                    group["weight_decay"] = self.knobs.weight_decay
            self._applied_weight_decay = self.knobs.weight_decay

    def update_learning_rate(self, iteration: int, warmup: bool = True) -> None:
        """LR = base * schedule(iter) * warmup(iter) * automation multiplier (`warmup`
        False: the LR after warmup, as trial steps use to measure the real optimizer)."""
        assert self.optimizer is not None
        warm = warmup_factor(iteration, self.train_opt.warmup_iter) if warmup else 1.0
        factor = self.schedule.factor(iteration) * warm * self.knobs.lr_multiplier
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base_lr * factor
        momentum = self.schedule.momentum(iteration)  # CyclicLR / OneCycleLR cycle beta1
        if momentum is not None:
            set_momentum(self.optimizer, momentum)

    def current_lr(self) -> float:
        assert self.optimizer is not None
        return float(self.optimizer.param_groups[0]["lr"])

    # -------------------------------------------------------------- the step
    def compute_losses(
        self, chunk: dict[str, torch.Tensor], iteration: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total and detached unweighted losses of one micro-batch."""
        raise NotImplementedError

    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Hook for batch-level augmentation before the micro-batch split."""
        return batch

    def after_step(self, iteration: int, losses: dict[str, torch.Tensor]) -> None:
        """Hook for subclasses (e.g. the dynamic loss scheduler's statistics)."""

    def split_batch(
        self, batch: dict[str, Any], micro_batch: int | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Micro-batches of `knobs.batch_size` samples, `knobs.accum_iter` of them at most
        (or of `micro_batch` samples, as many as the batch holds)."""
        total = batch["lq"].shape[0]
        if micro_batch is not None:
            size, count = max(1, min(micro_batch, total)), math.ceil(total / max(1, micro_batch))
        else:
            size = max(1, min(self.knobs.batch_size, total))
            count = min(self.knobs.accum_iter, math.ceil(total / size))
        for i in range(count):
            yield {
                key: batch[key][i * size : (i + 1) * size].to(self.device, non_blocking=True)
                for key in ("lq", "gt")
            }

    def optimize_parameters(
        self, batch: dict[str, Any], iteration: int, micro_batch: int | None = None
    ) -> StepRecord:
        """One optimizer step over the batch (split for gradient accumulation; trial steps
        give `micro_batch` to step at a size the knobs do not hold)."""
        self.apply_knobs()
        assert self.optimizer is not None
        self.optimizer_train_mode()  # a no-op unless a schedule-free one was left in eval
        net = self.net_g
        net.train()
        chunks = list(self.split_batch(self.prepare_batch(batch), micro_batch))
        samples = sum(chunk["lq"].shape[0] for chunk in chunks)
        loss_sums: dict[str, torch.Tensor] = {}
        total_sum = torch.zeros((), device=self.device)
        out_of_memory = False
        for chunk in chunks:
            # Under DDP the gradients are reduced by `_reduce_gradients` after the last
            # chunk, never inside backward: a rank that runs out of memory mid-step must
            # still reach the step's one collective, or the others would wait forever.
            sync_context = (
                net.no_sync()
                if isinstance(net, DistributedDataParallel)
                else contextlib.nullcontext()
            )
            try:
                with sync_context:
                    with autocast(self.device, self.precision):
                        total, losses = self.compute_losses(chunk, iteration)
                    # Chunks may differ in size: weight each by its share of the samples.
                    share = chunk["lq"].shape[0] / samples
                    self.scaler.scale(total * share).backward()
            except torch.OutOfMemoryError:
                if not self.dist.enabled:
                    raise
                out_of_memory = True
                self.optimizer.zero_grad(set_to_none=True)
                break
            total_sum = total_sum + total.detach() * share
            for name, value in losses.items():
                previous = loss_sums.get(name)
                scaled = value * share
                loss_sums[name] = scaled if previous is None else previous + scaled

        # A non-finite loss or gradient must never reach the weights. Under fp16
        # GradScaler already skips overflowing gradients (and makes its own read), so
        # only a non-finite loss counts there.
        finite = torch.isfinite(total_sum)
        failed = None
        if self.dist.enabled:
            # Every rank steps, skips or redoes alike: one collective carries the
            # gradients, the ranks with a non-finite loss and those out of memory.
            finite, failed = self._reduce_gradients(finite, out_of_memory)
        grad_norm, clipped = self._clip_gradients()
        if self.precision != "fp16":
            finite = finite & torch.isfinite(grad_norm)
        # The one host read of the step.
        if failed is None:
            step_ok = bool(finite)
        else:
            step_ok, any_out_of_memory = (bool(v) for v in torch.stack([finite, failed]).tolist())
            if any_out_of_memory:
                self._abandon_step()
                raise torch.OutOfMemoryError(
                    f"out of memory on {'this' if out_of_memory else 'another'} rank at "
                    f"iteration {iteration} (every rank redoes the step)"
                )
        if step_ok:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if step_ok:
            self.nonfinite_streak = 0
            if self.ema is not None:
                self.ema.update(self.bare_net_g, iteration)
                switch = self.train_opt.ema_switch_iter
                if switch and iteration % switch == 0:
                    self.ema.copy_into(self.bare_net_g)
            self.after_step(iteration, loss_sums)
        else:
            self._on_nonfinite(iteration)

        now = time.perf_counter()
        step_time = now - self._last_step_end if self._last_step_end is not None else 0.0
        self._last_step_end = now
        loss_sums["l_g_total"] = total_sum
        record = StepRecord(
            iteration=iteration,
            losses=loss_sums,
            grad_norms={"net_g": grad_norm},
            clipped={"net_g": clipped},
            loss_scale=self.scaler._scale if self.scaler.is_enabled() else None,
            step_time=step_time,
            peak_memory=self._step_peak_memory(),
            batch_size=batch["lq"].shape[0],
            applied=step_ok,
        )
        if step_ok:
            self._accumulate_for_log(loss_sums, grad_norm)
        if self.observer is not None:
            self.observer.observe_step(record)
        return record

    def _reduce_gradients(
        self, finite: torch.Tensor, out_of_memory: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Average the gradients over the ranks in one all-reduce that also carries two
        counts: ranks whose loss was not finite and ranks that ran out of memory.

        Returns (finite on every rank, out of memory on some rank), on the device. A
        parameter without a gradient (a rank out of memory has none) adds zeros.
        """
        import torch.distributed as dist

        assert self.optimizer is not None
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        flags = torch.stack(
            [(~finite).to(torch.float32), torch.tensor(float(out_of_memory), device=self.device)]
        )
        pieces = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
            for p in params
        ]
        flat = torch.cat([*pieces, flags])
        dist.all_reduce(flat)  # on the device: no extra host read
        world = self.dist.world_size
        offset = 0
        for p in params:
            count = p.numel()
            reduced = flat[offset : offset + count].view_as(p).div_(world)
            if p.grad is None:
                p.grad = reduced.to(p.dtype)
            else:
                p.grad.copy_(reduced)
            offset += count
        return flat[-2] == 0, flat[-1] > 0

    def _abandon_step(self) -> None:
        """Forget this step's gradients and GradScaler bookkeeping before it is redone."""
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():
            # What GradScaler.update() resets at the end of a step, without touching the
            # scale: the redone step must start where this one started.
            self.scaler._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)

    def _step_peak_memory(self) -> int | None:
        """Peak allocated bytes during this step (allocator counters: no device sync)."""
        if self.device.type != "cuda":
            return None
        peak = torch.cuda.max_memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.peak_memory_since_log = max(self.peak_memory_since_log, peak)
        return peak

    def pop_peak_memory(self) -> int | None:
        """Highest per-step peak since the last call (for the console line)."""
        if self.device.type != "cuda":
            return None
        peak, self.peak_memory_since_log = self.peak_memory_since_log, 0
        return peak

    def _clip_gradients(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.optimizer is not None
        self.scaler.unscale_(self.optimizer)
        # Only the generator's own parameters: extra groups (learned loss weights) neither
        # count towards the logged norm nor get clipped.
        params = list(self.optimizer.param_groups[0]["params"])
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            zero = torch.zeros((), device=self.device)
            return zero, zero.bool()
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        threshold = self.knobs.clip_threshold.get("net_g")
        if threshold is None and self.train_opt.grad_clip:
            threshold = self.train_opt.grad_clip_max_norm
        if threshold is None:
            return norm, torch.zeros((), dtype=torch.bool, device=norm.device)
        torch.nn.utils.clip_grads_with_norm_(params, threshold, norm, foreach=True)
        return norm, norm > threshold

    def _on_nonfinite(self, iteration: int) -> None:
        self.nonfinite_streak += 1
        self.nonfinite_total += 1
        if self.observer is not None:
            self.observer.on_nonfinite(iteration)
        limit = self.train_opt.max_nonfinite_steps
        if self.nonfinite_streak >= limit:
            raise NonFiniteLossError(
                f"{self.nonfinite_streak} non-finite losses in a row at iteration {iteration} "
                f"(train.max_nonfinite_steps: {limit}); lower the learning rate, enable "
                "grad_clip, or use amp_bf16 instead of fp16"
            )

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything a step changes: the one snapshot behind checkpoints, trial steps
        and the precision automation's good state. Knob values are not in it (the
        controller saves those)."""
        assert self.optimizer is not None
        return {
            "net_g": self.bare_net_g.state_dict(),
            "net_g_ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer_type": self.optimizer_type,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "schedule_options": copy.deepcopy(self.schedule_options),
            "scaler": self.scaler.state_dict(),
            "nonfinite": [self.nonfinite_streak, self.nonfinite_total],
        }

    def load_state_dict(self, state: dict[str, Any], *, keep_counters: bool = False) -> None:
        """Restore `state_dict()` under the current knobs (precision, optimizer type).

        An optimizer state saved for another optimizer type than the one the knobs now
        ask for (train.optim_g.type changed, or optimizer_selection switched off before
        resuming) is not loaded: that optimizer starts fresh, with a warning, and the
        weights, EMA, schedule and counters resume. `keep_counters` keeps the non-finite
        step counters.
        """
        self.apply_knobs()
        assert self.optimizer is not None
        self.bare_net_g.load_state_dict(state["net_g"])
        if self.ema is not None and state["net_g_ema"] is not None:
            self.ema.load_state_dict(state["net_g_ema"])
        if state["optimizer_type"] == self.optimizer_type:
            self._load_optimizer_state(state["optimizer"])
        else:
            logger.warning(
                "train.optim_g.type: the training state was saved with %s, so %s starts "
                "with a fresh optimizer state (the weights, EMA and schedule resume)",
                state["optimizer_type"],
                self.optimizer_type,
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self._keep_saved_schedule(state.get("schedule_options")):
            self.schedule.load_state_dict(state["schedule"])
        # A scaler saved under another precision (bf16/fp32 save an empty state) is skipped.
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if not keep_counters:
            self.nonfinite_streak, self.nonfinite_total = state["nonfinite"]
        self.apply_knobs()

    def _load_optimizer_state(self, saved: dict[str, Any]) -> None:
        """Load a saved state of the same optimizer type; one that does not fit (another
        number or size of parameter groups) leaves the optimizer fresh, with a warning."""
        assert self.optimizer is not None
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(saved)
        except ValueError as err:  # torch checks the groups before changing anything
            logger.warning(
                "the saved %s optimizer state does not fit (%s); it starts with a fresh one",
                self.optimizer_type,
                str(err).rstrip("."),
            )
            return
        # torch replaces the param groups with the saved ones; a hyperparameter they lack
        # (a newer torch's) would be a KeyError at the first step, so it keeps its value.
        for group, defaults in zip(self.optimizer.param_groups, fresh, strict=True):
            for name, value in defaults.items():
                group.setdefault(name, value)
        self._applied_weight_decay = None  # param groups now hold the saved value

    def _keep_saved_schedule(self, saved: dict[str, Any] | None) -> bool:
        """traiNNer-redux's `restart_scheduler`: a resumed run keeps the schedule it was
        saved with unless the key is true; False means the file's schedule starts afresh."""
        if saved is None or saved == self.schedule_options:
            return True  # the same schedule (or a state from before schedules were saved)
        if self.train_opt.restart_scheduler:
            logger.warning(
                "train.restart_scheduler: the option file's schedule %s replaces the saved %s",
                self.schedule_options,
                saved,
            )
            return False
        logger.warning(
            "the run was saved with the schedule %s; it continues with it, not the option "
            "file's %s (set train.restart_scheduler: true to use the file's)",
            saved,
            self.schedule_options,
        )
        self.schedule_options = copy.deepcopy(saved)
        self._build_schedule()
        return True

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of `state_dict()` (on the device) to go back to later."""
        return copy.deepcopy(self.state_dict())

    # ----------------------------------------------------------- log values
    def _accumulate_for_log(self, losses: dict[str, torch.Tensor], grad_norm: torch.Tensor) -> None:
        for name, value in losses.items():
            previous = self._loss_sums.get(name)
            self._loss_sums[name] = value if previous is None else previous + value
        self._grad_norm_sum = (
            grad_norm if self._grad_norm_sum is None else self._grad_norm_sum + grad_norm
        )
        self._logged_steps += 1

    def pop_log_values(self) -> dict[str, float]:
        """Mean losses and grad norm since the last call (reads the device once)."""
        if self._logged_steps == 0:
            return {}
        names = list(self._loss_sums)
        assert self._grad_norm_sum is not None
        stacked = torch.stack([self._loss_sums[n] for n in names] + [self._grad_norm_sum])
        values = (stacked / self._logged_steps).tolist()
        self._loss_sums, self._grad_norm_sum, self._logged_steps = {}, None, 0
        out = dict(zip(names, values[:-1], strict=True))
        out["grad_norm_g"] = values[-1]
        return out

    # ------------------------------------------------------- train/eval switches
    def optimizer_eval_mode(self) -> None:
        """Schedule-free optimizers hold averaged weights only in eval mode."""
        if self.optimizer is not None and is_schedule_free(self.optimizer):
            self.optimizer.eval()  # type: ignore[attr-defined]

    def optimizer_train_mode(self) -> None:
        if self.optimizer is not None and is_schedule_free(self.optimizer):
            self.optimizer.train()  # type: ignore[attr-defined]
