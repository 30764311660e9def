"""Early stopping end to end: stops, saves, keeps and restores the best weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train
from tests.conftest import base_options, write_options

pytestmark = pytest.mark.slow


def test_early_stop_saves_best_and_final_and_restores_best(
    tmp_path: Path,
    tiny_dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = base_options(tiny_dataset, tmp_path)
    options["train"]["total_iter"] = 40
    options["val"]["val_freq"] = 4
    # No gain can exceed 100 dB: the first validation is the best, two more end the run.
    options["train"]["automations"] = {
        "early_stopping": {
            "enabled": True,
            "metric": "psnr",
            "patience": 2,
            "min_delta": 100.0,
            "restore_best_weights": True,
        }
    }
    monkeypatch.chdir(tmp_path)
    assert train.main(["-opt", str(write_options(tmp_path / "run.yml", options))]) == 0
    experiment = tmp_path / "experiments" / "unit_run"
    states = sorted(int(p.stem) for p in (experiment / "training_states").glob("*.state"))
    assert states[-1] == 12  # stopped at the third validation, final state saved there
    best = load_file(str(experiment / "models" / "net_g_best.safetensors"))
    final = load_file(str(experiment / "models" / "net_g_latest.safetensors"))
    assert all(torch.equal(best[k], final[k]) for k in best)  # best restored into the final
    at_8 = load_file(str(experiment / "models" / "net_g_8.safetensors"))
    assert not all(torch.equal(best[k], at_8[k]) for k in best)  # training went on past it
    log = next(experiment.glob("train_*.log")).read_text()
    assert "early stop at iteration 12" in log
    assert "over iterations 4-12" in log and "is not above min_delta 100" in log
