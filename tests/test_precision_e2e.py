"""Precision automation end to end on CPU with injected non-finite losses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import train
from tests.conftest import base_options, write_options
from traiNNer.models.sr_model import SRModel

pytestmark = pytest.mark.slow


def inject_nan_at(monkeypatch: pytest.MonkeyPatch, iterations: set[int]) -> None:
    original = SRModel.compute_losses

    def compute_losses(
        model: SRModel, chunk: dict[str, torch.Tensor], iteration: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, losses = original(model, chunk, iteration)
        if iteration in iterations and model.observer is not None:
            total = total * float("nan")
        return total, losses

    monkeypatch.setattr(SRModel, "compute_losses", compute_losses)


def run(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    options = base_options(tiny_dataset, tmp_path)
    options["use_amp"] = True  # fp16 autocast works on CPU, so the fp16 path is exercised
    options["train"]["total_iter"] = 16
    options["train"]["automations"] = {
        "precision": {
            "enabled": True,
            "check_interval": 4,
            "nonfinite_limit": 3,
            "nonfinite_window": 8,
            "snapshot_interval": 4,
        }
    }
    monkeypatch.chdir(tmp_path)
    assert train.main(["-opt", str(write_options(tmp_path / "run.yml", options))]) == 0
    experiment = tmp_path / "experiments" / "unit_run"
    weights = load_file(str(experiment / "models" / "net_g_latest.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    lines = (experiment / "automations.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_repeated_nonfinite_losses_move_fp16_to_bf16(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject_nan_at(monkeypatch, {6, 7, 8})
    records = run(tmp_path, tiny_dataset, monkeypatch)
    switches = [r for r in records if r["parameter"] == "precision"]
    assert [(r["old"], r["new"]) for r in switches] == [("fp16", "bf16")]
    assert switches[0]["iteration"] == 8
    state = torch.load(
        tmp_path / "experiments" / "unit_run" / "training_states" / "16.state", weights_only=True
    )
    # Knob values are saved once, with the automation that set them.
    assert state["automations"]["knobs"]["precision"] == {
        "automation": "precision",
        "value": "bf16",
    }
    assert state["model"]["nonfinite"] == [0, 3]


def train_log(tmp_path: Path) -> str:
    (log,) = (tmp_path / "experiments" / "unit_run").glob("train_unit_run_*.log")
    return log.read_text()


def corrupt_weights_after(monkeypatch: pytest.MonkeyPatch, iteration: int) -> None:
    """The step at `iteration` leaves a NaN in the weights (as a diverging optimizer would)."""
    original = SRModel.optimize_parameters

    def optimize(model: SRModel, batch: Any, at: int, micro_batch: int | None = None) -> Any:
        record = original(model, batch, at, micro_batch)
        if at == iteration:
            with torch.no_grad():
                next(model.bare_net_g.parameters()).view(-1)[0] = float("nan")
        return record

    monkeypatch.setattr(SRModel, "optimize_parameters", optimize)


def test_non_finite_weights_are_restored_from_the_last_snapshot(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corrupt_weights_after(monkeypatch, 6)
    records = run(tmp_path, tiny_dataset, monkeypatch)  # asserts the final weights finite
    restores = [r for r in records if r["parameter"] == "restore_last_good_state"]
    # Every step after 6 fails; the third (9) falls back and restores the snapshot of 4.
    assert [(r["iteration"], r["new"]) for r in restores] == [(9, 4)]
    log = train_log(tmp_path)
    assert "restored the last good state" in log


def test_a_nan_burst_with_finite_weights_restores_nothing(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject_nan_at(monkeypatch, {6, 7, 8})
    run(tmp_path, tiny_dataset, monkeypatch)
    log = train_log(tmp_path)
    assert "kept the current state" in log and "restored the last good state" not in log


def test_a_single_nan_does_not_switch_precision(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject_nan_at(monkeypatch, {6})
    records = run(tmp_path, tiny_dataset, monkeypatch)
    assert not [r for r in records if r["parameter"] == "precision"]


def test_too_many_nonfinite_steps_in_a_row_stop_with_a_clear_error(
    tmp_path: Path,
    tiny_dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inject_nan_at(monkeypatch, set(range(3, 100)))
    options = base_options(tiny_dataset, tmp_path)
    options["train"]["max_nonfinite_steps"] = 4
    monkeypatch.chdir(tmp_path)
    assert train.main(["-opt", str(write_options(tmp_path / "run.yml", options))]) == 1
    err = capsys.readouterr().err
    assert "4 non-finite losses in a row at iteration 6" in err
    assert err.strip().count("\n") == 0
