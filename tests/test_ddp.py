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


def torchrun(
    tmp_path: Path, options: dict[str, object], **env_extra: str
) -> subprocess.CompletedProcess[str]:
    options["dist_params"] = {"backend": "gloo"}
    option_file = write_options(tmp_path / "ddp.yml", options)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env_extra}
    return subprocess.run(
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
        timeout=300,  # a rank waiting on a collective the other never reaches hangs
    )


def test_torchrun_two_cpu_processes_train_with_automations(
    tmp_path: Path, tiny_dataset: Path
) -> None:
    options = base_options(tiny_dataset, tmp_path)
    options["train"]["total_iter"] = 16
    options["train"]["automations"] = ddp_automations()
    result = torchrun(tmp_path, options)
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


def test_an_oom_or_a_nan_on_one_rank_only_is_handled_by_every_rank(
    tmp_path: Path, tiny_dataset: Path
) -> None:
    options = base_options(tiny_dataset, tmp_path)
    options["train"]["total_iter"] = 12
    options["logger"]["signal_trace"] = True
    options["train"]["automations"] = {
        "batch_size": {"enabled": True, "search": False, "min_batch_size": 1},
    }
    faults = {"rank": 1, "oom_at": [5], "nan_at": [9]}
    result = torchrun(
        tmp_path,
        options,
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "ddp_faults"), str(ROOT)]),
        TRAINNER_TEST_FAULTS=json.dumps(faults),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "DDP ranks ended with different weights" not in output
    experiment = tmp_path / "experiments" / "unit_run"
    records = [
        json.loads(line) for line in (experiment / "automations.jsonl").read_text().splitlines()
    ]
    # Rank 1's OOM at iteration 5 was every rank's: one smaller micro-batch, decided once.
    oom = [r for r in records if r["automation"] == "batch_size" and r["parameter"] == "batch_size"]
    assert [r["iteration"] for r in oom] == [4], records
    # Rank 1's NaN at iteration 9: rank 0 skipped that step too (and the weights agree).
    steps = [json.loads(line) for line in (experiment / "signals.jsonl").read_text().splitlines()]
    skipped = [s["iteration"] for s in steps if s.get("finite") is False]
    assert skipped == [9]
