"""Signals never cost a run.

SIGTERM and SIGINT save a resumable state at the iteration boundary and exit with 128 + the
signal number; a second signal exits at once, leaving no partial file; a signal during
validation abandons it and the resumed run redoes it; SIGKILL at any point, mid-write
included, resumes with `--auto_resume` to weights bit-identical to an uninterrupted run.

The runs are real processes. Those whose exit path is under test run `train.py`; the others
are forked from a "zygote" process that imported torch and train.py once, since importing
takes most of a tiny run's time and the SIGKILL trials need two dozen runs. A sitecustomize
written next to the runs hooks them through TRAINNER_TEST_HOOKS: it notes steps and writes
in a marker file, pauses at a chosen point until a signal arrives, and holds a chosen write
half-written until the process is killed. Every wait has a generous deadline that only
turns a hang into a failure.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import base_options, write_options
from traiNNer.utils.atomic import (
    TEMP_NAME,
    discard_pending_writes,
    remove_stale_temp_files,
    write_atomic,
)

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 180  # only a hang gets near it
LABELS = ("4", "8", "12", "best", "latest")

# Forking a process that imported torch, and the signals themselves, are POSIX.
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork and POSIX signals")

HOOKS = '''"""Hooks for tests/test_signals.py; inert unless TRAINNER_TEST_HOOKS is set."""
import json
import os
import time


def _config():
    return json.loads(os.environ.get("TRAINNER_TEST_HOOKS") or "{}")


def _note(event):
    marker = _config().get("marker")
    if marker:
        with open(marker, "a", encoding="utf-8") as handle:
            handle.write(event + "\\n")


if "TRAINNER_TEST_HOOKS" in os.environ:
    import traiNNer.utils.checkpoint as checkpoint
    from traiNNer.models.sr_model import SRModel
    from traiNNer.training.interrupt import GracefulInterrupt
    from traiNNer.training.trainer import Trainer

    _run = {"interrupt": None, "val_iter": None, "writes": 0}

    def _signalled():
        return _run["interrupt"] is not None and _run["interrupt"].received != 0

    def _wait_for_signal():
        deadline = time.monotonic() + 120
        while not _signalled() and time.monotonic() < deadline:
            time.sleep(0.005)

    enter = GracefulInterrupt.__enter__

    def _enter(self):
        _run["interrupt"] = self
        return enter(self)

    train_step = Trainer.train_step

    def _train_step(self):
        train_step(self)
        _note(f"step {self.iteration}")
        if _config().get("pause_after_step") == self.iteration:
            _note("paused")
            _wait_for_signal()

    validate = Trainer.validate

    def _validate(self, loaders):
        _run["val_iter"] = self.iteration
        try:
            validate(self, loaders)
        finally:
            _run["val_iter"] = None

    infer = SRModel.infer

    def _infer(self, *args, **kwargs):
        if _run["val_iter"] is not None and _config().get("pause_in_validation") == _run["val_iter"]:
            _note("paused in validation")
            _wait_for_signal()
        return infer(self, *args, **kwargs)

    write_atomic = checkpoint.write_atomic

    def _write_atomic(path, write):
        _run["writes"] += 1
        config = _config()
        hold = config.get("hold_write") == _run["writes"] or (
            config.get("hold_writes_after_signal") and _signalled()
        )
        name = os.path.basename(str(path))
        _note(f"write {name}")

        def held(tmp):
            write(tmp)
            if hold:  # half the bytes, as a kill mid-write leaves them, until killed
                with open(tmp, "rb") as handle:
                    data = handle.read()
                with open(tmp, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                _note(f"holding {name}")
                time.sleep(120)
                with open(tmp, "wb") as handle:
                    handle.write(data)

        write_atomic(path, held)

    GracefulInterrupt.__enter__ = _enter
    Trainer.train_step = _train_step
    Trainer.validate = _validate
    SRModel.infer = _infer
    checkpoint.write_atomic = _write_atomic
'''

ZYGOTE = """
import json, os, sys, traceback
import torch.utils.tensorboard  # a run imports it lazily: once here
import train
print("ready", flush=True)
started, finished = [], {}
for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "run":
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                if request["session"]:
                    os.setsid()  # its own process group, as under a scheduler
                out = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                os.chdir(request["cwd"])
                os.environ["TRAINNER_TEST_HOOKS"] = json.dumps(request["hooks"])
                code = train.main(request["argv"])
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        started.append(pid)
        print(pid, flush=True)
    else:
        pid = request["pid"]
        if pid not in finished:
            done, status = os.waitpid(pid, 0 if request["op"] == "wait" else os.WNOHANG)
            if done:
                finished[pid] = os.waitstatus_to_exitcode(status)
        print(json.dumps(finished.get(pid)), flush=True)
for pid in started:  # runs a failed test left behind
    if pid not in finished:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
"""


# --------------------------------------------------------------------------- helpers
def run_env(hooks_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "400",  # rich wraps log lines at the console width
        "PYTHONPATH": os.pathsep.join([str(hooks_dir), str(ROOT)]),
        "TRAINNER_TEST_HOOKS": "{}",
    }


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


def events(marker: Path) -> list[str]:
    return marker.read_text(encoding="utf-8").splitlines() if marker.exists() else []


class Zygote:
    """Forks `train.main` runs from one process that has imported everything."""

    def __init__(self, hooks_dir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE],
            cwd=ROOT,
            env=run_env(hooks_dir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = False

    def _ask(self, request: dict[str, Any]) -> str:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        if not self.ready:
            assert stdout.readline().strip() == "ready", "the zygote failed to start"
            self.ready = True
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        return stdout.readline().strip()

    def start(
        self, run_dir: Path, hooks: dict[str, Any], *extra: str, session: bool = False
    ) -> int:
        argv = ["-opt", str(run_dir / "run.yml"), *extra]
        output = run_dir / f"output{len(list(run_dir.glob('output*.txt')))}.txt"
        request = {"op": "run", "argv": argv, "cwd": str(run_dir), "hooks": hooks}
        return int(self._ask({**request, "output": str(output), "session": session}))

    def poll(self, pid: int) -> int | None:
        return json.loads(self._ask({"op": "poll", "pid": pid}))

    def wait(self, pid: int) -> int:
        return json.loads(self._ask({"op": "wait", "pid": pid}))

    def run(self, run_dir: Path, *extra: str) -> tuple[int, str]:
        """A run to its end: exit code and output."""
        pid = self.start(run_dir, {"marker": str(run_dir / "events.txt")}, *extra)
        code = self.wait(pid)
        return code, sorted(run_dir.glob("output*.txt"))[-1].read_text(encoding="utf-8")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=WAIT_S)


@dataclass
class Reference:
    experiment: Path
    writes: list[str]  # the files an uninterrupted run writes, in order


def new_run(root: Path, dataset: Path, **train_set: Any) -> Path:
    root.mkdir(parents=True)
    options = base_options(dataset, root)
    options["datasets"]["train"].update(train_set)
    write_options(root / "run.yml", options)
    return root


def experiment(run_dir: Path) -> Path:
    return run_dir / "experiments" / "unit_run"


def weights(folder: Path, label: str) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "models" / f"net_g_{label}.safetensors"))


def assert_same_weights(run_dir: Path, reference: Reference, labels: tuple[str, ...]) -> None:
    for label in labels:
        ours, theirs = weights(experiment(run_dir), label), weights(reference.experiment, label)
        assert ours.keys() == theirs.keys(), label
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), f"net_g_{label}: {key}"


def assert_nothing_corrupt(run_dir: Path) -> None:
    """Every final-named weights file and state loads; no temp file is left anywhere."""
    for path in sorted((run_dir / "experiments").rglob("*")):
        assert not TEMP_NAME.match(path.name), f"stale temp file {path}"
        if path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".state":
            assert torch.load(path, weights_only=True)["iteration"] == int(path.stem)


def same(a: object, b: object) -> bool:
    """Equal containers of equal values, tensors compared bit for bit."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def validations(output: str) -> list[int]:
    return [int(i) for i in re.findall(r"Validation tiny_val at iter (\d+):", output)]


@contextmanager
def train_py(
    run_dir: Path, hooks_dir: Path, hooks: dict[str, Any]
) -> Iterator[subprocess.Popen[str]]:
    """`train.py` itself, killed if the test fails before it ends."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-opt", str(run_dir / "run.yml")],
        cwd=run_dir,
        env={**run_env(hooks_dir), "TRAINNER_TEST_HOOKS": json.dumps(hooks)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def communicate(process: subprocess.Popen[str]) -> tuple[str, str]:
    out, err = process.communicate(timeout=WAIT_S)
    return out, err


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def hooks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("signal_hooks")
    (folder / "sitecustomize.py").write_text(HOOKS, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def zygote(hooks_dir: Path) -> Iterator[Zygote]:
    zygote = Zygote(hooks_dir)  # imports while the reference run trains
    yield zygote
    zygote.close()


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path, hooks_dir: Path, zygote: Zygote
) -> Reference:
    """One uninterrupted run of train.py itself, which every interrupted run must match."""
    del zygote
    run_dir = new_run(tmp_path_factory.mktemp("signals") / "reference", tiny_dataset)
    marker = run_dir / "events.txt"
    with train_py(run_dir, hooks_dir, {"marker": str(marker)}) as process:
        out, err = communicate(process)
    assert process.returncode == 0, err[-3000:]
    assert validations(out) == [4, 8, 12]
    writes = [e.removeprefix("write ") for e in events(marker) if e.startswith("write ")]
    assert writes[-1] == "net_g_latest.safetensors" and "12.state" in writes
    return Reference(experiment(run_dir), writes)


# ------------------------------------------------------------------ atomic writes, in-process
def test_a_failed_write_leaves_neither_the_final_name_nor_a_temp_file(tmp_path: Path) -> None:
    def fail(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "1.state", fail)
    assert list(tmp_path.iterdir()) == []


def test_an_exit_mid_write_deletes_the_temp_file(tmp_path: Path) -> None:
    seen: list[Path] = []

    def exit_now(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        seen.append(Path(tmp))
        discard_pending_writes()  # what the second signal's handler does before os._exit
        assert not Path(tmp).exists()
        raise SystemExit

    with pytest.raises(SystemExit):
        write_atomic(tmp_path / "net_g_4.safetensors", exit_now)
    assert TEMP_NAME.match(seen[0].name) and list(tmp_path.iterdir()) == []


def test_only_this_projects_temp_names_are_removed(tmp_path: Path) -> None:
    models, states = tmp_path / "models", tmp_path / "training_states"
    models.mkdir()
    states.mkdir()
    stale = [models / ".net_g_8.safetensors.1a2b3c4d.tmp", states / ".8.state.k_9x0qzz.tmp"]
    kept = [
        models / "net_g_4.safetensors",
        models / "notes.tmp",
        models / ".net_g_8.safetensors.tmp",
        states / ".8.state.toolong123.tmp",
        states / "4.state",
    ]
    for path in stale + kept:
        path.write_bytes(b"x")
    write_atomic(states / "12.state", lambda tmp: Path(tmp).write_text("state"))
    assert remove_stale_temp_files([models, states, tmp_path / "missing"]) == 2
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        [*kept, states / "12.state"]
    )


# --------------------------------------------------------------------------- runs
@pytest.mark.slow
def test_sigterm_saves_at_the_boundary_and_auto_resume_matches(
    tmp_path: Path, tiny_dataset: Path, hooks_dir: Path, reference: Reference, zygote: Zygote
) -> None:
    run_dir = new_run(tmp_path / "run", tiny_dataset)
    marker = run_dir / "events.txt"
    with train_py(run_dir, hooks_dir, {"marker": str(marker), "pause_after_step": 6}) as process:
        wait_until(lambda: "paused" in events(marker), "iteration 6")
        process.send_signal(signal.SIGTERM)
        out, err = communicate(process)

    assert process.returncode == 143, err[-3000:]
    state = experiment(run_dir) / "training_states" / "6.state"
    lines = [line for line in (out + err).splitlines() if "SIGTERM" in line]
    assert len(lines) == 1, out + err
    assert f"Interrupted: saved a resumable state at iteration 6 (SIGTERM): {state}" in lines[0]
    assert "Traceback" not in err
    assert torch.load(state, weights_only=True)["iteration"] == 6
    assert (experiment(run_dir) / "models" / "net_g_6.safetensors").is_file()
    assert_nothing_corrupt(run_dir)

    code, output = zygote.run(run_dir, "--auto_resume")
    assert code == 0, output[-3000:]
    assert f"Resumed from {state} at iteration 6" in output
    assert validations(out) + validations(output) == [4, 8, 12]
    assert_same_weights(run_dir, reference, LABELS)
    assert_nothing_corrupt(run_dir)


@pytest.mark.slow
def test_second_sigint_exits_at_once_mid_write(
    tmp_path: Path, tiny_dataset: Path, hooks_dir: Path, reference: Reference, zygote: Zygote
) -> None:
    run_dir = new_run(tmp_path / "run", tiny_dataset)
    marker = run_dir / "events.txt"
    hooks = {"marker": str(marker), "pause_after_step": 6, "hold_writes_after_signal": True}
    with train_py(run_dir, hooks_dir, hooks) as process:
        wait_until(lambda: "paused" in events(marker), "iteration 6")
        process.send_signal(signal.SIGINT)  # the save it starts holds its first write ...
        wait_until(lambda: "holding net_g_6.safetensors" in events(marker), "the save at 6")
        process.send_signal(signal.SIGINT)  # ... which the second Ctrl+C cuts short
        out, err = communicate(process)

    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in out + err
    last = experiment(run_dir) / "training_states" / "4.state"
    assert f"second SIGINT: exiting now; the last saved state is {last}" in out + err
    # The half-written weights never got their final name, and their temp file is gone.
    assert not (experiment(run_dir) / "models" / "net_g_6.safetensors").exists()
    assert not (experiment(run_dir) / "training_states" / "6.state").exists()
    assert_nothing_corrupt(run_dir)

    code, output = zygote.run(run_dir, "--auto_resume")
    assert code == 0, output[-3000:]
    assert f"Resumed from {last} at iteration 4" in output
    assert_same_weights(run_dir, reference, LABELS)
    assert_nothing_corrupt(run_dir)


@pytest.mark.slow
def test_sigterm_during_validation_saves_once_and_the_resume_redoes_it(
    tmp_path: Path, tiny_dataset: Path, reference: Reference, zygote: Zygote
) -> None:
    run_dir = new_run(tmp_path / "run", tiny_dataset)
    marker = run_dir / "events.txt"
    pid = zygote.start(run_dir, {"marker": str(marker), "pause_in_validation": 8})
    wait_until(lambda: "paused in validation" in events(marker), "the validation at 8")
    os.kill(pid, signal.SIGTERM)
    assert zygote.wait(pid) == 143
    out = (run_dir / "output0.txt").read_text(encoding="utf-8")
    assert "Interrupted: saved a resumable state at iteration 8 (SIGTERM during validation" in out
    assert validations(out) == [4]  # the one at 8 was abandoned
    states = experiment(run_dir) / "training_states"
    assert sorted(p.name for p in states.iterdir()) == ["4.state", "8.state"]
    saved = torch.load(states / "8.state", weights_only=True)
    assert (saved["iteration"], saved["next_val_iter"]) == (8, 8)  # validation still due
    assert events(marker).count("write 8.state") == 1  # saved once

    code, output = zygote.run(run_dir, "--auto_resume")
    assert code == 0, output[-3000:]
    assert validations(out) + validations(output) == [4, 8, 12]
    assert_same_weights(run_dir, reference, LABELS)
    final = torch.load(states / "12.state", weights_only=True)
    expected = torch.load(reference.experiment / "training_states" / "12.state", weights_only=True)
    assert final["next_val_iter"] == expected["next_val_iter"]
    assert same(final["best_metrics"], expected["best_metrics"])
    assert_nothing_corrupt(run_dir)


@pytest.mark.slow
def test_sighup_stops_like_sigterm(tmp_path: Path, tiny_dataset: Path, zygote: Zygote) -> None:
    run_dir = new_run(tmp_path / "run", tiny_dataset)
    marker = run_dir / "events.txt"
    pid = zygote.start(run_dir, {"marker": str(marker), "pause_after_step": 3})
    wait_until(lambda: "paused" in events(marker), "iteration 3")
    os.kill(pid, signal.SIGHUP)
    assert zygote.wait(pid) == 129
    state = experiment(run_dir) / "training_states" / "3.state"
    out = (run_dir / "output0.txt").read_text(encoding="utf-8")
    assert f"Interrupted: saved a resumable state at iteration 3 (SIGHUP): {state}" in out
    assert torch.load(state, weights_only=True)["iteration"] == 3


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_spares_the_loader_workers(
    tmp_path: Path, tiny_dataset: Path, zygote: Zygote
) -> None:
    """`timeout`, Slurm and systemd signal every process, DataLoader workers included."""
    run_dir = new_run(tmp_path / "run", tiny_dataset, num_worker_per_gpu=2)
    marker = run_dir / "events.txt"
    pid = zygote.start(run_dir, {"marker": str(marker), "pause_after_step": 6}, session=True)
    wait_until(lambda: "paused" in events(marker), "iteration 6")
    os.killpg(pid, signal.SIGTERM)
    assert zygote.wait(pid) == 143
    out = (run_dir / "output0.txt").read_text(encoding="utf-8")
    assert "Interrupted: saved a resumable state at iteration 6 (SIGTERM)" in out
    assert "Traceback" not in out and "DataLoader worker" not in out, out
    assert torch.load(experiment(run_dir) / "training_states" / "6.state", weights_only=True)


TRIALS = 12


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_anywhere_then_auto_resume_is_bit_identical(
    trial: int, tmp_path: Path, tiny_dataset: Path, reference: Reference, zygote: Zygote
) -> None:
    rng = random.Random(trial)
    run_dir = new_run(tmp_path / "run", tiny_dataset)
    marker = run_dir / "events.txt"
    held = None
    if trial % 2:  # killed while a write holds its temp file half-written
        number = rng.randrange(1, len(reference.writes) + 1)
        held = reference.writes[number - 1]
        pid = zygote.start(run_dir, {"marker": str(marker), "hold_write": number})
        wait_until(lambda: f"holding {held}" in events(marker), f"write {number} ({held})")
    else:  # killed a random time after a random step
        step, delay = rng.randint(1, 12), rng.uniform(0.0, 0.1)
        pid = zygote.start(run_dir, {"marker": str(marker)})
        wait_until(
            lambda: f"step {step}" in events(marker) or zygote.poll(pid) is not None,
            f"step {step}",
        )
        time.sleep(delay)
    if zygote.poll(pid) is None:  # (unreaped until then: the pid cannot be reused)
        os.kill(pid, signal.SIGKILL)
    assert zygote.wait(pid) in (-signal.SIGKILL, 0)  # 0: it finished before the kill

    left = [p for p in (run_dir / "experiments").rglob("*") if TEMP_NAME.match(p.name)]
    for path in (run_dir / "experiments").rglob("*"):  # final names hold complete files only
        if path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".state":
            torch.load(path, weights_only=True)
    if held is not None:
        assert len(left) == 1 and left[0].name.startswith(f".{held}."), left
        if reference.writes.count(held) == 1:  # not net_g_best, which earlier writes made
            assert not list((run_dir / "experiments").rglob(held))

    code, output = zygote.run(run_dir, "--auto_resume")
    assert code == 0, output[-3000:]
    if left:
        assert f"Removed {len(left)} temporary file(s) that an interrupted write left" in output
    assert_same_weights(run_dir, reference, LABELS)
    assert_nothing_corrupt(run_dir)
