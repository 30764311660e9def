"""Dynamic loss weighting vs fixed weights on the demo dataset, same seed and budget.

For each mode (fixed, dwa, uncertainty, balance) trains the demo recipe with
l1 + ms-ssim + fft losses through train.py and reports the final validation
PSNR/SSIM and the final loss weights. Writes loss_weighting.csv/.md to --out.

    python scripts/benchmarks/loss_weighting.py --iters 600 --seed 1024
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "options/train/ParagonSR2/2x_ParagonSR2_Nano_demo_cpu.yml"
MODES = ("fixed", "dwa", "uncertainty", "balance")


def options_for(mode: str, iters: int, seed: int, workdir: Path) -> dict[str, Any]:
    options = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    options = copy.deepcopy(options)
    options["name"] = f"loss_weighting_{mode}"
    options["manual_seed"] = seed
    options["path"] = {"experiments_root": str(workdir / "experiments")}
    for dataset in options["datasets"].values():
        for key in ("dataroot_gt", "dataroot_lq"):
            if key in dataset:
                dataset[key] = str(ROOT / dataset[key])
    train = options["train"]
    train["total_iter"] = iters
    train["losses"] = [
        {"type": "l1loss", "loss_weight": 1.0},
        {"type": "mssimloss", "loss_weight": 0.05},
        {"type": "fftloss", "loss_weight": 0.05},
    ]
    if mode != "fixed":
        train["dynamic_loss_scheduling"] = {
            "enabled": True,
            "mode": mode,
            "baseline_iterations": iters // 10,
            "update_interval": max(1, iters // 30),
        }
    options["val"]["val_freq"] = iters
    options["logger"]["save_checkpoint_freq"] = iters
    options["logger"]["print_freq"] = max(1, iters // 6)
    return options


def final_result(experiment: Path, iters: int) -> dict[str, Any]:
    import torch

    state = torch.load(experiment / "training_states" / f"{iters}.state", weights_only=True)
    values = state["best_metrics"]["values"]
    scheduler = state["model"]["loss_scheduler"]
    weights = ""
    if scheduler is not None:  # multipliers of the configured weights
        multipliers = scheduler["multipliers"]
        if scheduler["mode"] == "uncertainty":  # learned: weight x exp(-log-variance)
            multipliers = torch.exp(-scheduler["log_variances"]).tolist()
        pairs = zip(scheduler["names"], multipliers, strict=True)
        weights = ", ".join(f"{name} x{float(m):.3f}" for name, m in pairs)
    psnr = next((v for k, v in values.items() if k.endswith("/psnr")), float("nan"))
    ssim = next((v for k, v in values.items() if k.endswith("/ssim")), float("nan"))
    return {"psnr": psnr, "ssim": ssim, "weights": weights}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--iters", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1024)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument(
        "--workdir", type=Path, default=ROOT / "experiments" / "bench_loss_weighting"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for mode in args.modes:
        option_file = args.workdir / f"{mode}.yml"
        option_file.write_text(
            yaml.safe_dump(options_for(mode, args.iters, args.seed, args.workdir))
        )
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), "-opt", str(option_file)],
            cwd=args.workdir,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            print(result.stderr[-2000:], file=sys.stderr)
            return result.returncode
        row = {
            "mode": mode,
            **final_result(args.workdir / "experiments" / f"loss_weighting_{mode}", args.iters),
        }
        row["wall_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(json.dumps(row))
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "loss_weighting.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| mode | PSNR (dB) | SSIM | final weight multipliers | wall (s) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['mode']} | {r['psnr']:.3f} | {r['ssim']:.4f} | {r['weights'] or 'configured'} | {r['wall_s']} |"
        for r in rows
    ]
    (args.out / "loss_weighting.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
