"""Smoke tests of scripts/benchmarks with tiny settings, so that the scripts cannot rot."""

from __future__ import annotations

import csv
import importlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from traiNNer.config.loader import load_options
from traiNNer.utils.registry import ARCH_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
# The scripts import their shared module by its bare name, as when run from their folder.
sys.path.insert(0, str(ROOT / "scripts" / "benchmarks"))
arch_throughput = importlib.import_module("arch_throughput")
automation_overhead = importlib.import_module("automation_overhead")
convergence = importlib.import_module("convergence")
data_pipeline = importlib.import_module("data_pipeline")
framework_overhead = importlib.import_module("framework_overhead")
realdata = importlib.import_module("realdata")


@pytest.fixture(autouse=True)
def keep_logging_as_it_was() -> Iterator[None]:
    # train.main (convergence) and the scripts reconfigure the `traiNNer` logger.
    logger = logging.getLogger("traiNNer")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_framework_overhead_compares_identical_training(tmp_path: Path) -> None:
    args = framework_overhead.parse_args(["--batch", "2", "--lq-size", "16", "--seed", "3"])
    device = torch.device("cpu")
    model, bare_net = framework_overhead.build_framework_model("paragonsr2_nano", args, device)
    assert model.opt.train is not None
    bare = framework_overhead.BareLoop(
        bare_net,
        framework_overhead.bare_losses(model, device),
        device=device,
        precision="fp32",
        channels_last=False,
        ema_decay=args.ema_decay,
        clip_norm=model.opt.train.grad_clip_max_norm,
    )
    batch = framework_overhead.synthetic_batch(2, 16, 2, device, seed=3)
    framework_step = framework_overhead.framework_step(model, batch)
    for _ in range(3):
        framework_step()
        bare.step(batch)
    # Same weights after the same steps: the two sides do the same work.
    for ours, theirs in zip(model.bare_net_g.parameters(), bare.net.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert model.ema is not None
    ema = list(model.ema.net.parameters())
    for ours, theirs in zip(ema, bare.ema_params, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_framework_overhead_writes_its_table(tmp_path: Path) -> None:
    argv = ["--archs", "paragonsr2_nano", "--batch", "2", "--lq-size", "16"]
    argv += ["--warmup", "1", "--steps", "2", "--repeats", "2", "--out", str(tmp_path)]
    assert framework_overhead.main(argv) == 0
    (row,) = read_rows(tmp_path / "framework_overhead.csv")
    assert row["arch"] == "paragonsr2_nano" and float(row["ratio"]) > 0
    assert float(row["ratio_min"]) <= float(row["ratio"]) <= float(row["ratio_max"])
    markdown = (tmp_path / "framework_overhead.md").read_text()
    assert "| paragonsr2_nano |" in markdown and "Command: `python " in markdown


def test_automation_overhead_runs_every_automation(tmp_path: Path) -> None:
    argv = ["--archs", "paragonsr2_nano", "--batch", "2", "--lq-size", "16", "--interval", "2"]
    argv += ["--warmup", "1", "--steps", "4", "--repeats", "1", "--out", str(tmp_path)]
    assert automation_overhead.main(argv) == 0
    rows = {row["contender"]: row for row in read_rows(tmp_path / "automation_overhead.csv")}
    assert set(rows) == {"off", "automations", "automations+dls"}
    assert rows["off"]["automations"] == "0" and float(rows["off"]["ratio"]) == 1.0
    # The ten, then the ten plus dynamic loss scheduling (an automation too).
    for name, count in (("automations", "10"), ("automations+dls", "11")):
        assert rows[name]["automations"] == count
        assert int(rows[name]["scalar_reports"]) > 0  # interval hooks ran while timed
        assert 0 < float(rows[name]["hook_share"]) < 1


def test_arch_throughput_counts_parameters_and_rejects_unknown_archs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--archs", "paragonsr2_nano,superultracompact", "--size", "24x16"]
    argv += ["--train-batch", "2", "--train-lq-size", "16", "--iters", "1", "--out", str(tmp_path)]
    assert arch_throughput.main(argv) == 0
    rows = read_rows(tmp_path / "arch_throughput.csv")
    assert [row["arch"] for row in rows] == ["paragonsr2_nano", "superultracompact"]
    for row in rows:
        net = ARCH_REGISTRY.get(row["arch"])(scale=2)
        assert int(row["params"]) == sum(p.numel() for p in net.parameters())
        assert row["input"] == "24x16"
        assert float(row["infer_images_s"]) > 0 and float(row["train_steps_s"]) > 0

    assert arch_throughput.main(["--archs", "paragonsr3", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --archs: unknown arch 'paragonsr3'") and "\n" not in error


def test_data_pipeline_measures_both_dataset_types(tmp_path: Path, tiny_dataset: Path) -> None:
    argv = ["--data", str(tiny_dataset / "train" / "hr"), "--workers", "0", "--batch", "2"]
    argv += ["--lq-size", "16", "--warmup-batches", "1", "--batches", "2", "--out", str(tmp_path)]
    assert data_pipeline.main(argv) == 0
    rows = read_rows(tmp_path / "data_pipeline.csv")
    assert [row["type"] for row in rows] == ["pairedimagedataset", "bicubicimagedataset"]
    assert all(row["images"] == "4" and float(row["patches_s"]) > 0 for row in rows)


def test_convergence_compares_both_recipes_and_plots(tmp_path: Path, tiny_dataset: Path) -> None:
    out = tmp_path / "out"
    argv = ["--data", str(tiny_dataset / "train" / "hr"), "--val-hr", str(tiny_dataset / "val/hr")]
    argv += ["--val-lq", str(tiny_dataset / "val" / "lr_x2"), "--iters", "4", "--val-freq", "2"]
    argv += ["--seeds", "1", "--batch", "2", "--lq-size", "16", "--workers", "0"]
    argv += ["--work", str(tmp_path / "work"), "--out", str(out)]
    assert convergence.main(argv) == 0
    summary = {row["config"]: row for row in read_rows(out / "convergence.csv")}
    assert set(summary) == {"static", "automations"}
    curves = read_rows(out / "convergence_curves.csv")
    assert [(r["config"], r["iteration"]) for r in curves] == [
        ("static", "2"),
        ("static", "4"),
        ("automations", "2"),
        ("automations", "4"),
    ]
    assert summary["static"]["final_psnr"].startswith(curves[1]["psnr"][:5])
    # Default target: the seed's static final PSNR less 0.1 dB, which the static run reaches.
    assert summary["static"]["reached"] == "1/1"
    (static_run, _) = read_rows(out / "convergence_runs.csv")
    assert float(static_run["target"]) == pytest.approx(float(curves[1]["psnr"]) - 0.1, abs=1e-3)
    assert (out / "convergence.png").stat().st_size > 1000
    assert (tmp_path / "work" / "experiments" / "automations_seed1" / "automations.jsonl").is_file()


@pytest.mark.parametrize("name", ["Nano", "S"])
def test_convergence_fits_a_shipped_gpu_recipe_to_the_benchmark(
    tmp_path: Path, tiny_dataset: Path, name: str
) -> None:
    recipe_dir = ROOT / "options" / "train" / "ParagonSR2"
    args = convergence.parse_args(
        [
            "--static-opt",
            str(recipe_dir / f"2x_ParagonSR2_{name}_fidelity.yml"),
            "--auto-opt",
            str(recipe_dir / f"2x_ParagonSR2_{name}_fidelity_auto.yml"),
            "--data",
            str(tiny_dataset / "train" / "hr"),
            "--val-hr",
            str(tiny_dataset / "val" / "hr"),
            "--val-lq",
            str(tiny_dataset / "val" / "lr_x2"),
            "--iters",
            "600",
            "--val-freq",
            "50",
        ]
    )
    pair = convergence.recipes(args)
    for config, recipe in pair.items():
        planned = load_options(recipe_dir / f"2x_ParagonSR2_{name}_fidelity.yml")
        assert planned.train is not None
        fitted = convergence.finish_recipe(recipe, config, 5, tmp_path, torch.device("cpu"))
        option_file = tmp_path / f"{config}.yml"
        option_file.write_text(convergence.yaml.safe_dump(fitted), encoding="utf-8")
        opt = load_options(option_file)
        assert opt.train is not None and opt.val is not None
        assert (opt.train.total_iter, opt.val.val_freq, opt.manual_seed) == (600, 50, 5)
        # Milestones keep their place in the shorter run.
        assert planned.train.scheduler is not None and opt.train.scheduler is not None
        fraction = 600 / planned.train.total_iter
        expected = [int(m * fraction) for m in planned.train.scheduler["milestones"]]
        assert opt.train.scheduler["milestones"] == expected
        assert opt.datasets["train"].dataroot_gt == str(tiny_dataset / "train" / "hr")
        assert (opt.train.automations is not None) == (config == "automations")


def fake_benchmark_sets(root: Path) -> Path:
    """BSD100/x2 and Set14/x2 laid out as ../shared/datasets has them, from smooth patterns."""
    from tests.conftest import write_png
    from traiNNer.data.resize import bicubic_downscale

    generator = torch.Generator().manual_seed(1)
    for name, count, size in (("BSD100", 4, 64), ("Set14", 2, 32)):
        for i in range(count):
            low = torch.rand(3, size // 8, size // 8, generator=generator)
            hr = torch.nn.functional.interpolate(low[None], size=(size, size), mode="bicubic")
            hr = hr[0].clamp(0, 1)
            write_png(root / name / "x2" / "hr" / f"img{i}.png", hr)
            write_png(root / name / "x2" / "lr" / f"img{i}.png", bicubic_downscale(hr, 2))
    return root


def test_realdata_runs_its_grid_static_and_with_automations(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--datasets", str(fake_benchmark_sets(tmp_path / "sets")), "--iters", "4"]
    argv += ["--val-freq", "2", "--seeds", "1", "--configs", "tuned,overlong", "--batch", "2"]
    argv += ["--lq-size", "16", "--workers", "0", "--work", str(tmp_path / "work")]
    argv += ["--out", str(out)]
    assert realdata.main(argv) == 0
    rows = read_rows(out / "realdata.csv")
    assert [(r["config"], r["mode"]) for r in rows] == [
        ("tuned", "static"),
        ("tuned", "automations"),
        ("overlong", "static"),
        ("overlong", "automations"),
    ]
    # The target is the tuned static run's final PSNR less 0.05 dB, which it reaches.
    assert rows[0]["reached"] == "1/1"
    assert float(rows[2]["compute"]) == 3 * float(rows[0]["compute"]) == 3 * 4 * 2
    assert rows[0]["decisions"] == "-" and "adaptive_gradient_clipping" in rows[1]["decisions"]
    curves = read_rows(out / "realdata_curves.csv")
    assert len(curves) == 2 + 2 + 6 + 6
    assert (out / "realdata.png").stat().st_size > 1000


def test_realdata_names_the_missing_datasets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert realdata.main(["--datasets", str(tmp_path / "nowhere")]) == 2
    assert "../shared/datasets" in capsys.readouterr().err
