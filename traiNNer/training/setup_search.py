"""Searches that run real training steps before training starts.

The optimizer race (optimizer_selection) and the batch-size search (batch_size)
decide from actual steps of this model on this data. Both restore the model,
optimizer, EMA, loss-weight and data-stream state afterwards, so the run starts
exactly as if they had not stepped; automations do not observe trial steps.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.data import default_collate

from traiNNer.automations.base import Knobs
from traiNNer.automations.batch_size import BatchSizeAutomation
from traiNNer.automations.controller import AutomationController
from traiNNer.automations.optimizer_selection import OptimizerSelection
from traiNNer.models.sr_model import SRModel, release_memory
from traiNNer.training.batches import TrainBatches


@contextmanager
def trial_steps(model: SRModel, knobs: Knobs, batches: TrainBatches) -> Iterator[None]:
    """Everything a trial changes is put back when it ends."""
    assert model.optimizer is not None
    saved = copy.deepcopy(
        {
            "net_g": model.bare_net_g.state_dict(),
            "ema": model.ema.state_dict() if model.ema is not None else None,
            "optimizer": model.optimizer.state_dict(),
            "scaler": model.scaler.state_dict(),
            "loss_scheduler": (
                model.loss_scheduler.state_dict() if model.loss_scheduler is not None else None
            ),
        }
    )
    optimizer_setup = (
        model.optimizer,
        model.optimizer_type,
        model.base_lrs,
        model.schedule,
        knobs.weight_decay,
    )
    observer, model.observer = model.observer, None
    knob_values = (knobs.batch_size, knobs.accum_iter)
    stream = batches.state_dict()
    rng = (torch.get_rng_state(), random.getstate())
    try:
        yield
    finally:
        model.observer = observer
        optimizer, model.optimizer_type, model.base_lrs, model.schedule, knobs.weight_decay = (
            optimizer_setup
        )
        model.optimizer = optimizer
        model.apply_knobs()
        model.bare_net_g.load_state_dict(saved["net_g"])
        if model.ema is not None:
            model.ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        optimizer.zero_grad(set_to_none=True)
        model.scaler.load_state_dict(saved["scaler"])
        if model.loss_scheduler is not None:
            model.loss_scheduler.load_state_dict(saved["loss_scheduler"])
        knobs.batch_size, knobs.accum_iter = knob_values
        batches.load_state_dict(stream)
        torch.set_rng_state(rng[0])
        random.setstate(rng[1])
        model.nonfinite_streak = 0
        model.pop_log_values()


def race_optimizers(
    model: SRModel,
    automations: AutomationController,
    knobs: Knobs,
    batches: TrainBatches,
    log: logging.Logger,
) -> None:
    automation = automations.get("optimizer_selection")
    if not isinstance(automation, OptimizerSelection) or not automations.is_active(
        "optimizer_selection"
    ):
        return
    optim_kwargs = {k: v for k, v in model.train_opt.optim_g.items() if k != "type"}
    trial_batches: list[dict[str, Any]] = []

    def run_trial(name: str) -> list[float]:
        with trial_steps(model, knobs, batches):
            model.replace_optimizer(name, automation.kwargs_for(name, optim_kwargs))
            losses = []
            for step in range(automation.cfg.trial_iterations):
                if len(trial_batches) <= step:
                    trial_batches.append(next(batches))
                model.update_learning_rate(step)
                record = model.optimize_parameters(trial_batches[step], step + 1)
                losses.append(record.losses["l_g_total"])
            return torch.stack(losses).tolist()

    decisions = automation.select(run_trial, knobs)
    automations.apply_decisions(0, automation.name, decisions)
    if knobs.optimizer and knobs.optimizer != model.optimizer_type:
        model.replace_optimizer(
            knobs.optimizer, automation.kwargs_for(knobs.optimizer, optim_kwargs)
        )
        log.info(f"Training with {knobs.optimizer}, the winner of the optimizer race")


def search_batch_size(
    model: SRModel,
    automations: AutomationController,
    knobs: Knobs,
    batches: TrainBatches,
) -> None:
    automation = automations.get("batch_size")
    if not isinstance(automation, BatchSizeAutomation) or not automations.is_active("batch_size"):
        return
    dataset = batches.dataset.dataset
    size = len(batches.dataset)

    def probe(batch_size: int) -> bool:
        with trial_steps(model, knobs, batches):
            knobs.batch_size, knobs.accum_iter = batch_size, 1
            samples = [dataset[i % size] for i in range(batch_size)]
            batch = default_collate(samples)
            try:
                for step in range(automation.options.steps_per_trial):
                    model.optimize_parameters(batch, step + 1)
            except torch.OutOfMemoryError:
                release_memory(model.device)
                return False
            return True

    automations.run_batch_size_search(probe)


def run_startup_searches(
    model: SRModel,
    automations: AutomationController,
    knobs: Knobs,
    batches: TrainBatches,
    log: logging.Logger,
) -> None:
    """The optimizer first: the batch search then measures the optimizer in use."""
    race_optimizers(model, automations, knobs, batches, log)
    search_batch_size(model, automations, knobs, batches)
