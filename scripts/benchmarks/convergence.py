"""Convergence: the static recipe versus the same recipe with the recommended automations.

Trains both configurations with `train.py` (in this process, through `train.main`)
for each seed, with the same iteration budget and the same data stream, then reads the
validation PSNR/SSIM curves from the TensorBoard event files and reports, per
configuration: final and best values with their spread across seeds, the iterations
needed to reach a target PSNR, and the ratio of those iterations (automations /
static; below 1 means the automations got there sooner). Writes a PNG of the curves.

Built-in pair (default): ParagonSR2 Nano on the demo dataset, a short CPU recipe,
and the recommended automations of the shipped `_auto` option files with their
patience, cooldown and minimum-iteration values shortened to the budget (statistical
windows keep their sample sizes). Or give any pair of option files, e.g. the shipped
GPU recipes, whose name, seed, budget, validation interval and paths are overridden.

    python scripts/benchmarks/convergence.py                                   # CPU demo
    python scripts/benchmarks/convergence.py --data /data/hr --seeds 1,2,3 \\
        --static-opt options/train/ParagonSR2/2x_ParagonSR2_Nano_fidelity.yml \\
        --auto-opt options/train/ParagonSR2/2x_ParagonSR2_Nano_fidelity_auto.yml \\
        --iters 20000 --val-freq 500 --device cuda                              # GPU
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from bench_common import (
    ROOT,
    Column,
    add_common_args,
    command_line,
    parse_int_list,
    positive,
    run_main,
    setup_run,
    shown_path,
    write_table,
)

import train as trainer
from traiNNer.config.loader import load_options, read_yaml
from traiNNer.utils.errors import UserError

CONFIGS = ("static", "automations")
DEMO = ROOT / "datasets" / "demo"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--data", type=Path, default=DEMO / "train" / "hr", help="HR folder")
    parser.add_argument("--val-hr", type=Path, default=DEMO / "val" / "hr")
    parser.add_argument("--val-lq", type=Path, default=DEMO / "val" / "lr_x2")
    parser.add_argument("--seeds", default="1,2", help="comma-separated manual seeds")
    parser.add_argument("--iters", type=int, default=300, help="iteration budget per run")
    parser.add_argument("--val-freq", type=int, default=25, help="iterations between validations")
    parser.add_argument("--arch", default="paragonsr2_nano", help="built-in pair only")
    parser.add_argument("--batch", type=int, default=8, help="built-in pair only")
    parser.add_argument("--lq-size", type=int, default=48, help="built-in pair only")
    parser.add_argument("--workers", type=int, default=1, help="loader workers per run")
    parser.add_argument("--static-opt", type=Path, default=None, help="option file: static")
    parser.add_argument("--auto-opt", type=Path, default=None, help="option file: automations")
    parser.add_argument(
        "--target-psnr",
        type=float,
        default=None,
        help="dB for every seed; default per seed: its static final PSNR - --target-margin",
    )
    parser.add_argument("--target-margin", type=float, default=0.1, help="dB")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder for the runs (option files, experiments, tb_logger); default: temporary",
    )
    parser.add_argument("--stem", default="convergence", help="output file name stem")
    args = parser.parse_args(argv)
    for option in ("iters", "val_freq", "batch", "lq_size"):
        positive(getattr(args, option), "--" + option.replace("_", "-"))
    if args.workers < 0:
        raise UserError(f"--workers: must be >= 0, got {args.workers}")
    if (args.static_opt is None) != (args.auto_opt is None):
        raise UserError("--static-opt and --auto-opt: give both option files or neither")
    for option, folder in (("--data", args.data), ("--val-hr", args.val_hr)):
        if not folder.is_dir():
            raise UserError(f"{option}: {folder} is not a folder")
    return args


# ------------------------------------------------------------------- the two recipes
def short_run_automations(iters: int) -> dict[str, Any]:
    """The recommended set (see the `_auto` option files) fitted to a short budget.

    Waiting periods (patience, cooldown, minimum iterations) shrink with the budget;
    statistical windows (gradient history, loss smoothing) keep enough samples to
    mean something, so they do not.
    """
    return {
        "lr_scheduling": {
            "enabled": True,
            "monitor_train_loss": True,
            "loss_ema_decay": 0.95,
            "check_interval": 10,
            "patience": max(20, iters // 6),
            "metric": "psnr",
            "metric_patience": 3,
            "factor": 0.5,
            "threshold": 1e-3,
            "cooldown": max(10, iters // 10),
            "min_lr_factor": 0.1,
        },
        "batch_size": {"enabled": True, "search": False, "keep_effective_batch": True},
        "adaptive_gradient_clipping": {
            "enabled": True,
            "mode": "zscore",
            "initial_threshold": 1.0,
            "min_threshold": 0.001,
            "max_threshold": 10.0,
            "adjustment_factor": 1.2,
            "monitoring_frequency": 10,
            "gradient_history_size": 50,
            "detailed_logging": False,
            "warmup_steps": 25,
            "cooldown": max(10, iters // 15),
        },
        "early_stopping": {
            "enabled": True,
            "metric": "psnr",
            "better": "higher",
            "patience": 4,
            "min_delta": 0.01,
            "min_iterations": iters // 2,
            "restore_best_weights": True,
        },
        "precision": {"enabled": True},
    }


def builtin_static(args: argparse.Namespace) -> dict[str, Any]:
    """A short CPU recipe on the demo data: the CPU demo's settings, denser validation."""
    return {
        "name": "static",
        "scale": 2,
        "manual_seed": 0,
        "datasets": {
            "train": {
                "name": "train",
                "type": "bicubicimagedataset",
                "dataroot_gt": str(args.data),
                "lq_size": args.lq_size,
                "batch_size_per_gpu": args.batch,
                "num_worker_per_gpu": args.workers,
            },
            "val": _val_set(args),
        },
        "network_g": {"type": args.arch},
        "train": {
            "total_iter": args.iters,
            "warmup_iter": max(1, args.iters // 12),
            "optim_g": {"type": "AdamW", "lr": 1e-3, "weight_decay": 1e-4, "betas": [0.9, 0.99]},
            "scheduler": {"type": "CosineAnnealing", "eta_min": 1e-5},
            "ema_decay": 0.99,
            "grad_clip": True,
            "grad_clip_max_norm": 1.0,
            "losses": [
                {"type": "l1loss", "loss_weight": 1.0},
                {"type": "mssimloss", "loss_weight": 0.05},
            ],
        },
        "val": {
            "val_freq": args.val_freq,
            "metrics": {
                "psnr": {"type": "calculate_psnr", "crop_border": 2},
                "ssim": {"type": "calculate_ssim", "crop_border": 2},
            },
        },
        "logger": {"print_freq": 50},
    }


def _val_set(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": "val",
        "type": "pairedimagedataset",
        "dataroot_gt": str(args.val_hr),
        "dataroot_lq": str(args.val_lq),
    }


def recipes(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    if args.static_opt is None:
        static = builtin_static(args)
        auto = copy.deepcopy(static)
        auto["train"]["automations"] = short_run_automations(args.iters)
        return {"static": static, "automations": auto}
    static, auto = read_yaml(args.static_opt), read_yaml(args.auto_opt)
    for recipe in (static, auto):
        fit_file_recipe(recipe, args)
    return {"static": static, "automations": auto}


def fit_file_recipe(recipe: dict[str, Any], args: argparse.Namespace) -> None:
    """Budget, validation and data paths of a shipped option file set for this benchmark."""
    train = recipe.setdefault("train", {})
    planned = int(train.get("total_iter", args.iters))
    train["total_iter"] = args.iters
    fraction = args.iters / max(1, planned)
    # Milestones and warmup keep their place in the (shorter) run.
    scheduler = train.get("scheduler") or {}
    if "milestones" in scheduler:
        scheduler["milestones"] = [max(1, int(m * fraction)) for m in scheduler["milestones"]]
    if int(train.get("warmup_iter", -1)) > 0:
        train["warmup_iter"] = max(1, int(train["warmup_iter"] * fraction))
    data = recipe.setdefault("datasets", {})
    data["train"]["type"] = "bicubicimagedataset"
    data["train"]["dataroot_gt"] = str(args.data)
    data["train"].pop("dataroot_lq", None)
    for key in [k for k in data if k != "train"]:
        del data[key]
    data["val"] = _val_set(args)
    recipe.setdefault("val", {})["val_freq"] = args.val_freq


def finish_recipe(
    recipe: dict[str, Any], config: str, seed: int, work: Path, device: torch.device
) -> dict[str, Any]:
    recipe = copy.deepcopy(recipe)
    recipe["name"] = f"{config}_seed{seed}"
    recipe["manual_seed"] = seed
    recipe["num_gpu"] = 0 if device.type == "cpu" else 1
    recipe.setdefault("path", {})["experiments_root"] = str(work / "experiments")
    recipe["path"]["resume_state"] = None
    logger = recipe.setdefault("logger", {})
    logger.update(use_tb_logger=True, progress_bar=False)
    logger["save_checkpoint_freq"] = recipe["train"]["total_iter"]
    recipe.setdefault("val", {})["val_enabled"] = True
    return recipe


# --------------------------------------------------------------------------- runs
@dataclass
class RunResult:
    config: str
    seed: int
    iterations: list[int] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    iterations_run: int = 0
    decisions: int = 0

    def iterations_to(self, target: float) -> int | None:
        for iteration, value in zip(self.iterations, self.psnr, strict=True):
            if value >= target:
                return iteration
        return None


def train_once(option_file: Path) -> None:
    code = trainer.main(["-opt", str(option_file)])
    if code != 0:
        raise UserError(f"train.py -opt {option_file} failed with exit code {code}; see above")


def read_curves(tb_dir: Path, result: RunResult) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    psnr_tag = next((t for t in tags if t.startswith("metrics/") and t.endswith("/psnr")), None)
    ssim_tag = next((t for t in tags if t.startswith("metrics/") and t.endswith("/ssim")), None)
    if psnr_tag is None or ssim_tag is None:
        raise UserError(f"{tb_dir}: no metrics/<set>/psnr and ssim curves (was validation on?)")
    psnr = {event.step: event.value for event in accumulator.Scalars(psnr_tag)}
    ssim = {event.step: event.value for event in accumulator.Scalars(ssim_tag)}
    result.iterations = sorted(psnr)
    result.psnr = [psnr[i] for i in result.iterations]
    result.ssim = [ssim[i] for i in result.iterations]
    if "lr" in tags:
        result.iterations_run = max(event.step for event in accumulator.Scalars("lr"))
    result.iterations_run = max([result.iterations_run, *result.iterations])


def run_all(args: argparse.Namespace, device: torch.device, work: Path) -> list[RunResult]:
    pair = recipes(args)
    results: list[RunResult] = []
    for seed in parse_int_list(args.seeds, "--seeds"):
        for config in CONFIGS:
            recipe = finish_recipe(pair[config], config, seed, work, device)
            option_file = work / f"{recipe['name']}.yml"
            option_file.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
            load_options(option_file, for_training=True)  # a bad pair fails before any run
            print(f"training {recipe['name']} for {args.iters} iterations ...", flush=True)
            train_once(option_file)
            result = RunResult(config, seed)
            read_curves(work / "tb_logger" / recipe["name"], result)
            decisions = work / "experiments" / recipe["name"] / "automations.jsonl"
            if decisions.is_file():
                result.decisions = len(decisions.read_text(encoding="utf-8").splitlines())
            results.append(result)
    return results


# ------------------------------------------------------------------------ summary
def targets_by_seed(
    results: list[RunResult], fixed: float | None, margin: float
) -> dict[int, float]:
    """The PSNR each seed's pair of runs is timed to.

    By default it is that seed's static final PSNR less `margin`: a paired comparison
    ("how long does each configuration take to get where the static recipe ends?")
    that seed-to-seed spread cannot swamp. `fixed` gives every seed the same target.
    """
    return {
        r.seed: fixed if fixed is not None else r.psnr[-1] - margin
        for r in results
        if r.config == "static"
    }


def spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.mean(values), min(values), max(values)


def seed_ratios(results: list[RunResult], targets: dict[int, float]) -> list[float | None]:
    """Per seed: automations' iterations to target / the static recipe's (None: not both)."""
    ratios: list[float | None] = []
    for seed, target in targets.items():
        pair = {r.config: r.iterations_to(target) for r in results if r.seed == seed}
        static, auto = pair.get("static"), pair.get("automations")
        ratios.append(auto / static if auto is not None and static else None)
    return ratios


def summarize(results: list[RunResult], targets: dict[int, float]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for config in CONFIGS:
        runs = [r for r in results if r.config == config]
        final_psnr = spread([r.psnr[-1] for r in runs])
        final_ssim = spread([r.ssim[-1] for r in runs])
        reached = [i for i in (r.iterations_to(targets[r.seed]) for r in runs) if i is not None]
        rows.append(
            {
                "config": config,
                "seeds": len(runs),
                "final_psnr": final_psnr[0],
                "final_psnr_range": f"{final_psnr[1]:.3f}-{final_psnr[2]:.3f}",
                "final_ssim": final_ssim[0],
                "final_ssim_range": f"{final_ssim[1]:.4f}-{final_ssim[2]:.4f}",
                "best_psnr": statistics.mean(max(r.psnr) for r in runs),
                "iters_to_target": statistics.mean(reached) if reached else None,
                "reached": f"{len(reached)}/{len(runs)}",
                "iterations_run": statistics.mean(r.iterations_run for r in runs),
                "decisions": statistics.mean(r.decisions for r in runs),
            }
        )
    ratios = seed_ratios(results, targets)
    known = [ratio for ratio in ratios if ratio is not None]
    if known:
        rows[-1]["ratio"] = statistics.mean(known)
        rows[-1]["ratio_range"] = f"{min(known):.3f}-{max(known):.3f} ({len(known)}/{len(ratios)})"
    return rows


def run_rows(results: list[RunResult], targets: dict[int, float]) -> list[dict[str, object]]:
    return [
        {
            "config": r.config,
            "seed": r.seed,
            "final_psnr": r.psnr[-1],
            "final_ssim": r.ssim[-1],
            "best_psnr": max(r.psnr),
            "target": targets[r.seed],
            "iters_to_target": r.iterations_to(targets[r.seed]),
            "iterations_run": r.iterations_run,
            "decisions": r.decisions,
        }
        for r in results
    ]


def write_curves(results: list[RunResult], path: Path) -> None:
    """Every validation point of every run, one per line (the data behind the plot)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["config", "seed", "iteration", "psnr", "ssim"])
        for r in results:
            for iteration, psnr, ssim in zip(r.iterations, r.psnr, r.ssim, strict=True):
                writer.writerow([r.config, r.seed, iteration, f"{psnr:.4f}", f"{ssim:.5f}"])


def plot(results: list[RunResult], targets: dict[int, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"static": "tab:blue", "automations": "tab:orange"}
    seeds = sorted(targets)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, metric in zip(axes, ("psnr", "ssim"), strict=True):
        for run in results:
            index = seeds.index(run.seed)
            axis.plot(
                run.iterations,
                getattr(run, metric),
                color=colors[run.config],
                alpha=0.85,
                # Static drawn wide underneath: visible where the curves coincide.
                linewidth=3.0 if run.config == "static" else 1.3,
                linestyle="-" if index == 0 else (0, (4, 1 + index)),
                label=f"{run.config} (seed {run.seed})",
            )
        if metric == "psnr":
            for index, seed in enumerate(seeds):
                axis.axhline(
                    targets[seed],
                    color="gray",
                    linewidth=0.8,
                    linestyle=":",
                    label=f"target seed {seed}: {targets[seed]:.2f} dB" if index < 4 else None,
                )
        axis.set_xlabel("iteration")
        axis.set_ylabel("validation PSNR (dB)" if metric == "psnr" else "validation SSIM")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


SUMMARY_COLUMNS = (
    Column("config", "configuration"),
    Column("seeds", "seeds", "d"),
    Column("final_psnr", "final PSNR (mean)", ".3f"),
    Column("final_psnr_range", "final PSNR (min-max)"),
    Column("final_ssim", "final SSIM (mean)", ".4f"),
    Column("final_ssim_range", "final SSIM (min-max)"),
    Column("best_psnr", "best PSNR (mean)", ".3f"),
    Column("iters_to_target", "iterations to target (mean)", ".0f"),
    Column("reached", "reached target"),
    Column("ratio", "iterations-to-target ratio vs static (mean)", ".3f"),
    Column("ratio_range", "ratio min-max (seeds)"),
    Column("iterations_run", "iterations run (mean)", ".0f"),
    Column("decisions", "automation decisions (mean)", ".1f"),
)
RUN_COLUMNS = (
    Column("config", "configuration"),
    Column("seed", "seed", "d"),
    Column("final_psnr", "final PSNR", ".3f"),
    Column("final_ssim", "final SSIM", ".4f"),
    Column("best_psnr", "best PSNR", ".3f"),
    Column("target", "target PSNR", ".3f"),
    Column("iters_to_target", "iterations to target", "d"),
    Column("iterations_run", "iterations run", "d"),
    Column("decisions", "decisions", "d"),
)


def run(args: argparse.Namespace, command: str) -> int:
    device = setup_run(args)
    with tempfile.TemporaryDirectory(prefix="convergence_") as scratch:
        work = args.work if args.work is not None else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        results = run_all(args, device, work)
    if any(not r.psnr for r in results):
        raise UserError("a run produced no validation values; raise --iters or lower --val-freq")
    targets = targets_by_seed(results, args.target_psnr, args.target_margin)
    source = (
        f"{args.static_opt} vs {args.auto_opt}"
        if args.static_opt is not None
        else f"{args.arch}, batch {args.batch}, LR crop {args.lq_size}, built-in recipes"
    )
    rule = (
        f"{args.target_psnr:.3f} dB for every seed"
        if args.target_psnr is not None
        else f"per seed: that seed's static final PSNR - {args.target_margin} dB"
    )
    notes = [
        f"{source}; data {shown_path(args.data)}; {args.iters} iterations, validation every "
        f"{args.val_freq}; seeds {args.seeds}. Target PSNR: {rule}. Ratio: per seed, "
        "iterations to target with automations / static (below 1: faster), then the mean; "
        "iterations to target are validation iterations, so their resolution is the "
        f"validation interval. Curves: {args.stem}_curves.csv, plot: {args.stem}.png.",
    ]
    write_table(
        summarize(results, targets),
        SUMMARY_COLUMNS,
        out=args.out,
        stem=args.stem,
        title="Convergence: static recipe vs recommended automations",
        device=device,
        command=command,
        notes=notes,
    )
    write_table(
        run_rows(results, targets),
        RUN_COLUMNS,
        out=args.out,
        stem=f"{args.stem}_runs",
        title="Convergence: every run",
        device=device,
        command=command,
    )
    write_curves(results, args.out / f"{args.stem}_curves.csv")
    plot(results, targets, args.out / f"{args.stem}.png", f"Validation curves ({source})")
    print(f"wrote {args.out / (args.stem + '_curves.csv')} and {args.out / (args.stem + '.png')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(lambda: run(parse_args(argv), command_line(__file__, argv)))


if __name__ == "__main__":
    sys.exit(main())
