"""Architecture throughput: inference images/s and training steps/s at 2x, with parameter counts.

Covers every architecture in ARCH_REGISTRY by default: the ParagonSR2 ladder and the
spandrel-backed archs. Inference: one image of `--size` (default 128x128 on CPU;
traiNNer-redux publishes 640x480 on GPU), eval mode, no gradients. Training: the
framework's SRModel step (l1 loss, AdamW) on a batch already on the device. An
architecture whose first forward pass takes longer than `--max-first-call-s` is reported
from that single call and gets no training figure, so a CPU run stays in minutes.

    python scripts/benchmarks/arch_throughput.py                               # CPU
    python scripts/benchmarks/arch_throughput.py --device cuda --size 640x480 \\
        --precision bf16 --channels-last --train-batch 16 --train-lq-size 128   # GPU
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence

import torch
from bench_common import (
    PRECISIONS,
    Clock,
    Column,
    add_common_args,
    clock_for,
    command_line,
    parameter_count,
    parse_csv_list,
    positive,
    run_main,
    setup_run,
    synchronize,
    synthetic_batch,
    time_per_call,
    training_options,
    write_table,
)
from torch import nn

from traiNNer.models.precision import autocast, configured_precision
from traiNNer.models.sr_model import SRModel
from traiNNer.training.knobs import Knobs
from traiNNer.utils.dist import DistInfo
from traiNNer.utils.errors import UserError
from traiNNer.utils.registry import ARCH_REGISTRY

SCALE = 2


def parse_size(text: str) -> tuple[int, int]:
    """`WIDTHxHEIGHT` -> (height, width)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size: expected WIDTHxHEIGHT such as 640x480, got '{text}'") from None
    if width < 8 or height < 8:
        raise UserError(f"--size: both sides must be at least 8 pixels, got '{text}'")
    return height, width


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_args(parser, clock=True)
    parser.add_argument("--archs", default="all", help="comma-separated names, or all")
    parser.add_argument("--size", default="128x128", help="inference input, WIDTHxHEIGHT")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--train-batch", type=int, default=4, help="crops per training step")
    parser.add_argument("--train-lq-size", type=int, default=48, help="LR crop side")
    parser.add_argument("--iters", type=int, default=3, help="timed calls per measurement")
    parser.add_argument(
        "--max-first-call-s",
        type=float,
        default=2.0,
        help="slower first forward: report that call only, skip training (0: no limit)",
    )
    parser.add_argument("--skip-train", action="store_true", help="inference only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stem", default="arch_throughput", help="output file name stem")
    args = parser.parse_args(argv)
    for option in ("train_batch", "train_lq_size", "iters"):
        positive(getattr(args, option), "--" + option.replace("_", "-"))
    if args.max_first_call_s < 0:
        raise UserError(f"--max-first-call-s: must be >= 0, got {args.max_first_call_s}")
    return args


def arch_names(text: str) -> list[str]:
    import traiNNer.archs  # noqa: F401  (fills the registry)

    if text == "all":
        return ARCH_REGISTRY.names()
    names = [name.lower() for name in parse_csv_list(text, "--archs")]
    for name in names:
        ARCH_REGISTRY.get(name, "--archs")  # unknown name: one line listing the accepted ones
    return names


def build_model(arch: str, args: argparse.Namespace, device: torch.device) -> SRModel:
    opt = training_options(
        arch,
        batch=args.train_batch,
        lq_size=args.train_lq_size,
        precision=args.precision,
        channels_last=args.channels_last,
        ema_decay=0.0,
        grad_clip=False,
        losses=[{"type": "l1loss", "loss_weight": 1.0}],
    )
    torch.manual_seed(args.seed)
    knobs = Knobs(
        batch_size=args.train_batch, precision=configured_precision(opt.use_amp, opt.amp_bf16)
    )
    model = SRModel(opt, device, knobs, DistInfo())
    model.setup_training(args.seed)
    return model


def inference_call(model: SRModel, image: torch.Tensor) -> Callable[[], object]:
    net: nn.Module = model.bare_net_g

    def forward() -> object:
        with torch.inference_mode(), autocast(model.device, model.precision):
            return net(image)

    return forward


def training_call(model: SRModel, batch: dict[str, torch.Tensor]) -> Callable[[], object]:
    iteration = 0

    def step() -> object:
        nonlocal iteration
        iteration += 1
        return model.optimize_parameters(batch, iteration)

    return step


def first_call_seconds(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def measure(
    arch: str, args: argparse.Namespace, device: torch.device, clock: Clock
) -> dict[str, object]:
    height, width = parse_size(args.size)
    row: dict[str, object] = {"arch": arch, "input": f"{width}x{height}", "note": ""}
    model = build_model(arch, args, device)
    row["params"] = parameter_count(model.bare_net_g)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(args.seed))
    image = image.to(device)
    if args.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    model.bare_net_g.eval()
    forward = inference_call(model, image)
    first = first_call_seconds(forward, device)
    limit = args.max_first_call_s
    if limit and first > limit:
        row["infer_images_s"] = 1.0 / first
        row["note"] = f"first call {first:.1f} s > {limit:g} s: one call, no training figure"
        return row
    row["infer_images_s"] = 1.0 / time_per_call(forward, args.iters, device, clock)
    if device.type == "cuda":
        row["infer_peak_gib"] = torch.cuda.max_memory_allocated(device) / 1024**3
    if args.skip_train:
        return row
    model.bare_net_g.train()
    batch = synthetic_batch(args.train_batch, args.train_lq_size, SCALE, device, args.seed)
    step = training_call(model, batch)
    step()  # warmup: allocator, optimizer state
    row["train_steps_s"] = 1.0 / time_per_call(step, args.iters, device, clock)
    row["train_patches_s"] = row["train_steps_s"] * args.train_batch  # type: ignore[operator]
    return row


COLUMNS = (
    Column("arch", "arch"),
    Column("params", "params", ","),
    Column("input", "inference input"),
    Column("infer_images_s", "inference images/s", ".2f"),
    Column("infer_peak_gib", "inference peak GiB", ".2f"),
    Column("train_steps_s", "training steps/s", ".2f"),
    Column("train_patches_s", "training patches/s", ".1f"),
    Column("note", "note"),
)


def run(args: argparse.Namespace, command: str) -> int:
    device = setup_run(args)
    clock, clock_name = clock_for(device, args.clock)
    logging.getLogger("traiNNer").setLevel(logging.WARNING)
    rows = []
    for arch in arch_names(args.archs):
        print(f"measuring {arch} ...", flush=True)
        rows.append(measure(arch, args, device, clock))
    columns = [c for c in COLUMNS if any(row.get(c.key) not in (None, "") for row in rows)]
    write_table(
        rows,
        columns,
        out=args.out,
        stem=args.stem,
        title=f"Architecture throughput at {SCALE}x",
        device=device,
        command=command,
        notes=[
            f"{args.precision}{', channels_last' if args.channels_last else ''}; inference: "
            f"batch 1, mean over {args.iters} calls after one warmup call; "
            f"training: SRModel step (l1, AdamW), batch {args.train_batch} of "
            f"{args.train_lq_size}x{args.train_lq_size} LR crops; timed in {clock_name}.",
        ],
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(lambda: run(parse_args(argv), command_line(__file__, argv)))


if __name__ == "__main__":
    sys.exit(main())
