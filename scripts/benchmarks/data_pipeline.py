"""Data pipeline: training patches per second of each dataset type, per worker count.

Reads batches through the trainer's own stream (`TrainBatches`: sampler, per-sample
seeding, DataLoader workers) from an HR folder (default: the demo dataset). The paired
dataset needs LR images: unless `--lq-folder` is given they are made once, by bicubic
downscaling, in a temporary folder. Worker start-up is excluded (warmup batches);
timing is wall time, since the workers are other processes. Compare the figures with
the patches/s a training step consumes (arch_throughput.py) to see whether the loader
can keep up.

    python scripts/benchmarks/data_pipeline.py                                    # CPU
    python scripts/benchmarks/data_pipeline.py --data /data/hr --workers 0,4,8,16 \\
        --batch 32 --lq-size 128                                                   # GPU box
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from bench_common import (
    ROOT,
    Column,
    add_common_args,
    command_line,
    parse_csv_list,
    parse_int_list,
    positive,
    run_main,
    setup_run,
    write_table,
)

from traiNNer.config.schema import DatasetOptions
from traiNNer.config.validation import convert
from traiNNer.data import build_dataset
from traiNNer.data.image_io import is_image_file, read_image, write_image
from traiNNer.data.resize import bicubic_downscale
from traiNNer.training.batches import TrainBatches
from traiNNer.utils.errors import UserError

SCALE = 2
DATASET_TYPES = ("pairedimagedataset", "bicubicimagedataset")
DEMO_HR = ROOT / "datasets" / "demo" / "train" / "hr"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--data", type=Path, default=DEMO_HR, help="folder of HR images")
    parser.add_argument(
        "--lq-folder", type=Path, default=None, help="2x LR images for pairedimagedataset"
    )
    parser.add_argument("--types", default=",".join(DATASET_TYPES))
    parser.add_argument("--workers", default="0,1,2", help="worker counts to compare")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lq-size", type=int, default=48, help="LR crop side")
    parser.add_argument("--warmup-batches", type=int, default=3)
    parser.add_argument("--batches", type=int, default=30, help="timed batches")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stem", default="data_pipeline", help="output file name stem")
    args = parser.parse_args(argv)
    for option in ("batch", "lq_size", "batches"):
        positive(getattr(args, option), "--" + option.replace("_", "-"))
    if args.warmup_batches < 0:
        raise UserError(f"--warmup-batches: must be >= 0, got {args.warmup_batches}")
    return args


def hr_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        hint = " (build it: python scripts/prepare_demo_dataset.py)" if folder == DEMO_HR else ""
        raise UserError(f"--data: {folder} is not a folder{hint}")
    images = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    if not images:
        raise UserError(f"--data: {folder} holds no images")
    return images


def make_lq_folder(hr_folder: Path, target: Path) -> Path:
    """2x bicubic LR of every HR image, same relative names (HR cropped to even sizes)."""
    for hr_path in hr_images(hr_folder):
        image = read_image(hr_path)
        height, width = image.shape[-2:]
        image = image[:, : height - height % SCALE, : width - width % SCALE]
        relative = hr_path.relative_to(hr_folder).with_suffix(".png")
        write_image(bicubic_downscale(image, SCALE), target / relative)
    return target


def dataset_options(
    dataset_type: str, args: argparse.Namespace, workers: int, lq_folder: Path | None
) -> DatasetOptions:
    data: dict[str, Any] = {
        "type": dataset_type,
        "dataroot_gt": str(args.data),
        "lq_size": args.lq_size,
        "batch_size_per_gpu": args.batch,
        "num_worker_per_gpu": workers,
    }
    if dataset_type == "pairedimagedataset":
        data["dataroot_lq"] = str(lq_folder)
    return convert(data, DatasetOptions, "datasets.train")


def measure(
    dataset_type: str,
    workers: int,
    args: argparse.Namespace,
    device: torch.device,
    lq_folder: Path | None,
) -> dict[str, object]:
    opt = dataset_options(dataset_type, args, workers, lq_folder)
    dataset = build_dataset(opt, SCALE, "train", key="train")
    batches = TrainBatches(dataset, opt, args.batch, seed=args.seed, use_cuda=device.type == "cuda")
    try:
        for _ in range(args.warmup_batches):
            next(batches)
        start = time.perf_counter()
        for _ in range(args.batches):
            batch = next(batches)
            if device.type == "cuda":  # the copy the trainer makes
                batch["lq"].to(device, non_blocking=True)
                batch["gt"].to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        del batches  # stops the worker processes before the next configuration
        gc.collect()
    return {
        "type": dataset_type,
        "workers": workers,
        "images": len(dataset),  # type: ignore[arg-type]
        "batch": args.batch,
        "lq_size": args.lq_size,
        "patches_s": args.batches * args.batch / seconds,
        "ms_per_batch": 1000 * seconds / args.batches,
    }


COLUMNS = (
    Column("type", "dataset type"),
    Column("workers", "workers", "d"),
    Column("images", "images", "d"),
    Column("batch", "batch", "d"),
    Column("lq_size", "LR crop", "d"),
    Column("patches_s", "patches/s", ".1f"),
    Column("ms_per_batch", "ms/batch", ".1f"),
)


def run(args: argparse.Namespace, command: str) -> int:
    device = setup_run(args)
    logging.getLogger("traiNNer").setLevel(logging.WARNING)
    types = [name.lower() for name in parse_csv_list(args.types, "--types")]
    for name in types:
        if name not in DATASET_TYPES:
            raise UserError(f"--types: unknown '{name}' (accepted: {', '.join(DATASET_TYPES)})")
    workers = parse_int_list(args.workers, "--workers")
    if any(count < 0 for count in workers):
        raise UserError(f"--workers: counts must be >= 0, got {args.workers}")
    hr_images(args.data)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench_lq_") as scratch:
        lq_folder = args.lq_folder
        if "pairedimagedataset" in types and lq_folder is None:
            lq_folder = make_lq_folder(args.data, Path(scratch) / "lr_x2")
        for name in types:
            for count in workers:
                print(f"measuring {name} with {count} worker(s) ...", flush=True)
                rows.append(measure(name, count, args, device, lq_folder))
    write_table(
        rows,
        COLUMNS,
        out=args.out,
        stem=args.stem,
        title="Data pipeline: training patches per second",
        device=device,
        command=command,
        notes=[
            f"{args.batches} batches timed (wall time) after {args.warmup_batches} warmup "
            f"batches, through TrainBatches (the trainer's stream) from {args.data.name}/; "
            "a patch is one LR/HR crop pair with random flips and rotations.",
        ],
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(lambda: run(parse_args(argv), command_line(__file__, argv)))


if __name__ == "__main__":
    sys.exit(main())
