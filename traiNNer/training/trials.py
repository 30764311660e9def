"""Trial steps for the automations' start-up phases (the optimizer race, the batch search).

`TrialRunner` is the `TrialSteps` the controller hands to `Automation.run_startup`: it
runs real training steps of this model on this data and puts everything back
afterwards (the model's one snapshot, the data stream, the RNGs), so the run starts
exactly as if no trial had stepped. Automations do not observe trial steps.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.data import default_collate

from traiNNer.automations.base import TrialOutcome
from traiNNer.models.sr_model import SRModel, release_memory
from traiNNer.training.batches import TrainBatches
from traiNNer.utils.dist import DistInfo


def agreed_outcome(
    losses: list[torch.Tensor], out_of_memory: bool, world_size: int, device: torch.device
) -> TrialOutcome:
    """The same outcome on every rank: OOM anywhere counts everywhere, losses averaged."""
    if world_size > 1:
        import torch.distributed as torch_dist

        flag = torch.tensor([1.0 if out_of_memory else 0.0], device=device)
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        out_of_memory = bool(flag.item())
    if out_of_memory or not losses:
        return TrialOutcome([], out_of_memory)
    stacked = torch.stack([loss.float() for loss in losses])
    if world_size > 1:
        import torch.distributed as torch_dist

        torch_dist.all_reduce(stacked)
        stacked = stacked / world_size
    return TrialOutcome(stacked.tolist(), False)


class TrialRunner:
    """Runs `steps` training steps and undoes them (see `TrialSteps`)."""

    def __init__(self, model: SRModel, batches: TrainBatches, dist: DistInfo) -> None:
        self.model = model
        self.batches = batches
        self.dist = dist
        # The stream's first batches, drawn once: every trial without a batch size
        # (every optimizer of the race) trains on the same ones.
        self._stream: list[dict[str, Any]] = []

    def __call__(
        self,
        steps: int,
        *,
        batch_size: int | None = None,
        optimizer: tuple[str, dict[str, Any]] | None = None,
    ) -> TrialOutcome:
        model = self.model
        losses: list[torch.Tensor] = []
        out_of_memory = False
        with self._undone():
            try:
                if optimizer is not None:
                    model.use_trial_optimizer(optimizer)
                for step in range(steps):
                    batch = self._batch(step, batch_size)
                    # At the LR training runs at, not warmup's first tenth of it.
                    model.update_learning_rate(step, warmup=False)
                    record = model.optimize_parameters(batch, step + 1, micro_batch=batch_size)
                    losses.append(record.losses["l_g_total"])
            except torch.OutOfMemoryError:
                out_of_memory = True
                losses = []
                release_memory(model.device)
        return agreed_outcome(losses, out_of_memory, self.dist.world_size, model.device)

    def _batch(self, step: int, batch_size: int | None) -> dict[str, Any]:
        if batch_size is not None:
            # A memory probe: `batch_size` samples in one micro-batch.
            dataset = self.batches.dataset.dataset
            size = len(self.batches.dataset)
            return default_collate([dataset[i % size] for i in range(batch_size)])
        while len(self._stream) <= step:
            self._stream.append(next(self.batches))
        return self._stream[step]

    @contextmanager
    def _undone(self) -> Iterator[None]:
        """Everything a trial changes is put back when it ends."""
        model = self.model
        model.apply_knobs()  # the snapshot then matches what training will start from
        saved = model.snapshot()
        observer, model.observer = model.observer, None
        stream = self.batches.state_dict()
        rng = (torch.get_rng_state(), random.getstate())
        try:
            yield
        finally:
            model.use_trial_optimizer(None)
            model.load_state_dict(saved)
            model.observer = observer
            self.batches.load_state_dict(stream)
            torch.set_rng_state(rng[0])
            random.setstate(rng[1])
            model.pop_log_values()
