"""What YAML lets through but an option file must not: keys given twice, inf/nan, integers
no count or size can be. Each is one ConfigError naming the key (and line) before any run."""

from __future__ import annotations

from pathlib import Path

import pytest

from traiNNer.config.yaml_io import read_yaml
from traiNNer.utils.errors import ConfigError


def written(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "options.yml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "scale: 2\nscale: 4\n",
            r"line 2: key 'scale' is given twice in one mapping \(first on line 1\)",
        ),
        (
            "train:\n  total_iter: 10\n  losses: []\n  total_iter: 999999\n",
            r"line 4: key 'total_iter' is given twice",
        ),
        (
            "val:\n  metrics:\n    psnr: {type: a}\n    psnr: {type: b}\n",
            r"key 'psnr' is given twice",
        ),
        (
            "train:\n  optim_g: {lr: 1.0e+400}\n",
            r"train\.optim_g\.lr: must be a finite number, got inf",
        ),
        (
            "train:\n  optim_g: {lr: .nan}\n",
            r"train\.optim_g\.lr: must be a finite number, got nan",
        ),
        (
            "datasets:\n  train:\n    lq_size: -.inf\n",
            r"datasets\.train\.lq_size: must be a finite",
        ),
        (
            "train:\n  total_iter: " + "9" * 400 + "\n",
            r"train\.total_iter: 9{20}\.\.\. is too large",
        ),
        ("train:\n  milestones: [1, " + "1" * 30 + "]\n", r"train\.milestones\[1\]: .* too large"),
        ("", r"expected a mapping of options at the top level"),
        ("- a\n- b\n", r"expected a mapping"),
        ("name: [unclosed\n", r"invalid YAML"),
    ],
)
def test_option_file_mistakes_yaml_accepts_are_errors(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        read_yaml(written(tmp_path, text))
    assert "\n" not in str(info.value)


def test_non_utf8_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"options\.yml: not a UTF-8 text file"):
        read_yaml(written(tmp_path, b"name: \xff\xfe\n"))


def test_same_key_in_different_mappings_and_yaml_tags_still_read(tmp_path: Path) -> None:
    data = read_yaml(
        written(
            tmp_path,
            "datasets:\n  train: {name: a}\n  val: {name: a}\n"
            "train:\n  optim_g: {lr: !!float 5e-4}\n  total_iter: 9007199254740992\n",
        )
    )
    assert data["datasets"]["val"]["name"] == "a"
    assert data["train"]["optim_g"]["lr"] == 5e-4
    assert data["train"]["total_iter"] == 2**53
