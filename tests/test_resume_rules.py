"""What a resumed run does with an option file that changed, and where errors are recorded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import train
from tests.conftest import base_options, write_options
from traiNNer.training.trainer import Trainer
from traiNNer.utils.errors import UserError


def _options(tiny_dataset: Path, tmp_path: Path, **train_keys: Any) -> dict[str, Any]:
    data = base_options(tiny_dataset, tmp_path)
    data["train"].update(train_keys)
    data["logger"]["use_tb_logger"] = False
    data["logger"]["progress_bar"] = False
    return data


def _log_text(tmp_path: Path) -> str:
    logs = sorted((tmp_path / "experiments" / "unit_run").glob("train_unit_run_*.log"))
    return "\n".join(path.read_text(encoding="utf-8") for path in logs)


def test_a_changed_val_freq_applies_from_the_resumed_iteration(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = _options(tiny_dataset, tmp_path, total_iter=8)
    assert train.main(["-opt", str(write_options(tmp_path / "a.yml", data))]) == 0
    data["train"]["total_iter"] = 14
    data["val"]["val_freq"] = 3
    assert train.main(["-opt", str(write_options(tmp_path / "b.yml", data)), "--auto_resume"]) == 0
    validated = [
        int(i) for i in re.findall(r"Validation tiny_val at iter (\d+)", _log_text(tmp_path))
    ]
    # val_freq 4 up to the save at 8, then every 3 from there (not first at the saved 12).
    assert validated == [4, 8, 9, 12]


def test_resuming_past_total_iter_says_so(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = _options(tiny_dataset, tmp_path, total_iter=8)
    assert train.main(["-opt", str(write_options(tmp_path / "a.yml", data))]) == 0
    data["train"]["total_iter"] = 4
    assert train.main(["-opt", str(write_options(tmp_path / "b.yml", data)), "--auto_resume"]) == 0
    assert "saved at iteration 8: nothing left to train; raise train.total_iter" in _log_text(
        tmp_path
    )


def test_an_error_during_the_run_is_also_in_its_log_file(
    tiny_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)

    def failing_step(self: Trainer) -> None:
        raise UserError("datasets.train: the disk went away")

    monkeypatch.setattr(Trainer, "train_step", failing_step)
    data = _options(tiny_dataset, tmp_path, total_iter=4)
    assert train.main(["-opt", str(write_options(tmp_path / "a.yml", data))]) == 1
    line = "error: datasets.train: the disk went away"
    assert capsys.readouterr().err.strip() == line
    assert line in _log_text(tmp_path)
