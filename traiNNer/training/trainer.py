"""`Trainer`: the training loop's state on one object, saved and loaded as one state.

train.py builds the pieces and runs the loop; what the loop changes (iteration, next
validation, the model, the automations, the data stream, best metrics) lives here, and
`save_checkpoint` / `load_checkpoint` write and read all of it. Knob values are saved
once, in the automation controller's state (see traiNNer/training/knobs.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import DataLoader

from traiNNer.automations.controller import AutomationController
from traiNNer.config.schema import Options
from traiNNer.models.sr_model import SRModel, release_memory
from traiNNer.training.batches import TrainBatches, first_samples
from traiNNer.training.best_metrics import BestMetrics
from traiNNer.training.interrupt import GracefulInterrupt, signal_name
from traiNNer.training.knobs import Knobs
from traiNNer.training.signal_trace import SignalTrace
from traiNNer.utils.checkpoint import prune_training_states, save_training_state
from traiNNer.utils.dist import DistInfo, broadcast_object
from traiNNer.utils.errors import UserError
from traiNNer.utils.experiment import ExperimentPaths
from traiNNer.utils.logger import TensorBoard, status_line
from traiNNer.utils.rng import restore_rng_state, rng_state


class ValidationAbandoned(BaseException):
    """A signal arrived during validation (BaseException: nothing on the way swallows it)."""


class IterationTimer:
    """Iterations per second and ETA over the last print window."""

    def __init__(self, start_iter: int) -> None:
        self.window_start = time.perf_counter()
        self.window_iter = start_iter

    def rate(self, iteration: int) -> float:
        now = time.perf_counter()
        done = iteration - self.window_iter
        rate = done / max(now - self.window_start, 1e-9)
        self.window_start, self.window_iter = now, iteration
        return rate


@dataclass
class Trainer:
    opt: Options
    model: SRModel
    automations: AutomationController
    knobs: Knobs
    batches: TrainBatches
    best: BestMetrics
    paths: ExperimentPaths
    dist: DistInfo
    seed: int
    log: logging.Logger
    tb: TensorBoard
    iteration: int = 0
    next_val_iter: int = 0
    # logger.signal_trace: every step's signals for scripts/automations/replay.py (rank 0).
    trace: SignalTrace | None = None
    # Set while the loop runs: a signal stops training at an iteration boundary.
    interrupt: GracefulInterrupt | None = None
    timer: IterationTimer = field(init=False)
    saved_iter: int = field(default=0, init=False)  # the iteration last saved by this process
    validation_abandoned: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.timer = IterationTimer(self.iteration)

    # ------------------------------------------------------------------ state
    def save_checkpoint(self) -> Path | None:
        """Weights users run plus a resumable training state (rank 0); the state's path."""
        if not self.dist.is_main or self.iteration == 0:
            return None
        path = self.paths.training_states / f"{self.iteration}.state"
        if self.saved_iter == self.iteration:  # e.g. a save iteration a signal stops at too
            return path
        if self.trace is not None:
            self.trace.flush()
        self.model.save_network(self.paths.models, self.iteration)
        state = {
            "iteration": self.iteration,
            "next_val_iter": self.next_val_iter,
            "seed": self.seed,
            "model": self.model.state_dict(),
            "automations": self.automations.state_dict(),
            "batches": self.batches.state_dict(),
            "best_metrics": self.best.state_dict(),
            "rng": rng_state(),
        }
        save_training_state(state, path)
        prune_training_states(self.paths.training_states, self.opt.logger.keep_last_states)
        self.saved_iter = self.iteration
        return path

    def stop_on_signal(self) -> int:
        """Save where a signal stopped training; returns train.py's exit code (128 + signal)."""
        assert self.interrupt is not None
        path = self.save_checkpoint()
        if self.dist.is_main:
            cause = signal_name(self.interrupt.signum)
            if self.validation_abandoned:
                cause += " during validation, which the resumed run repeats"
            if path is None:
                self.log.warning(f"Interrupted ({cause}) before the first iteration: nothing saved")
            else:
                self.log.warning(
                    "Interrupted: saved a resumable state at iteration "
                    f"{self.iteration:,} ({cause}): {path}"
                )
        self.tb.close()
        return self.interrupt.exit_code

    def load_checkpoint(self, state: dict[str, Any]) -> None:
        """Resume: the controller first (it restores the knobs the model then follows)."""
        self.automations.load_state_dict(state["automations"])
        self.model.load_state_dict(state["model"])
        self.batches.load_state_dict(state["batches"])
        self.best.load_state_dict(state["best_metrics"])
        restore_rng_state(state["rng"])
        self.iteration = int(state["iteration"])
        self.next_val_iter = int(state["next_val_iter"])
        pending = self.next_val_iter <= self.iteration  # saved before its validation ran
        freq = self.knobs.val_interval
        if self.automations.get("validation_frequency") is None and freq > 0 and not pending:
            # The option file's val_freq, changed or not, takes effect from here: the next
            # validation is at its next multiple (the saved one when it did not change).
            self.next_val_iter = (self.iteration // freq + 1) * freq
        self.timer = IterationTimer(self.iteration)
        if self.trace is not None:
            self.trace.truncate_after(self.iteration)

    # ------------------------------------------------------------------- step
    def train_step(self) -> None:
        """One iteration; an out-of-memory error redoes it until a remedy works."""
        batch = next(self.batches)
        self.model.update_learning_rate(self.iteration)
        while True:
            try:
                record = self.model.optimize_parameters(batch, self.iteration + 1)
                break
            except torch.OutOfMemoryError:
                batch = self._recover_from_oom(batch)
        self.iteration += 1
        if self.trace is not None:
            self.trace.add_step(record)
        self.perform_actions()
        self.batches.set_batch_size(self.knobs.batch_size * self.knobs.accum_iter)

    def _recover_from_oom(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Free memory, let the automations react, and return the batch to redo with."""
        model, knobs = self.model, self.knobs
        assert model.optimizer is not None
        model.optimizer.zero_grad(set_to_none=True)
        release_memory(model.device)
        before = (knobs.batch_size, knobs.accum_iter, knobs.activation_checkpointing)
        self.automations.on_oom(self.iteration, "train")
        after = (knobs.batch_size, knobs.accum_iter, knobs.activation_checkpointing)
        if after == before:
            set_opt = self.opt.datasets["train"]
            raise UserError(
                f"out of GPU memory at iteration {self.iteration + 1} with batch_size_per_gpu "
                f"{knobs.batch_size} and lq_size {set_opt.lq_size}: lower "
                "datasets.train.batch_size_per_gpu or lq_size, or enable "
                "train.automations.batch_size for automatic recovery"
            )
        self.batches.set_batch_size(knobs.batch_size * knobs.accum_iter)
        # Redo the same iteration on (a prefix of) the same samples: nothing skipped or repeated.
        return first_samples(batch, knobs.batch_size * knobs.accum_iter)

    def perform_actions(self) -> None:
        """The trainer-side actions the automations asked for since the last call."""
        for action in self.automations.pop_actions():
            if action.parameter == "restore_best_weights":
                if self.best.restore_into(self.model):
                    self.log.info(
                        f"[{action.automation}] restored the best weights ({action.reason})"
                    )
            elif action.parameter == "save_good_state":
                self.model.snapshot_good_state()
            elif action.parameter == "restore_last_good_state":
                if self.model.restore_good_state():
                    self.log.info(
                        f"[{action.automation}] restored the last good state ({action.reason})"
                    )
                else:
                    self.log.info(
                        f"[{action.automation}] kept the current state: weights and optimizer "
                        "state are finite, nothing to restore"
                    )

    # -------------------------------------------------------------- logging
    def log_status(self) -> None:
        model, iteration = self.model, self.iteration
        values = model.pop_log_values()
        if self.trace is not None:
            self.trace.flush()
        rate = self.timer.rate(iteration)
        peak_bytes = model.pop_peak_memory()
        peak = peak_bytes / 1024**3 if peak_bytes is not None else None
        lr = model.current_lr()
        total_iter = model.train_opt.total_iter
        eta = (total_iter - iteration) / max(rate, 1e-9)
        self.log.info(status_line(self.batches.epoch, iteration, lr, rate, eta, peak, values))
        for name, value in values.items():
            tag = "grad_norms/net_g" if name == "grad_norm_g" else f"losses/{name}"
            self.tb.add_scalar(tag, value, iteration)
        self.tb.add_scalar("lr", lr, iteration)
        # Learned (uncertainty) loss weights; the automation's appear under automations/.
        for name, weight in model.learned_loss_weights().items():
            self.tb.add_scalar(f"loss_weights/{name}", weight, iteration)

    # ----------------------------------------------------------- validation
    def validation_due(self) -> bool:
        val = self.opt.val
        return val is not None and val.val_enabled and self.iteration >= self.next_val_iter

    def validate(self, loaders: dict[str, DataLoader[Any]]) -> None:
        """Every validation set on rank 0, then best weights and the automations.

        A signal abandons it between two images: the iteration's state is then saved as it
        was before the validation (next_val_iter not advanced, random generators restored),
        and train.py runs this validation first when it resumes from that state.
        """
        model, iteration = self.model, self.iteration
        metrics: dict[str, float] = {}
        rng_before = rng_state() if self.interrupt is not None else None

        def on_oom() -> bool:
            self.automations.on_oom(iteration, "val")
            return self.knobs.val_tiled

        try:
            for index, (name, loader) in enumerate(loaders.items()):
                values = model.validation(
                    self._abandonable(loader),
                    name,
                    iteration,
                    self.paths.visualization,
                    on_oom,
                    image_callback=lambda tag, img: self.tb.add_image(f"val/{tag}", img, iteration),
                )
                for metric, value in values.items():
                    metrics[f"{name}/{metric}"] = value
                    if index == 0:
                        metrics[metric] = value
                    self.tb.add_scalar(f"metrics/{name}/{metric}", value, iteration)
                text = " ".join(f"{metric}: {value:.4f}" for metric, value in values.items())
                self.log.info(f"Validation {name} at iter {iteration:,}: {text}")
            outcome: object = metrics
        except ValidationAbandoned:
            assert self.interrupt is not None
            outcome = self.interrupt.received
        # Rank 0 validated; every rank acts on the same values, or stops here with it.
        outcome = broadcast_object(outcome, self.dist)
        if isinstance(outcome, int):
            assert self.interrupt is not None and rng_before is not None
            restore_rng_state(rng_before)  # the validation consumed some; the rerun will again
            self.validation_abandoned = True
            self.interrupt.stop_now(outcome)
            return
        metrics = outcome  # type: ignore[assignment]
        if self.trace is not None:
            self.trace.add_validation(iteration, metrics)
        if self.dist.is_main and self.best.update(metrics, iteration, model):
            model.save_network(self.paths.models, "best")
        model.feed_plateau_schedule(metrics)
        self.automations.after_validation(iteration, metrics)
        self.perform_actions()
        self.next_val_iter = iteration + max(1, self.knobs.val_interval)

    def _abandonable(self, loader: DataLoader[Any]) -> DataLoader[Any]:
        """`loader`'s items until a signal arrives (checked before each image)."""
        interrupt = self.interrupt
        if interrupt is None:
            return loader

        def items() -> Iterator[Any]:
            for item in loader:
                if interrupt.flag:
                    raise ValidationAbandoned
                yield item

        # SRModel.validation only iterates over its loader.
        return cast(DataLoader[Any], items())
