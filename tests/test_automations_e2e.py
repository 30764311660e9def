"""End to end: every automation on, trained through train.py, resumed with the same decisions."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import base_options, write_options

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

pytestmark = pytest.mark.slow


def all_automations() -> dict[str, Any]:
    """Every automation enabled with intervals small enough to act in a 24-iteration run."""
    return {
        "lr_scheduling": {
            "enabled": True,
            "monitor_train_loss": True,  # on despite the MultiStepLR schedule
            "check_interval": 2,
            "patience": 4,
            "loss_ema_decay": 0.5,
            "metric": "psnr",
            "metric_patience": 1,
            "factor": 0.7,
            "threshold": 0.05,
        },
        "batch_size": {
            "enabled": True,
            "search": True,
            "search_on_cpu": True,
            "keep_effective_batch": False,
            "max_batch_size": 4,
            "steps_per_trial": 1,
        },
        "adaptive_gradient_clipping": {
            "enabled": True,
            "mode": "rule",
            "initial_threshold": 1.0,
            "min_threshold": 0.001,
            "max_threshold": 10.0,
            "adjustment_factor": 1.2,
            "monitoring_frequency": 4,
            "gradient_history_size": 8,
            "detailed_logging": True,
            "cooldown": 4,
        },
        "early_stopping": {"enabled": True, "metric": "psnr", "patience": 50},
        "precision": {"enabled": True, "check_interval": 4, "snapshot_interval": 8},
        "validation_frequency": {
            "enabled": True,
            "min_interval": 2,
            "max_interval": 8,
            "window": 3,
            "cooldown": 0,
        },
        "augmentation_scheduling": {
            "enabled": True,
            "start_prob": 0.0,
            "end_prob": 0.8,
            "steps": 4,
            "update_interval": 4,
        },
        "optimizer_selection": {
            "enabled": True,
            "candidates": ["adamw", "nadam"],
            "default": "adamw",
            "trial_iterations": 3,
        },
        "regularization_scheduling": {
            "enabled": True,
            "start": 1e-4,
            "end": 1e-3,
            "steps": 4,
            "update_interval": 4,
        },
        "multi_metric_lr": {
            "enabled": True,
            "patience": 1,
            "cooldown": 0,
            "scale_window": 2,
            "metrics": {"psnr": {"better": "higher"}, "ssim": {"better": "higher", "weight": 0.5}},
            "compound_with_lr_scheduling": True,
        },
    }


def options(tmp: Path, dataset: Path) -> dict[str, Any]:
    opts = base_options(dataset, tmp)
    opts["train"]["total_iter"] = 24
    opts["train"]["use_moa"] = True
    opts["train"]["moa_debug"] = True
    opts["train"]["moa_debug_limit"] = 3
    opts["train"]["automations"] = all_automations()
    opts["train"]["losses"].append({"type": "mssimloss", "loss_weight": 0.1})
    opts["train"]["dynamic_loss_scheduling"] = {
        "enabled": True,
        "mode": "balance",
        "baseline_iterations": 4,
        "update_interval": 4,
    }
    opts["val"]["val_freq"] = 4
    opts["logger"]["save_checkpoint_freq"] = 8
    return opts


def run_train(option_file: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-opt", str(option_file), *extra],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def decisions(experiment: Path) -> list[dict[str, Any]]:
    lines = (experiment / "automations.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def tensorboard_tags(log_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for event_file in log_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    root = tmp_path_factory.mktemp("reference")
    run_train(write_options(root / "run.yml", options(root, tiny_dataset)), root)
    return root


def test_every_automation_decides_and_is_visible(reference_run: Path) -> None:
    experiment = reference_run / "experiments" / "unit_run"
    records = decisions(experiment)
    assert records, "no automation decided anything"
    for record in records:
        assert set(record) >= {"iteration", "automation", "parameter", "old", "new", "reason"}
    deciding = {r["automation"] for r in records}
    for name in (
        "lr_scheduling",
        "batch_size",
        "adaptive_gradient_clipping",
        "optimizer_selection",
        "augmentation_scheduling",
        "regularization_scheduling",
        "validation_frequency",
        "dynamic_loss_scheduling",
    ):
        assert name in deciding, f"{name} made no decision: {sorted(deciding)}"
    tags = tensorboard_tags(reference_run / "tb_logger" / "unit_run")
    for name in all_automations():
        assert any(t.startswith(f"automations/{name}/") for t in tags), (name, sorted(tags))
    assert {"losses/l_g_l1", "lr", "grad_norms/net_g", "metrics/tiny_val/psnr"} <= tags
    # Loss weighting is an automation like the others: its weights are decisions.
    assert any(t.startswith("automations/dynamic_loss_scheduling/loss_weights/") for t in tags)
    # moa_debug: the first moa_debug_limit batches, before and after their augmentation.
    saved = sorted(p.name for p in (experiment / "visualization" / "moa_debug").iterdir())
    assert {name[:6] for name in saved} == {"000001", "000002", "000003"}
    assert sum(name.endswith("_preauglq.png") for name in saved) == 3
    assert sum(name.endswith("_gtfinal.png") for name in saved) == 3


def test_knob_values_stay_in_their_configured_bounds(reference_run: Path) -> None:
    records = decisions(reference_run / "experiments" / "unit_run")
    for record in records:
        if record["parameter"] == "aug_prob":
            assert 0.0 <= record["new"] <= 0.8
        if record["parameter"] == "weight_decay":
            assert 1e-4 <= record["new"] <= 1e-3 + 1e-12
        if record["parameter"] == "val_interval":
            assert 2 <= record["new"] <= 8
        if record["parameter"].startswith("clip_threshold"):
            assert 0.001 <= record["new"] <= 10.0
        if record["parameter"] == "batch_size":
            assert 1 <= record["new"] <= 4


def test_resumed_run_makes_the_same_decisions(
    reference_run: Path, tmp_path: Path, tiny_dataset: Path
) -> None:
    option_file = write_options(tmp_path / "run.yml", options(tmp_path, tiny_dataset))
    run_train(option_file, tmp_path)
    experiment = tmp_path / "experiments" / "unit_run"
    # Go back to iteration 8: drop later states and the decisions logged after it.
    for state in (experiment / "training_states").glob("*.state"):
        if state.name != "8.state":
            state.unlink()
    kept = [r for r in decisions(experiment) if r["iteration"] <= 8]
    (experiment / "automations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    result = run_train(option_file, tmp_path, "--auto_resume")
    assert "Resumed from" in result.stdout + result.stderr

    def key(record: dict[str, Any]) -> tuple[Any, ...]:
        return (
            record["iteration"],
            record["automation"],
            record["parameter"],
            record["old"],
            record["new"],
        )

    # The precision automation snapshots the good state again when a run starts: the
    # snapshot lives in memory, so it is an extra action, not a different decision.
    def comparable(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [key(r) for r in records if r["parameter"] != "save_good_state"]

    reference = comparable(decisions(reference_run / "experiments" / "unit_run"))
    resumed = comparable(decisions(experiment))
    assert resumed == reference, [
        (a, b) for a, b in zip(resumed, reference, strict=False) if a != b
    ][:3]
    ref_weights = load_file(
        str(reference_run / "experiments/unit_run/models/net_g_latest.safetensors")
    )
    new_weights = load_file(str(experiment / "models" / "net_g_latest.safetensors"))
    for name in ref_weights:
        assert torch.equal(ref_weights[name], new_weights[name]), name


# ------------------------------------------------------- tags, layout, report
def _documented_tags() -> list[tuple[str, str, str]]:
    """(tag pattern, kind, when) rows of docs/automations.md's table of TensorBoard tags."""
    doc = (Path(__file__).parents[1] / "docs" / "automations.md").read_text(encoding="utf-8")
    table = doc.split("#### Every TensorBoard tag", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(automations/[^`]+)` \| ([^|]+) \| ([^|]+) \|$", table, flags=re.M)
    return [(tag, kind.strip(), when.strip()) for tag, kind, when in rows]


def _pattern(tag: str) -> re.Pattern[str]:
    # <loss>, <metric>, <candidate> stand for any name.
    parts = re.split(r"<[a-z]+>", tag)
    return re.compile("^" + "[A-Za-z0-9_]+".join(map(re.escape, parts)) + "$")


def test_every_documented_tag_is_in_a_real_run_and_every_tag_is_documented(
    reference_run: Path,
) -> None:
    tags = tensorboard_tags(reference_run / "tb_logger" / "unit_run")
    documented = _documented_tags()
    assert len(documented) >= 40
    patterns = [(_pattern(tag), tag, when) for tag, _, when in documented]
    for tag in sorted(t for t in tags if t.startswith("automations/")):
        assert any(p.match(tag) for p, _, _ in patterns), f"{tag} is not in docs/automations.md"
    for pattern, tag, when in patterns:
        if when == "always":
            assert any(pattern.match(t) for t in tags), f"documented {tag} missing from the run"
    # A decision in automations.jsonl has its tag (dots become slashes), numeric ones at least.
    for row in decisions(reference_run / "experiments" / "unit_run"):
        if isinstance(row["new"], int | float):
            tag = f"automations/{row['automation']}/{row['parameter'].replace('.', '/')}"
            assert tag in tags, tag


def test_the_custom_scalars_layout_is_written_and_its_charts_have_data(
    reference_run: Path,
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    from traiNNer.reporting.tensorboard_layout import LAYOUT

    log_dir = reference_run / "tb_logger" / "unit_run"
    tags = tensorboard_tags(log_dir)
    accumulator = EventAccumulator(str(next(log_dir.glob("events.out.tfevents.*"))))
    accumulator.Reload()
    config = accumulator.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    layout = layout_pb2.Layout.FromString(config)  # pyright: ignore[reportAttributeAccessIssue]  # generated protobuf
    written = {chart.title for category in layout.category for chart in category.chart}
    assert written == {title for charts in LAYOUT.values() for title in charts}
    for charts in LAYOUT.values():
        for title, chart_patterns in charts.items():
            if title == "precision":
                continue  # precision_level appears with the automation on; checked above
            assert any(re.search(p, t) for p in chart_patterns for t in tags), title


def test_report_of_a_real_run_draws_every_panel_and_explains_every_decision(
    reference_run: Path, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    from traiNNer.reporting.report import build_panels, render
    from traiNNer.reporting.run_record import read_run

    run = read_run(reference_run / "experiments" / "unit_run")
    titles = [panel.title for panel in build_panels(run)]
    for expected in (
        "learning rate",
        "gradient clipping",
        "batch size",
        "validation interval",
        "augmentation probability",
        "weight decay",
        "loss weights",
        "training losses",
        "validation tiny_val/psnr",
    ):
        assert any(title.startswith(expected) for title in titles), (expected, titles)
    png, page = render(run, tmp_path / "report.png", tmp_path / "report.html")
    width, height = Image.open(png).size
    assert width >= 1000 and height > 1000
    text = page.read_text(encoding="utf-8")
    assert text.count("<area ") >= len(run.decisions)  # the strip marks every decision
    for row in run.decisions:
        assert html.escape(str(row["reason"])) in text
    # Every hover area lies inside the picture.
    for x, y in re.findall(r'coords="(\d+),(\d+),7"', text):
        assert 0 <= int(x) <= width and 0 <= int(y) <= height
