"""A corpus of option-file mistakes: each is one line on stderr naming the key (or the file),
exit code 2, and nothing written: no experiments/ or tb_logger/ folder, the file untouched."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import train
from tests.conftest import base_options

Options = dict[str, Any]


def _set(path: str, value: Any) -> Callable[[Options], None]:
    """A mutation that sets the dotted `path` (list indices as numbers) to `value`."""

    def mutate(data: Options) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        if value is _DELETE:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return mutate


_DELETE = object()


def _esrgan_at_3x(data: Options) -> None:
    # spandrel reads RRDBNet 3x weights back as 2x, so ESRGAN has no 3x.
    data["scale"] = 3
    data["network_g"]["type"] = "esrgan"


# (case id, mutation of base_options, regex the one error line must match)
MUTATIONS: list[tuple[str, Callable[[Options], None], str]] = [
    # Unknown keys at every level.
    ("unknown root key", _set("scael", 2), r"^scael: unknown key"),
    ("unknown dataset key", _set("datasets.train.lq_sise", 16), r"datasets\.train\.lq_sise"),
    ("unknown network key", _set("network_g.num_feet", 8), r"network_g\.num_feet: unknown key"),
    ("unknown path key", _set("path.pretrain_g", "x"), r"path\.pretrain_g: unknown key"),
    ("unknown train key", _set("train.total_iters", 5), r"train\.total_iters: unknown key"),
    ("unknown optimizer key", _set("train.optim_g.betass", [0.9, 0.9]), r"train\.optim_g\.betass"),
    ("unknown scheduler key", _set("train.scheduler.gama", 0.5), r"train\.scheduler\.gama"),
    (
        "unknown loss key",
        _set("train.losses.0.loss_weigth", 1.0),
        r"train\.losses\[0\]\.loss_weigth",
    ),
    ("unknown val key", _set("val.val_frq", 4), r"val\.val_frq: unknown key"),
    ("unknown metric key", _set("val.metrics.psnr.crop", 2), r"val\.metrics\.psnr\.crop"),
    ("unknown logger key", _set("logger.print_frq", 4), r"logger\.print_frq: unknown key"),
    (
        "unknown automation",
        _set("train.automations", {"early_stoping": {"enabled": True}}),
        r"train\.automations\.early_stoping",
    ),
    (
        "unknown automation key",
        _set("train.automations", {"early_stopping": {"enabled": True, "patiense": 3}}),
        r"train\.automations\.early_stopping\.patiense",
    ),
    ("unknown dist key", _set("dist_params.prot", 1), r"dist_params\.prot: unknown key"),
    # Wrong types.
    ("scale as text", _set("scale", "two"), r"^scale: expected `int`"),
    ("total_iter as float", _set("train.total_iter", 1.5), r"train\.total_iter: expected `int`"),
    ("use_amp as text", _set("use_amp", "yes please"), r"^use_amp: expected `bool`"),
    ("lq_size as list", _set("datasets.train.lq_size", [16]), r"datasets\.train\.lq_size"),
    ("losses as mapping", _set("train.losses", {"type": "l1loss"}), r"train\.losses"),
    ("lr as text", _set("train.optim_g.lr", "fast"), r"train\.optim_g\.lr"),
    # Out of range.
    ("scale 9", _set("scale", 9), r"^scale: expected `int` <= 8"),
    (
        "lq_size 2",
        _set("datasets.train.lq_size", 2),
        r"datasets\.train\.lq_size: expected `int` >= 4",
    ),
    (
        "batch 0",
        _set("datasets.train.batch_size_per_gpu", 0),
        r"batch_size_per_gpu: expected `int` >= 1",
    ),
    ("ema_decay 1.5", _set("train.ema_decay", 1.5), r"train\.ema_decay"),
    ("val_freq 0", _set("val.val_freq", 0), r"val\.val_freq: expected `int` >= 1"),
    ("print_freq -1", _set("logger.print_freq", -1), r"logger\.print_freq"),
    ("tile_size -1", _set("val.tile_size", -1), r"val\.tile_size"),
    ("warmup_iter -2", _set("train.warmup_iter", -2), r"train\.warmup_iter"),
    ("negative lr", _set("train.optim_g.lr", -1e-3), r"train\.optim_g\.lr: must be >= 0"),
    ("betas above 1", _set("train.optim_g.betas", [0.9, 1.5]), r"train\.optim_g\.betas"),
    ("gamma as list", _set("train.scheduler.gamma", [0.5]), r"train\.scheduler\.gamma"),
    ("every loss off", _set("train.losses.0.loss_weight", 0), r"train\.losses: every loss"),
    (
        "scale the arch lacks",
        _esrgan_at_3x,
        r"^scale: 3 is not supported by esrgan \(accepted: 1, 2, 4, 8\)",
    ),
    # Missing required keys.
    ("no name", _set("name", _DELETE), r"name"),
    ("no scale", _set("scale", _DELETE), r"scale"),
    ("no network_g", _set("network_g", _DELETE), r"^network_g: required key is missing"),
    ("no train", _set("train", _DELETE), r"^train: required key is missing"),
    ("no total_iter", _set("train.total_iter", _DELETE), r"total_iter"),
    ("no train set", _set("datasets.train", _DELETE), r"^datasets\.train: required key"),
    ("no dataset type", _set("datasets.train.type", _DELETE), r"datasets\.train.*type"),
    ("no lq_size", _set("datasets.train.lq_size", _DELETE), r"datasets\.train\.lq_size: required"),
    # Unknown names.
    ("unknown arch", _set("network_g.type", "paragonsr3"), r"network_g\.type: .*paragonsr3"),
    ("unknown loss", _set("train.losses.0.type", "l3loss"), r"train\.losses\[0\]\.type"),
    ("unknown optimizer", _set("train.optim_g.type", "adamx2"), r"train\.optim_g\.type"),
    ("unknown scheduler", _set("train.scheduler.type", "cosinelr9"), r"train\.scheduler\.type"),
    (
        "unknown metric",
        _set("val.metrics.psnr.type", "calculate_psnrr"),
        r"val\.metrics\.psnr\.type",
    ),
    (
        "unknown dataset type",
        _set("datasets.train.type", "imagedataset9"),
        r"datasets\.train\.type",
    ),
    (
        "automation metric not validated",
        _set("train.automations", {"early_stopping": {"enabled": True, "metric": "lpips"}}),
        r"train\.automations\.early_stopping\.metric: 'lpips' is not a validation metric",
    ),
]

# (case id, file text, regex): mistakes only raw YAML can make.
TEXTS: list[tuple[str, str, str]] = [
    ("empty file", "", r"expected a mapping of options at the top level"),
    ("a list, not a mapping", "- name: x\n", r"expected a mapping"),
    ("invalid YAML", "name: [unclosed\nscale: 2\n", r"invalid YAML"),
    ("tab indentation", "name: x\ntrain:\n\ttotal_iter: 3\n", r"invalid YAML"),
    ("key given twice", "name: a\nscale: 2\nscale: 4\n", r"key 'scale' is given twice"),
    (
        "inf lr",
        "name: a\nscale: 2\ntrain: {optim_g: {lr: 1.0e+400}}\n",
        r"train\.optim_g\.lr: must be a finite",
    ),
    (
        "nan weight",
        "name: a\ntrain: {losses: [{type: l1loss, loss_weight: .nan}]}\n",
        r"must be a finite",
    ),
    (
        "400-digit total_iter",
        "name: a\ntrain: {total_iter: " + "9" * 400 + "}\n",
        r"train\.total_iter: .* too large",
    ),
]


def _run(option_file: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = train.main(["-opt", str(option_file)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


def _assert_refused(
    tmp_path: Path, option_file: Path, code: int, err: list[str], pattern: str
) -> None:
    before = option_file.read_bytes()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    assert re.search(pattern, err[0].removeprefix("error: ")), err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [option_file.name]
    assert option_file.read_bytes() == before


def test_the_corpus_is_large_enough() -> None:
    assert len(MUTATIONS) + len(TEXTS) >= 40
    assert len({case for case, *_ in MUTATIONS + TEXTS}) == len(MUTATIONS) + len(TEXTS)


@pytest.mark.parametrize(("case", "mutate", "pattern"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_option_mistake_is_one_line_exit_2_and_writes_nothing(
    case: str,
    mutate: Callable[[Options], None],
    pattern: str,
    tiny_dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del case
    monkeypatch.chdir(tmp_path)
    data = base_options(tiny_dataset, tmp_path)
    mutate(data)
    option_file = tmp_path / "options.yml"
    option_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    code, err = _run(option_file, capsys)
    _assert_refused(tmp_path, option_file, code, err, pattern)


@pytest.mark.parametrize(("case", "text", "pattern"), TEXTS, ids=[t[0] for t in TEXTS])
def test_yaml_mistake_is_one_line_exit_2_and_writes_nothing(
    case: str,
    text: str,
    pattern: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del case
    monkeypatch.chdir(tmp_path)
    option_file = tmp_path / "options.yml"
    option_file.write_text(text, encoding="utf-8")
    code, err = _run(option_file, capsys)
    _assert_refused(tmp_path, option_file, code, err, pattern)
