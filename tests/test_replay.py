"""`logger.signal_trace` + replay: a trace recorded by train.py, replayed with the same option
file, gives the run's own decisions up to the first one that changes the trajectory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scripts.automations import replay as replay_cli
from tests.conftest import base_options, write_options
from tests.test_automations_e2e import ENV, ROOT
from traiNNer.config.loader import load_options
from traiNNer.training.replay import replay
from traiNNer.training.signal_trace import read_trace

pytestmark = pytest.mark.slow

# Decisions after which the recorded signal is no longer what the replay would produce.
TRAJECTORY = (
    "lr_multiplier",
    "clip_threshold",
    "batch_size",
    "accum_iter",
    "precision",
    "weight_decay",
    "aug_prob",
    "loss_weights",
    "restore_",
    "stop_requested",
)


def options(tmp: Path, dataset: Path) -> dict[str, Any]:
    opts = base_options(dataset, tmp)
    opts["train"]["total_iter"] = 40
    opts["logger"]["signal_trace"] = True
    opts["logger"]["print_freq"] = 5
    opts["val"]["val_freq"] = 4
    opts["train"]["automations"] = {
        "validation_frequency": {
            "enabled": True,
            "min_interval": 2,
            "max_interval": 8,
            "window": 3,
            "cooldown": 0,
        },
        "early_stopping": {"enabled": True, "patience": 50},
        "precision": {"enabled": True, "check_interval": 4, "snapshot_interval": 8},
        "lr_scheduling": {
            "enabled": True,
            "monitor_train_loss": True,
            "check_interval": 2,
            "patience": 10,
            "threshold": 0.5,
        },
    }
    return opts


def until_first_trajectory_change(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    first = next((r["iteration"] for r in rows if r["parameter"].startswith(TRAJECTORY)), None)
    kept = rows if first is None else [r for r in rows if r["iteration"] <= first]
    return [(r["iteration"], r["automation"], r["parameter"], r["old"], r["new"]) for r in kept]


def test_replay_of_a_recorded_trace_gives_the_runs_decisions(
    tmp_path: Path, tiny_dataset: Path
) -> None:
    option_file = write_options(tmp_path / "run.yml", options(tmp_path, tiny_dataset))
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-opt", str(option_file)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tmp_path / "experiments" / "unit_run"
    lines = list(read_trace(experiment / "signals.jsonl"))
    steps = [line for line in lines if "losses" in line]
    assert [line["iteration"] for line in steps] == list(range(1, 41))
    assert all(line["finite"] and "l_g_total" in line["losses"] for line in steps)
    assert any("metrics" in line for line in lines)

    trained = [json.loads(t) for t in (experiment / "automations.jsonl").read_text().splitlines()]
    replayed = replay(load_options(option_file), lines, device_type="cpu")
    expected = until_first_trajectory_change(trained)
    assert any(r[2] == "lr_multiplier" for r in expected)  # the comparison reaches a cut
    assert until_first_trajectory_change(replayed.decisions) == expected

    # The command line writes the same decisions, a plot and the open-loop note.
    out = tmp_path / "replay"
    argv = ["--trace", str(experiment / "signals.jsonl"), "-opt", str(option_file)]
    assert replay_cli.main([*argv, "--out", str(out), "--device-type", "cpu"]) == 0
    written = [json.loads(t) for t in (out / "automations.jsonl").read_text().splitlines()]
    assert until_first_trajectory_change(written) == expected
    assert (out / "knobs.png").stat().st_size > 0


def test_replay_cli_rejects_a_missing_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    option = ROOT / "options/train/ParagonSR2/2x_ParagonSR2_Nano_fidelity_auto.yml"
    argv = ["--trace", str(tmp_path / "none.jsonl"), "-opt", str(option), "--out", str(tmp_path)]
    assert replay_cli.main(argv) == 2
    assert "--trace:" in capsys.readouterr().err
