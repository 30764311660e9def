"""Framework overhead: a training step through `SRModel` versus a bare PyTorch loop.

Both sides train the same network from the same initial weights on the same batch,
already on the device, with the same precision, losses (l1 + MS-SSIM), AdamW,
gradient-norm clipping and EMA. The framework side is what `train.py` runs each
iteration: `update_learning_rate`, `optimize_parameters` (with an automation
controller attached, no automation enabled) and `pop_actions`. Warmup steps are
excluded, the two sides alternate every repeat, and the figure is the median of the
per-repeat ratios. Goal: ratio <= 1.05.

    python scripts/benchmarks/framework_overhead.py                      # CPU, small
    python scripts/benchmarks/framework_overhead.py --device cuda --batch 32 \\
        --lq-size 128 --precision bf16 --channels-last --steps 50         # GPU-sized
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

import torch
from bench_common import (
    PRECISIONS,
    Clock,
    Column,
    add_common_args,
    clock_for,
    command_line,
    interleaved_timings,
    median,
    paired_ratios,
    parameter_count,
    parse_csv_list,
    positive,
    run_main,
    setup_run,
    synthetic_batch,
    training_options,
    write_table,
)
from torch import nn

from traiNNer.automations.controller import AutomationController
from traiNNer.automations.decision_log import DecisionLog
from traiNNer.losses import build_loss
from traiNNer.models.precision import AMP_DTYPES, configured_precision
from traiNNer.models.sr_model import SRModel, build_network
from traiNNer.training.knobs import Knobs, Precision
from traiNNer.utils.dist import DistInfo
from traiNNer.utils.errors import UserError

GOAL = 1.05


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_args(parser, clock=True)
    parser.add_argument("--archs", default="paragonsr2_nano,paragonsr2_s")
    parser.add_argument("--batch", type=int, default=8, help="crops per step")
    parser.add_argument("--lq-size", type=int, default=48, help="LR crop side")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--ema-decay", type=float, default=0.999, help="0 turns EMA off")
    parser.add_argument("--no-grad-clip", action="store_true")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per side")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stem", default="framework_overhead", help="output file name stem")
    args = parser.parse_args(argv)
    for option in ("batch", "lq_size", "steps", "repeats"):
        positive(getattr(args, option), "--" + option.replace("_", "-"))
    if args.warmup < 0:
        raise UserError(f"--warmup: must be >= 0, got {args.warmup}")
    if not 0 <= args.ema_decay < 1:
        raise UserError(f"--ema-decay: must lie in [0, 1), got {args.ema_decay}")
    return args


class BareLoop:
    """The step a user would write by hand: no framework object on the path."""

    def __init__(
        self,
        net: nn.Module,
        losses: list[tuple[nn.Module, float]],
        *,
        device: torch.device,
        precision: Precision,
        channels_last: bool,
        ema_decay: float,
        clip_norm: float | None,
    ) -> None:
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.losses = losses
        self.device = device
        self.dtype = AMP_DTYPES[precision]
        self.channels_last = channels_last
        self.clip_norm = clip_norm
        self.params: list[torch.Tensor] = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=2e-4, weight_decay=1e-4, betas=(0.9, 0.99)
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.ema_decay = ema_decay
        self.ema_params = [p.detach().clone() for p in self.params] if ema_decay > 0 else []
        self.steps = 0

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        lq, gt = batch["lq"], batch["gt"]
        if self.channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            sr = self.net(lq)
        sr = sr.float()
        total = sum(weight * module(sr, gt) for module, weight in self.losses)
        assert isinstance(total, torch.Tensor)
        self.scaler.scale(total).backward()
        if self.clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        if self.ema_params:
            # ema-pytorch's warm-up at power 10, as the framework's EMA: a copy first.
            k = self.steps - 1
            decay = min(self.ema_decay, 1.0 - (1.0 + k) ** -10.0) if k > 0 else 0.0
            with torch.no_grad():
                torch._foreach_lerp_(self.ema_params, self.params, 1.0 - decay)


def framework_step(model: SRModel, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    """What train.py does each iteration once the batch is on the device."""
    controller = model.observer
    assert isinstance(controller, AutomationController)
    iteration = 0

    def step() -> None:
        nonlocal iteration
        model.update_learning_rate(iteration)
        model.optimize_parameters(batch, iteration + 1)
        controller.pop_actions()
        iteration += 1

    return step


def build_framework_model(
    arch: str, args: argparse.Namespace, device: torch.device
) -> tuple[SRModel, nn.Module]:
    """The framework's model and a separate copy of its initial network for the bare loop."""
    opt = training_options(
        arch,
        batch=args.batch,
        lq_size=args.lq_size,
        precision=args.precision,
        channels_last=args.channels_last,
        ema_decay=args.ema_decay,
        grad_clip=not args.no_grad_clip,
    )
    torch.manual_seed(args.seed)
    knobs = Knobs(batch_size=args.batch, precision=configured_precision(opt.use_amp, opt.amp_bf16))
    model = SRModel(opt, device, knobs, DistInfo())
    model.setup_training(args.seed)
    model.observer = AutomationController(None, knobs, DecisionLog(None))
    bare_net = build_network(arch, opt.scale, {}).to(device)
    bare_net.load_state_dict(model.bare_net_g.state_dict())
    return model, bare_net


def bare_losses(model: SRModel, device: torch.device) -> list[tuple[nn.Module, float]]:
    """Fresh instances of the configured losses (same classes and arguments)."""
    assert model.opt.train is not None
    losses: list[tuple[nn.Module, float]] = []
    for entry in model.opt.train.losses:
        kwargs = {k: v for k, v in entry.items() if k not in ("type", "loss_weight")}
        if entry["loss_weight"] != 0:
            module = build_loss(entry["type"], kwargs).to(device)
            losses.append((module, abs(entry["loss_weight"])))
    return losses


def measure(
    arch: str, args: argparse.Namespace, device: torch.device, clock: Clock
) -> dict[str, object]:
    model, bare_net = build_framework_model(arch, args, device)
    assert model.opt.train is not None
    bare = BareLoop(
        bare_net,
        bare_losses(model, device),
        device=device,
        precision=args.precision,
        channels_last=args.channels_last,
        ema_decay=args.ema_decay,
        clip_norm=None if args.no_grad_clip else model.opt.train.grad_clip_max_norm,
    )
    batch = synthetic_batch(args.batch, args.lq_size, model.opt.scale, device, args.seed)
    timings = interleaved_timings(
        {"framework": framework_step(model, batch), "bare": lambda: bare.step(batch)},
        warmup=args.warmup,
        steps=args.steps,
        repeats=args.repeats,
        device=device,
        clock=clock,
    )
    ratios = paired_ratios(timings["framework"], timings["bare"])
    ratio = median(ratios)
    return {
        "arch": arch,
        "params": parameter_count(bare_net),
        "batch": args.batch,
        "lq_size": args.lq_size,
        "precision": args.precision,
        "framework_ms": 1000 * median(timings["framework"]),
        "bare_ms": 1000 * median(timings["bare"]),
        "ratio": ratio,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "goal_met": "yes" if ratio <= GOAL else "no",
    }


COLUMNS = (
    Column("arch", "arch"),
    Column("params", "params", ","),
    Column("batch", "batch", "d"),
    Column("lq_size", "LR crop", "d"),
    Column("precision", "precision"),
    Column("framework_ms", "SRModel ms/step", ".2f"),
    Column("bare_ms", "bare loop ms/step", ".2f"),
    Column("ratio", "ratio (median)", ".3f"),
    Column("ratio_min", "ratio min", ".3f"),
    Column("ratio_max", "ratio max", ".3f"),
    Column("goal_met", f"<= {GOAL}"),
)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(lambda: run(parse_args(argv), command_line(__file__, argv)))


def run(args: argparse.Namespace, command: str) -> int:
    device = setup_run(args)
    clock, clock_name = clock_for(device, args.clock)
    logging.getLogger("traiNNer").setLevel(logging.WARNING)
    rows = [measure(arch, args, device, clock) for arch in parse_csv_list(args.archs, "--archs")]
    write_table(
        rows,
        COLUMNS,
        out=args.out,
        stem=args.stem,
        title="Framework overhead: SRModel step vs bare PyTorch loop",
        device=device,
        command=command,
        notes=[
            f"{args.repeats} repeats of {args.steps} steps per side after {args.warmup} "
            f"warmup steps, sides alternating, timed in {clock_name}; ratio = median of "
            "per-repeat SRModel/bare ratios (min and max show the spread).",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
