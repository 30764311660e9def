"""The training step reads the device exactly once (the non-finite guard), automations on."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from tests.automations_options import ddp_automations
from tests.conftest import base_options, write_options
from traiNNer.automations.controller import AutomationController
from traiNNer.automations.decision_log import DecisionLog
from traiNNer.config.loader import load_options
from traiNNer.models.sr_model import SRModel
from traiNNer.training.knobs import Knobs
from traiNNer.utils.dist import DistInfo

SYNCING = ("item", "tolist", "__bool__", "__float__", "__int__")


@contextmanager
def count_host_reads() -> Iterator[Counter[str]]:
    """Counts reads made by the framework's own code (torch's optimizers read their CPU
    step counters, which is no device synchronization)."""
    counts: Counter[str] = Counter()
    originals = {name: getattr(torch.Tensor, name) for name in SYNCING}

    def counting(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_code.co_filename
            if f"{os.sep}traiNNer{os.sep}" in caller:
                counts[name] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(name, original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def test_one_host_read_per_step_with_automations_and_loss_scheduling(
    tmp_path: Path, tiny_dataset: Path
) -> None:
    options = base_options(tiny_dataset, tmp_path)
    options["train"]["automations"] = ddp_automations()
    options["train"]["losses"].append({"type": "mssimloss", "loss_weight": 0.1})
    options["train"]["dynamic_loss_scheduling"] = {
        "enabled": True,
        "mode": "balance",
        "baseline_iterations": 0,
        "update_interval": 1000,
    }
    options["train"]["ema_decay"] = 0.99
    options["train"]["grad_clip"] = True
    opt = load_options(write_options(tmp_path / "run.yml", options))
    knobs = Knobs(batch_size=2)
    model = SRModel(opt, torch.device("cpu"), knobs, DistInfo())
    model.setup_training(seed=1)
    controller = AutomationController(opt.train.automations, knobs, DecisionLog(None))  # type: ignore[union-attr]
    model.observer = controller
    batch = {"lq": torch.rand(2, 3, 16, 16), "gt": torch.rand(2, 3, 32, 32)}
    # Iterations 1 and 3 are no automation's interval (their smallest is 2).
    for iteration in (1, 3):
        with count_host_reads() as counts:
            model.optimize_parameters(batch, iteration)
        assert counts == Counter({"__bool__": 1}), counts
