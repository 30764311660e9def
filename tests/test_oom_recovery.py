"""Out-of-memory handling, with an injected fault: OOM above a chosen batch size.

CI has no GPU, so the fault is raised by a wrapper around the model's loss computation
(training) or inference (validation), exactly where a real CUDA OOM would surface.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import train
from tests.conftest import base_options, write_options
from traiNNer.models.sr_model import SRModel

pytestmark = pytest.mark.slow


class OomAbove:
    """Wraps SRModel.compute_losses: OOM whenever a micro-batch exceeds `limit` samples."""

    def __init__(self, limit: int, from_iteration: int = 0) -> None:
        self.limit = limit
        self.from_iteration = from_iteration
        self.completed: list[int] = []
        self.original = SRModel.compute_losses

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fault = self

        def compute_losses(
            model: SRModel, chunk: dict[str, torch.Tensor], iteration: int
        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            if iteration >= fault.from_iteration and chunk["lq"].shape[0] > fault.limit:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            return fault.original(model, chunk, iteration)

        def optimize(
            model: SRModel, batch: dict[str, Any], iteration: int, micro_batch: int | None = None
        ) -> Any:
            record = original_optimize(model, batch, iteration, micro_batch)
            if model.observer is not None:  # trial steps of searches run without observer
                fault.completed.append(iteration)
            return record

        original_optimize = SRModel.optimize_parameters
        monkeypatch.setattr(SRModel, "compute_losses", compute_losses)
        monkeypatch.setattr(SRModel, "optimize_parameters", optimize)


def run(tmp_path: Path, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.chdir(tmp_path)
    return train.main(["-opt", str(write_options(tmp_path / "run.yml", options))])


def decisions(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "experiments" / "unit_run" / "automations.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_search_finds_the_largest_fitting_size_with_margin(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    OomAbove(limit=6).install(monkeypatch)
    options = base_options(tiny_dataset, tmp_path)
    options["train"]["total_iter"] = 4
    options["train"]["automations"] = {
        "batch_size": {
            "enabled": True,
            "search": True,
            "search_on_cpu": True,  # the injected OOM stands in for a GPU's memory
            "max_batch_size": 16,
            "margin": 0.1,
            "steps_per_trial": 1,
            "keep_effective_batch": False,
        }
    }
    assert run(tmp_path, options, monkeypatch) == 0
    chosen = [d for d in decisions(tmp_path) if d["parameter"] == "batch_size"]
    assert chosen[-1]["new"] == 5  # 6 fits, 7 fails; 10% margin below 6 -> 5


def test_training_oom_shrinks_the_batch_and_redoes_the_iteration(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = OomAbove(limit=3, from_iteration=5)
    fault.install(monkeypatch)
    options = base_options(tiny_dataset, tmp_path)
    options["datasets"]["train"]["batch_size_per_gpu"] = 4
    options["train"]["automations"] = {
        "batch_size": {"enabled": True, "search": False, "keep_effective_batch": True}
    }
    assert run(tmp_path, options, monkeypatch) == 0
    # Every iteration 1..12 completed exactly once: none lost, none counted twice.
    assert fault.completed == list(range(1, 13))
    changes = {d["parameter"]: d for d in decisions(tmp_path)}
    # 4 x 0.75 = 3 does not divide the effective batch 4: 2 x accum_iter 2 keeps it exactly.
    assert changes["batch_size"]["old"] == 4 and changes["batch_size"]["new"] == 2
    assert changes["batch_size"]["iteration"] == 4  # the iteration being redone is the 5th
    assert changes["accum_iter"]["new"] == 2
    state = torch.load(
        tmp_path / "experiments" / "unit_run" / "training_states" / "12.state", weights_only=True
    )
    assert state["automations"]["automations"]["batch_size"]["failures"] == [4]


def test_training_oom_without_the_automation_is_a_clear_error(
    tmp_path: Path,
    tiny_dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    OomAbove(limit=1).install(monkeypatch)
    options = base_options(tiny_dataset, tmp_path)
    assert run(tmp_path, options, monkeypatch) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "out of GPU memory at iteration 1 with batch_size_per_gpu 2" in err
    assert "train.automations.batch_size" in err


def test_validation_oom_switches_to_tiles_and_keeps_the_training_batch(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original_infer = SRModel.infer

    def infer(model: SRModel, lq: torch.Tensor, tile_size: int = 0) -> torch.Tensor:
        if tile_size == 0:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return original_infer(model, lq, tile_size)

    monkeypatch.setattr(SRModel, "infer", infer)
    options = base_options(tiny_dataset, tmp_path)
    options["train"]["automations"] = {"batch_size": {"enabled": True, "search": False}}
    assert run(tmp_path, options, monkeypatch) == 0
    records = decisions(tmp_path)
    assert [(d["parameter"], d["new"]) for d in records] == [("val_tiled", True)]
    log = next((tmp_path / "experiments" / "unit_run").glob("train_*.log")).read_text()
    assert "Validation tiny_val at iter 12" in log


def test_activation_checkpointing_comes_before_a_smaller_batch(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    OomAbove(limit=2, from_iteration=3).install(monkeypatch)
    options = base_options(tiny_dataset, tmp_path)
    options["datasets"]["train"]["batch_size_per_gpu"] = 4
    options["train"]["automations"] = {
        "precision": {"enabled": True},
        "batch_size": {"enabled": True, "search": False, "keep_effective_batch": False},
    }
    assert run(tmp_path, options, monkeypatch) == 0
    changes = [(d["automation"], d["parameter"], d["new"]) for d in decisions(tmp_path)]
    assert changes.index(("precision", "activation_checkpointing", True)) < changes.index(
        ("batch_size", "batch_size", 3)
    )
