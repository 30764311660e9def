"""Checkpoint loading mistakes (path.pretrain_network_g, path.resume_state, --auto_resume)
end in one stderr line naming the option, the file and what differs, with exit code 2
and nothing written; strict_load_g: false and a changed optimizer type carry on with a
warning."""

from __future__ import annotations

import logging
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import train
from tests.conftest import base_options, write_options
from tests.test_option_files import _load_test_script
from traiNNer.models.sr_model import build_network
from traiNNer.utils.checkpoint import REFUSED, network_metadata, save_network

NAME = "unit_run"
test_script = _load_test_script()
ARCH = {"type": "compact", "num_feat": 8, "num_conv": 2}


class RunsCode:
    """Unpickled without weights_only, this would create `marker` (any code could run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def options(tiny_dataset: Path, root: Path, **path: Any) -> dict[str, Any]:
    data = base_options(tiny_dataset, root)
    data["network_g"] = dict(ARCH)
    data["train"]["total_iter"] = 4
    data["logger"].update(use_tb_logger=False, progress_bar=False)
    data["path"].update(path)
    return data


def run(
    root: Path, data: dict[str, Any], capsys: pytest.CaptureFixture[str], *flags: str
) -> tuple[int, list[str], str]:
    """train.main in `root`: (exit code, stderr lines, stdout with the wrapping undone)."""
    capsys.readouterr()
    code = train.main(["-opt", str(write_options(root / "run.yml", data)), *flags])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), " ".join(captured.out.split())


def network_state(**kwargs: Any) -> dict[str, torch.Tensor]:
    arch = {**ARCH, **kwargs}
    return build_network(arch.pop("type"), 2, arch).state_dict()


class Warnings(logging.Handler):
    """The warnings the model logs (the console wraps long lines; these do not)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    handler = Warnings()
    models = logging.getLogger("traiNNer.models")
    models.addHandler(handler)
    yield handler.messages
    models.removeHandler(handler)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-iteration run: experiments/unit_run with net_g_4 and 4.state."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        data = options(tiny_dataset, root)
        assert train.main(["-opt", str(write_options(root / "run.yml", data))]) == 0
    return root / "experiments" / NAME


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_refused_before_writing(
    code: int, lines: list[str], root: Path, *needles: str, before: set[Path] | None = None
) -> str:
    """Exit 2, exactly one stderr line holding every needle, and nothing written."""
    assert code == 2, lines
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    assert "Traceback" not in line and "weights_only" not in line
    if before is None:
        assert not (root / "experiments").exists() and not (root / "tb_logger").exists()
    else:  # the option file is the only file written, before train.main runs
        assert files_under(root) - {root / "run.yml"} == before - {root / "run.yml"}
    return line


# --------------------------------------------------------------------- pretrain
def test_wrong_shapes_with_strict_true_name_the_first_and_count_the_rest(
    tiny_dataset: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = save_network(
        network_state(num_feat=16),
        workdir / "wide",
        network_metadata("compact", 2, {"num_feat": 16, "num_conv": 2}),
    )
    data = options(tiny_dataset, workdir, pretrain_network_g=str(weights))
    line = assert_refused_before_writing(
        *run(workdir, data, capsys)[:2],
        workdir,
        f"path.pretrain_network_g: {weights} does not fit compact x2 (saved by "
        "compact(num_conv=2, num_feat=16) x2): ",
        "body.0.weight is [16, 3, 3, 3] in the file, [8, 3, 3, 3] here; ",
        "body.0.bias is [16] in the file, [8] here (and 8 more); ",
        "is it another architecture, scale or size?",
    )
    assert "strict_load_g: false" not in line  # nothing would fit


def test_wrong_shapes_with_strict_false_are_skipped_with_one_warning(
    tiny_dataset: Path,
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    warnings: list[str],
) -> None:
    deeper = network_state(num_conv=3)  # body.6 is another conv there, body.7-8 extra
    weights = workdir / "deeper.pth"
    torch.save(deeper, weights)
    data = options(tiny_dataset, workdir, pretrain_network_g=str(weights), strict_load_g=False)
    code, lines, _ = run(workdir, data, capsys)
    assert code == 0, lines
    assert warnings == [
        f"path.pretrain_network_g: {weights}: path.strict_load_g is false: loaded 9 of the 11 "
        "tensors of compact x2; skipped 2 of another shape (body.6.weight is [8, 8, 3, 3] in "
        "the file, [12, 8, 3, 3] here; body.6.bias is [8] in the file, [12] here); ignored 3 "
        "compact x2 does not have (body.7.weight, body.8.weight, body.8.bias)"
    ]
    # What fits is loaded (checked on a model built the same way), the rest is initial.
    from traiNNer.config.loader import load_options
    from traiNNer.models.sr_model import SRModel
    from traiNNer.training.knobs import Knobs
    from traiNNer.utils.dist import DistInfo

    opt = load_options(str(workdir / "run.yml"), for_training=True)
    loaded = SRModel(opt, torch.device("cpu"), Knobs.from_options(opt), DistInfo()).net_g
    assert torch.equal(loaded.state_dict()["body.4.weight"], deeper["body.4.weight"])
    assert loaded.state_dict()["body.6.weight"].shape == (12, 8, 3, 3)


def test_strict_false_with_nothing_that_fits_is_refused(
    tiny_dataset: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = workdir / "other.pth"
    torch.save({"head.weight": torch.zeros(3)}, weights)
    data = options(tiny_dataset, workdir, pretrain_network_g=str(weights), strict_load_g=False)
    assert_refused_before_writing(
        *run(workdir, data, capsys)[:2],
        workdir,
        f"path.pretrain_network_g: {weights} does not fit compact x2: none of its tensors fit",
        "the file lacks 11 of its 11 (body.0.weight, body.0.bias, body.1.weight and 8 more)",
    )


def test_missing_keys_with_strict_true(
    tiny_dataset: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = network_state()
    del state["body.6.weight"], state["body.6.bias"]
    weights = workdir / "short.pth"
    torch.save({"params": state}, weights)
    data = options(tiny_dataset, workdir, pretrain_network_g=str(weights))
    assert_refused_before_writing(
        *run(workdir, data, capsys)[:2],
        workdir,
        f"path.pretrain_network_g: {weights} does not fit compact x2: the file lacks 2 of its "
        "11 (body.6.weight, body.6.bias); is it another architecture, scale or size? "
        "(path.strict_load_g: false loads the 9 that fit)",
    )


def test_extra_keys_with_strict_true(
    tiny_dataset: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = {f"module.{k}": v for k, v in network_state().items()}  # a DDP-wrapped save
    state["module.tail.weight"] = torch.zeros(4)
    weights = save_network(state, workdir / "extra", {})
    data = options(tiny_dataset, workdir, pretrain_network_g=str(weights))
    assert_refused_before_writing(
        *run(workdir, data, capsys)[:2],
        workdir,
        f"path.pretrain_network_g: {weights} does not fit compact x2: the file has 1 it does "
        "not (tail.weight)",
    )


def test_a_param_key_g_not_in_the_file_names_the_keys_there(
    tiny_dataset: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = save_network(network_state(), workdir / "net", {"arch": "compact"}, fmt="pth")
    data = options(tiny_dataset, workdir, pretrain_network_g=str(weights), param_key_g="parms")
    assert_refused_before_writing(
        *run(workdir, data, capsys)[:2],
        workdir,
        f"path.param_key_g: 'parms' is not in {weights}; it holds params, metadata; "
        "did you mean params?",
    )
    # The right key loads.
    data["path"]["param_key_g"] = "params"
    data["train"]["total_iter"] = 1
    assert run(workdir, data, capsys)[0] == 0


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("notes.pth", b"these are my notes\n", "is not a weights file: it is a text file"),
        ("empty.safetensors", b"", "is not a weights file: it is an empty file"),
        ("cut.safetensors", None, "is truncated or damaged (safetensors: "),
        ("cut.pth", None, "is truncated or damaged (the end of its zip archive is missing)"),
    ],
)
def test_files_that_are_not_complete_weights(
    name: str,
    content: bytes | None,
    needle: str,
    tiny_dataset: Path,
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    weights = workdir / name
    if content is None:  # the first half of a real file
        whole = save_network(network_state(), workdir / "whole", {}, fmt=weights.suffix[1:])
        data_bytes = whole.read_bytes()
        whole.unlink()
        content = data_bytes[: len(data_bytes) // 2]
    weights.write_bytes(content)
    data = options(tiny_dataset, workdir, pretrain_network_g=str(weights))
    assert_refused_before_writing(
        *run(workdir, data, capsys)[:2], workdir, f"path.pretrain_network_g: {weights} {needle}"
    )


def test_a_training_state_given_as_weights(
    trained: Path, tiny_dataset: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = trained / "training_states" / "4.state"
    data = options(tiny_dataset, workdir, pretrain_network_g=str(state))
    assert_refused_before_writing(
        *run(workdir, data, capsys)[:2],
        workdir,
        f"path.pretrain_network_g: {state} is a training state (iteration 4), not weights: "
        "resume it with path.resume_state, or start from the weights saved with it "
        f"({trained / 'models' / 'net_g_4.safetensors'})",
    )


def test_a_missing_weights_file(
    tiny_dataset: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = options(tiny_dataset, workdir, pretrain_network_g=str(workdir / "nowhere.pth"))
    assert_refused_before_writing(
        *run(workdir, data, capsys)[:2],
        workdir,
        f"path.pretrain_network_g: {workdir / 'nowhere.pth'} does not exist",
    )


def test_test_py_refuses_weights_of_another_size_in_one_line(
    tiny_dataset: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = save_network(network_state(num_feat=16), workdir / "wide", {})
    data = {
        "name": "unit_test",
        "scale": 2,
        "network_g": dict(ARCH),
        "datasets": {
            "test_1": {
                "type": "singleimagedataset",
                "dataroot_lq": str(tiny_dataset / "val" / "lr_x2"),
            }
        },
        "path": {"pretrain_network_g": str(weights), "results_root": str(workdir / "results")},
    }
    capsys.readouterr()
    code = test_script.main(["-opt", str(write_options(workdir / "test.yml", data))])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: path.pretrain_network_g: {weights} does not fit compact")
    assert not (workdir / "results").exists()


# ---------------------------------------------------------------------- unsafe
@pytest.mark.parametrize("role", ["pretrain", "plain pickle", "resume", "test.py"])
def test_a_pickle_that_would_run_code_is_refused_in_one_line(
    role: str, tiny_dataset: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = workdir / "code_ran"
    payload = RunsCode(marker)
    if role == "resume":
        path = workdir / "8.state"
        torch.save({"iteration": 8, "seed": 1, "model": {"net_g": payload}}, path)
        data = options(tiny_dataset, workdir, resume_state=str(path))
        key = "path.resume_state"
    else:
        path = workdir / "net.pth"
        if role == "plain pickle":  # not torch.save's zip: torch's loader also warns
            with open(path, "wb") as handle:
                pickle.dump({"params": network_state(), "extra": payload}, handle, protocol=4)
        else:
            torch.save({"params": network_state(), "extra": payload}, path)
        data = options(tiny_dataset, workdir, pretrain_network_g=str(path))
        key = "path.pretrain_network_g"
    if role == "test.py":  # no network_g: test.py reads the metadata first
        data = {
            "name": "unit_test",
            "datasets": {
                "test_1": {
                    "type": "singleimagedataset",
                    "dataroot_lq": str(tiny_dataset / "val" / "lr_x2"),
                }
            },
            "path": {"pretrain_network_g": str(path)},
        }
        capsys.readouterr()
        code = test_script.main(["-opt", str(write_options(workdir / "run.yml", data))])
        lines = capsys.readouterr().err.strip().splitlines()
    else:
        code, lines, _ = run(workdir, data, capsys)
    assert_refused_before_writing(code, lines, workdir, f"error: {key}: {path}: {REFUSED}")
    assert not marker.exists()


# ---------------------------------------------------------------------- resume
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_weights_given_as_resume_state(
    fmt: str, tiny_dataset: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = save_network(network_state(), workdir / "net", {}, fmt=fmt)
    data = options(tiny_dataset, workdir, resume_state=str(weights))
    what = "a safetensors weights file" if fmt == "safetensors" else "a weights file, not"
    assert_refused_before_writing(
        *run(workdir, data, capsys)[:2],
        workdir,
        f"path.resume_state: {weights} is {what}",
        "path.resume_state takes a training_states/<iteration>.state file",
    )


def test_a_truncated_state_as_resume_state_and_with_auto_resume(
    trained: Path, tiny_dataset: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = workdir / "experiments" / NAME
    shutil.copytree(trained, experiment)
    state = experiment / "training_states" / "4.state"
    state.write_bytes(state.read_bytes()[:1000])
    before = files_under(workdir)
    data = options(tiny_dataset, workdir, resume_state=str(state))
    assert_refused_before_writing(
        *run(workdir, data, capsys)[:2],
        workdir,
        f"path.resume_state: {state} is truncated or damaged (",
        before=before,
    )
    data = options(tiny_dataset, workdir)
    before = files_under(workdir)
    assert_refused_before_writing(
        *run(workdir, data, capsys, "--auto_resume")[:2],
        workdir,
        f"--auto_resume: {state} is truncated or damaged (",
        "; delete it to resume from the state before it",
        before=before,
    )


def test_a_state_of_another_network_or_scale_is_refused_before_writing(
    trained: Path, tiny_dataset: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = trained / "training_states" / "4.state"
    data = options(tiny_dataset, workdir, resume_state=str(state))
    data["network_g"]["num_feat"] = 16
    data["train"]["total_iter"] = 8
    assert_refused_before_writing(
        *run(workdir, data, capsys)[:2],
        workdir,
        f"path.resume_state: {state} was saved by compact(num_conv=2, num_feat=8) x2; the "
        "option file builds compact(num_conv=2, num_feat=16) x2: network_g and scale",
    )
    data = options(tiny_dataset, workdir, resume_state=str(state))
    data["scale"] = 3
    data["train"]["total_iter"] = 8
    del data["datasets"]["val"], data["val"]
    assert_refused_before_writing(
        *run(workdir, data, capsys)[:2],
        workdir,
        "was saved by compact(num_conv=2, num_feat=8) x2; the option file builds "
        "compact(num_conv=2, num_feat=8) x3",
    )


def test_a_changed_optimizer_type_resumes_with_a_fresh_optimizer_and_a_warning(
    trained: Path,
    tiny_dataset: Path,
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    warnings: list[str],
) -> None:
    shutil.copytree(trained, workdir / "experiments" / NAME)
    data = options(tiny_dataset, workdir)
    data["train"]["total_iter"] = 8
    data["train"]["optim_g"] = {"type": "SGD", "lr": 1e-3, "momentum": 0.9}
    code, lines, out = run(workdir, data, capsys, "--auto_resume")
    assert code == 0, lines
    assert (
        "train.optim_g.type: the training state was saved with adamw, so sgd starts with a "
        "fresh optimizer state (the weights, EMA and schedule resume)"
    ) in warnings
    assert "Resumed from" in out
    saved = torch.load(
        workdir / "experiments" / NAME / "training_states" / "8.state", weights_only=True
    )
    assert saved["iteration"] == 8 and saved["model"]["optimizer_type"] == "sgd"
    assert "momentum_buffer" in next(iter(saved["model"]["optimizer"]["state"].values()))
