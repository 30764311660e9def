"""DDP on CPU: torchrun, gloo, 2 processes, automations on; every rank acts identically."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.automations_options import ddp_automations
from tests.conftest import base_options, write_options

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_cpu_processes_train_with_automations(
    tmp_path: Path, tiny_dataset: Path
) -> None:
    options = base_options(tiny_dataset, tmp_path)
    options["train"]["total_iter"] = 16
    options["train"]["automations"] = ddp_automations()
    options["dist_params"] = {"backend": "gloo"}
    option_file = write_options(tmp_path / "ddp.yml", options)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
            "--master_addr=127.0.0.1",
            str(ROOT / "train.py"),
            "-opt",
            str(option_file),
            "--launcher",
            "pytorch",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "DDP ranks ended with different weights" not in output
    experiment = tmp_path / "experiments" / "unit_run"
    assert (experiment / "models" / "net_g_latest.safetensors").is_file()
    records = [
        json.loads(line) for line in (experiment / "automations.jsonl").read_text().splitlines()
    ]
    assert {r["automation"] for r in records} >= {"lr_scheduling", "adaptive_gradient_clipping"}
    # Only rank 0 writes: each decision appears once.
    keys = [(r["iteration"], r["automation"], r["parameter"], r["old"], r["new"]) for r in records]
    assert len(keys) == len(set(keys))
