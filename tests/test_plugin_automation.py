"""An automation from a single file outside the package is configured, validated, saved,
resumed and logged with no other edit (tests/plugin_automation.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import tests.plugin_automation  # noqa: F401  (registers lr_nudge)
import train
from tests.conftest import base_options, write_options
from traiNNer.config.loader import load_options
from traiNNer.utils.errors import ConfigError

pytestmark = pytest.mark.slow


def options(tmp: Path, dataset: Path, **block: Any) -> dict[str, Any]:
    opts = base_options(dataset, tmp)
    opts["train"]["total_iter"] = 16
    opts["logger"]["save_checkpoint_freq"] = 8
    opts["train"]["automations"] = {"lr_nudge": {"enabled": True, "every": 2, **block}}
    return opts


def run(tmp: Path, opts: dict[str, Any], monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    monkeypatch.chdir(tmp)
    return train.main(["-opt", str(write_options(tmp / "run.yml", opts)), *extra])


def test_its_block_is_checked_like_a_builtin(tmp_path: Path, tiny_dataset: Path) -> None:
    cases = [
        ({"factr": 0.5}, r"train\.automations\.lr_nudge\.factr: unknown key; did you mean factor"),
        ({"factor": 2.0}, r"train\.automations\.lr_nudge\.factor"),
        ({"metric": "lpips"}, r"train\.automations\.lr_nudge\.metric: 'lpips' is not a val"),
        ({"every": 999}, r"train\.automations\.lr_nudge\.every: 999 is more than total_iter"),
    ]
    for block, message in cases:
        path = write_options(tmp_path / "bad.yml", options(tmp_path, tiny_dataset, **block))
        with pytest.raises(ConfigError, match=message):
            load_options(path)


def test_it_decides_logs_and_resumes_like_a_builtin(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for folder in (straight, resumed):
        folder.mkdir()
        assert run(folder, options(folder, tiny_dataset, factor=0.5), monkeypatch) == 0
    experiment = resumed / "experiments" / "unit_run"
    for state in (experiment / "training_states").glob("*.state"):
        if state.name != "8.state":
            state.unlink()
    log = experiment / "automations.jsonl"
    kept = [line for line in log.read_text().splitlines() if json.loads(line)["iteration"] <= 8]
    log.write_text("".join(f"{line}\n" for line in kept))
    assert (
        run(resumed, options(resumed, tiny_dataset, factor=0.5), monkeypatch, "--auto_resume") == 0
    )

    records = [
        json.loads(line)
        for line in (straight / "experiments/unit_run/automations.jsonl").read_text().splitlines()
    ]
    nudges = [r for r in records if r["automation"] == "lr_nudge"]
    assert nudges and all(r["parameter"] == "lr_multiplier" for r in nudges)
    assert [r for r in map(json.loads, log.read_text().splitlines())] == records

    state = torch.load(experiment / "training_states" / "16.state", weights_only=True)
    saved = state["automations"]["automations"]["lr_nudge"]
    assert saved["intervals_seen"] == 8  # counted across the resume: 16 / every 2
    assert state["automations"]["knobs"]["lr_multiplier"]["automation"] == "lr_nudge"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for event_file in (straight / "tb_logger" / "unit_run").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"automations/lr_nudge/lr_multiplier", "automations/lr_nudge/intervals_seen"} <= tags

    a = load_file(str(straight / "experiments/unit_run/models/net_g_latest.safetensors"))
    b = load_file(str(experiment / "models" / "net_g_latest.safetensors"))
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_switched_off_before_resuming_its_knob_returns_to_the_option_file(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = options(tmp_path, tiny_dataset, factor=0.5)
    opts["logger"]["save_checkpoint_freq"] = 2
    opts["logger"]["keep_last_states"] = 0
    assert run(tmp_path, opts, monkeypatch) == 0
    experiment = tmp_path / "experiments" / "unit_run"
    states = sorted((experiment / "training_states").glob("*.state"), key=lambda p: int(p.stem))
    # The first state in which the automation had lowered the LR, before the end.
    nudged = next(
        path
        for path in states[:-1]
        if "lr_multiplier" in torch.load(path, weights_only=True)["automations"]["knobs"]
    )
    for state in states:
        if state != nudged:
            state.unlink()
    opts["train"]["automations"]["lr_nudge"]["enabled"] = False
    assert run(tmp_path, opts, monkeypatch, "--auto_resume") == 0
    final = torch.load(experiment / "training_states" / "16.state", weights_only=True)
    assert "lr_multiplier" not in final["automations"]["knobs"]
    logs = "".join(path.read_text() for path in experiment.glob("train_*.log"))
    assert "[lr_nudge] is not enabled in this run: lr_multiplier returns to the option file" in logs
    # The LR printed at the end is the schedule's own: 1e-3 x MultiStepLR's 0.5 after 8.
    assert "iter: 16, lr:(5.000e-04)" in logs.split("Resumed from")[1]
