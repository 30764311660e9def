"""End to end: train.py trains, saves, is killed, resumes identically; test.py runs the result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import base_options, write_options

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

pytestmark = pytest.mark.slow


def run_script(
    script: str, option_file: Path, cwd: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / script), "-opt", str(option_file), *extra],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=300,
    )


def options_for(tmp: Path, dataset: Path, **train: Any) -> dict[str, Any]:
    options = base_options(dataset, tmp)
    options["train"].update(train)
    return options


def weights(experiment: Path, label: str) -> dict[str, torch.Tensor]:
    return load_file(str(experiment / "models" / f"net_g_{label}.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_train_outputs_follow_the_traiNNer_layout(tmp_path: Path, tiny_dataset: Path) -> None:
    option_file = write_options(tmp_path / "run.yml", options_for(tmp_path, tiny_dataset))
    result = run_script("train.py", option_file, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tmp_path / "experiments" / "unit_run"
    for label in ("4", "8", "12", "latest", "best"):
        assert (experiment / "models" / f"net_g_{label}.safetensors").is_file(), label
    assert sorted(p.name for p in (experiment / "training_states").iterdir()) == [
        "12.state",
        "4.state",
        "8.state",
    ]
    assert (experiment / "run.yml").is_file()
    assert list(experiment.glob("train_unit_run_*.log"))
    assert list((tmp_path / "tb_logger" / "unit_run").glob("events.out.tfevents.*"))
    log = result.stdout + result.stderr
    assert "[epoch: 0, iter: 4," in log and "l_g_l1:" in log and "grad_norm_g:" in log
    assert "Validation tiny_val at iter 4" in log


def test_killed_run_resumes_with_identical_results(tmp_path: Path, tiny_dataset: Path) -> None:
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference_dir.mkdir()
    killed_dir.mkdir()
    reference = write_options(reference_dir / "run.yml", options_for(reference_dir, tiny_dataset))
    assert run_script("train.py", reference, reference_dir).returncode == 0

    option_file = write_options(killed_dir / "run.yml", options_for(killed_dir, tiny_dataset))
    states = killed_dir / "experiments" / "unit_run" / "training_states"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-opt", str(option_file)],
        cwd=killed_dir,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not (states / "4.state").exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Whatever the process reached, resume from iteration 4: later states are dropped.
    for state in states.glob("*.state"):
        if state.name != "4.state":
            state.unlink()
    result = run_script("train.py", option_file, killed_dir, "--auto_resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in result.stdout + result.stderr
    assert_same_weights(
        weights(reference_dir / "experiments" / "unit_run", "latest"),
        weights(killed_dir / "experiments" / "unit_run", "latest"),
    )


def test_test_py_runs_the_trained_model(tmp_path: Path, tiny_dataset: Path) -> None:
    option_file = write_options(
        tmp_path / "run.yml", options_for(tmp_path, tiny_dataset, total_iter=4)
    )
    assert run_script("train.py", option_file, tmp_path).returncode == 0
    weights_file = tmp_path / "experiments" / "unit_run" / "models" / "net_g_latest.safetensors"
    test_options = {
        "name": "unit_test",
        "scale": 2,
        "datasets": {
            "test_1": {
                "name": "tiny",
                "type": "pairedimagedataset",
                "dataroot_gt": str(tiny_dataset / "val" / "hr"),
                "dataroot_lq": str(tiny_dataset / "val" / "lr_x2"),
            }
        },
        "path": {
            "pretrain_network_g": str(weights_file),
            "results_root": str(tmp_path / "results"),
        },
        "val": {
            "save_img": True,
            "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": 2}},
        },
    }
    test_file = write_options(tmp_path / "test.yml", test_options)
    result = run_script("test.py", test_file, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = tmp_path / "results" / "unit_test"
    assert sorted(p.name for p in (results / "visualization" / "tiny").iterdir()) == [
        "img0.png",
        "img1.png",
    ]
    table = (results / "metrics.csv").read_text().splitlines()
    assert table[0] == "dataset,psnr" and table[1].startswith("tiny,")
    assert float(table[1].split(",")[1]) > 10


def test_spandrel_arch_checkpoint_opens_in_spandrel_and_test_py(
    tmp_path: Path, tiny_dataset: Path
) -> None:
    from spandrel import ModelLoader

    options = options_for(tmp_path, tiny_dataset, total_iter=4)
    options["network_g"] = {"type": "compact", "num_feat": 8, "num_conv": 2}
    assert (
        run_script("train.py", write_options(tmp_path / "run.yml", options), tmp_path).returncode
        == 0
    )
    weights_file = tmp_path / "experiments" / "unit_run" / "models" / "net_g_latest.safetensors"

    descriptor = ModelLoader().load_from_file(weights_file)
    assert descriptor.architecture.id == "Compact"
    assert descriptor.scale == 2

    # No network_g: test.py rebuilds the arch from the metadata saved with the weights.
    test_options = {
        "name": "compact_test",
        "datasets": {
            "test_1": {
                "name": "tiny",
                "type": "singleimagedataset",
                "dataroot_lq": str(tiny_dataset / "val" / "lr_x2"),
            }
        },
        "path": {
            "pretrain_network_g": str(weights_file),
            "results_root": str(tmp_path / "results"),
        },
        "val": {"save_img": True},
    }
    result = run_script("test.py", write_options(tmp_path / "test.yml", test_options), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = sorted((tmp_path / "results" / "compact_test" / "visualization" / "tiny").iterdir())
    assert [p.name for p in outputs] == ["img0.png", "img1.png"]
    from traiNNer.data.image_io import read_image

    assert read_image(outputs[0]).shape == (3, 32, 32)


def test_ctrl_c_saves_a_resumable_state_and_exits_cleanly(
    tmp_path: Path, tiny_dataset: Path
) -> None:
    options = options_for(tmp_path, tiny_dataset, total_iter=100000)
    options["logger"]["save_checkpoint_freq"] = 100000
    option_file = write_options(tmp_path / "run.yml", options)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-opt", str(option_file)],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:  # wait until training is under way
        if "iter: 4," in line:
            break
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert "Interrupted: saved a resumable state at iteration" in output
    assert "Traceback" not in output
    states = list((tmp_path / "experiments" / "unit_run" / "training_states").glob("*.state"))
    assert len(states) == 1
    saved = torch.load(states[0], weights_only=True)
    assert saved["iteration"] == int(states[0].stem) >= 4
