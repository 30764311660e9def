"""Every option file shipped under options/ loads through the config schema, so none can rot."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from traiNNer.config.loader import decode_options, load_options, read_yaml, validate
from traiNNer.config.schema import Options

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ROOT / "options"
TRAIN_FILES = sorted((OPTIONS / "train").rglob("*.yml"))
TEST_FILES = sorted((OPTIONS / "test").rglob("*.yml"))
SCHEMA = ROOT / "schemas" / "options.schema.json"
SCHEMA_COMMENT = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")
# The ParagonSR2 CUDA recipes: static file -> the same recipe with automations on.


def _load_test_script() -> Any:
    # By path: `import test` could find the standard library's test package instead.
    spec = importlib.util.spec_from_file_location("test_script", ROOT / "test.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECIPE_PAIRS = {
    "2x_ParagonSR2_Nano_fidelity.yml": "2x_ParagonSR2_Nano_fidelity_auto.yml",
    "2x_ParagonSR2_S_fidelity.yml": "2x_ParagonSR2_S_fidelity_auto.yml",
}
RECIPE_DIR = OPTIONS / "train" / "ParagonSR2"
RECOMMENDED = {
    "lr_scheduling",
    "batch_size",
    "adaptive_gradient_clipping",
    "early_stopping",
    "precision",
}
SEEDS_CLIPPING_KEYS = {
    "initial_threshold",
    "min_threshold",
    "max_threshold",
    "adjustment_factor",
    "monitoring_frequency",
    "gradient_history_size",
    "detailed_logging",
}


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture(autouse=True)
def run_from_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Paths inside option files are relative to the repository root, as when users run them.
    monkeypatch.chdir(ROOT)


def load_test_file(path: Path) -> Options:
    """test.py's own loading when the weights exist; without weights (CI) the same checks,
    with the architecture taken from `network_g` instead of the weights' metadata."""
    data = read_yaml(path)
    weights = (data.get("path") or {}).get("pretrain_network_g")
    assert weights, f"{relative(path)}: path.pretrain_network_g is required by test.py"
    if Path(weights).is_file():
        return _load_test_script().load_test_options(str(path))
    assert data.get("network_g"), f"{relative(path)}: name network_g (weights absent here)"
    data.pop("train", None)
    return validate(decode_options(data), for_training=False)


def to_data(opt: Options) -> dict[str, Any]:
    data = msgspec.to_builtins(opt)
    assert isinstance(data, dict)
    return data


def test_every_option_file_is_checked_here() -> None:
    everything = sorted(OPTIONS.rglob("*.yml")) + sorted(OPTIONS.rglob("*.yaml"))
    assert TRAIN_FILES and TEST_FILES
    assert sorted(everything) == sorted(TRAIN_FILES + TEST_FILES)


@pytest.mark.parametrize("path", TRAIN_FILES, ids=relative)
def test_training_file_loads_through_the_schema(path: Path) -> None:
    opt = load_options(path, for_training=True)
    assert opt.train is not None and "train" in opt.datasets


@pytest.mark.parametrize("path", TEST_FILES, ids=relative)
def test_test_file_loads_through_the_schema(path: Path) -> None:
    opt = load_test_file(path)
    assert opt.datasets and opt.val is not None and opt.val.metrics


@pytest.mark.parametrize("path", TRAIN_FILES + TEST_FILES, ids=relative)
def test_file_points_editors_at_the_json_schema(path: Path) -> None:
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    match = SCHEMA_COMMENT.match(first_line)
    assert match, f"{relative(path)}: first line must be the yaml-language-server schema comment"
    assert (path.parent / match.group(1)).resolve() == SCHEMA


@pytest.mark.parametrize("path", TEST_FILES, ids=relative)
def test_test_file_runs_the_weights_of_a_shipped_training_file(path: Path) -> None:
    weights = Path(read_yaml(path)["path"]["pretrain_network_g"])
    train_names = {read_yaml(train_file)["name"] for train_file in TRAIN_FILES}
    assert weights.parts[0] == "experiments" and weights.parts[2] == "models"
    assert weights.parts[1] in train_names, f"{relative(path)}: no training file trains {weights}"


@pytest.mark.parametrize("static_name", sorted(RECIPE_PAIRS))
def test_recipe_pair_differs_only_in_name_and_automations(static_name: str) -> None:
    static = to_data(load_options(RECIPE_DIR / static_name))
    auto = to_data(load_options(RECIPE_DIR / RECIPE_PAIRS[static_name]))
    assert static["train"]["automations"] is None
    automations = auto["train"].pop("automations")
    enabled = {name for name, block in automations.items() if block and block["enabled"]}
    assert enabled == RECOMMENDED
    assert auto.pop("name") == static.pop("name") + "_auto"
    static["train"].pop("automations")
    assert auto == static


@pytest.mark.parametrize("name", sorted(RECIPE_PAIRS.values()))
def test_adaptive_clipping_block_is_written_with_the_seeds_keys(name: str) -> None:
    block = read_yaml(RECIPE_DIR / name)["train"]["automations"]["adaptive_gradient_clipping"]
    assert set(block) >= SEEDS_CLIPPING_KEYS


@pytest.mark.parametrize(
    ("name", "arch", "batch", "lr"),
    [
        ("2x_ParagonSR2_Nano_fidelity.yml", "paragonsr2_nano", 32, 2e-4),
        ("2x_ParagonSR2_S_fidelity.yml", "paragonsr2_s", 12, 1e-4),
    ],
)
def test_cuda_recipe_keeps_the_published_fidelity_settings(
    name: str, arch: str, batch: int, lr: float
) -> None:
    opt = load_options(RECIPE_DIR / name)
    train, data = opt.train, opt.datasets["train"]
    assert train is not None and opt.val is not None
    assert (opt.scale, opt.network_g["type"]) == (2, arch)
    assert opt.use_amp and opt.amp_bf16 and opt.use_channels_last
    assert (data.lq_size, data.batch_size_per_gpu) == (128, batch)
    assert train.optim_g["type"].lower() == "adamw" and train.optim_g["lr"] == lr
    assert train.ema_decay == 0.999 and train.grad_clip
    weights = {loss["type"]: loss["loss_weight"] for loss in train.losses}
    assert weights["l1loss"] == 1.0 and 0.05 <= weights["mssimloss"] <= 0.08
    assert {m.crop_border for m in opt.val.metrics.values()} == {4}
    assert {"psnr", "ssim"} <= set(opt.val.metrics)


KEY_LINE = re.compile(r"^\s*(- )?[A-Za-z_][\w]*:")


@pytest.mark.parametrize(
    "path",
    [RECIPE_DIR / name for pair in RECIPE_PAIRS.items() for name in pair] + TEST_FILES,
    ids=relative,
)
def test_every_key_in_files_newcomers_copy_has_a_comment(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    bare = [
        f"line {number}: {line.strip()}"
        for number, line in enumerate(lines, start=1)
        if KEY_LINE.match(line) and "#" not in line
    ]
    assert not bare, f"{relative(path)}: keys without a comment: {bare}"
