"""Automation overhead: the same SRModel training step with every automation on versus off.

Three contenders per architecture, each its own model from the same initial weights,
stepping the same batch already on the device:
- `off`: no automation (train.py still attaches an empty controller);
- `automations`: all ten automations enabled through `AutomationController`, wired as
  in train.py (`model.observer = controller`, `on_train_start`, actions performed);
- `automations+dls`: the same plus dynamic loss scheduling (balance mode).

Interval-driven automations get `--interval` (default 25: four times as often as the
shipped option files) so that every timed window includes their interval work.
Startup searches (optimizer race, batch-size search) run once before training and
validation-driven hooks run at validation, so neither is part of a step; see
docs/benchmarks.md. Repeats rotate the order of the contenders to cancel drift of a
shared machine; figures are medians. Goal: ratio <= 1.02.

    python scripts/benchmarks/automation_overhead.py                      # CPU, small
    python scripts/benchmarks/automation_overhead.py --device cuda --batch 32 \\
        --lq-size 128 --precision bf16 --steps 100                         # GPU-sized
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
    parse_csv_list,
    positive,
    run_main,
    setup_run,
    synthetic_batch,
    training_options,
    write_table,
)

import train as trainer
from traiNNer.automations.base import Decision, Knobs
from traiNNer.automations.controller import AutomationController
from traiNNer.models.sr_model import SRModel
from traiNNer.training.best_metrics import BestMetrics
from traiNNer.utils.dist import DistInfo
from traiNNer.utils.errors import UserError
from traiNNer.utils.logger import TensorBoard

GOAL = 1.02
CONTENDERS = ("off", "automations", "automations+dls")
log = logging.getLogger("traiNNer.benchmarks")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_common_args(parser, clock=True)
    parser.add_argument("--archs", default="paragonsr2_nano,paragonsr2_s")
    parser.add_argument("--batch", type=int, default=4, help="crops per step")
    parser.add_argument("--lq-size", type=int, default=32, help="LR crop side")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument(
        "--interval", type=int, default=25, help="interval of every interval-driven automation"
    )
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per contender")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stem", default="automation_overhead", help="output file name stem")
    args = parser.parse_args(argv)
    for option in ("batch", "lq_size", "interval", "steps", "repeats"):
        positive(getattr(args, option), "--" + option.replace("_", "-"))
    if args.warmup < 0:
        raise UserError(f"--warmup: must be >= 0, got {args.warmup}")
    return args


def every_automation(interval: int) -> dict[str, Any]:
    """All ten automations on; intervals set to `interval`, values that keep the recipe.

    Augmentation scheduling needs MoA, which runs here with the `none` augmentation
    only: the measured cost is the automation's, not that of mixing images.
    """
    return {
        "lr_scheduling": {
            "enabled": True,
            "monitor_train_loss": True,
            "check_interval": interval,
            "patience": 4 * interval,
            "metric": "psnr",
        },
        "batch_size": {"enabled": True, "search": False},
        "adaptive_gradient_clipping": {
            "enabled": True,
            "mode": "zscore",
            "initial_threshold": 1.0,
            "min_threshold": 0.001,
            "max_threshold": 10.0,
            "adjustment_factor": 1.2,
            "monitoring_frequency": interval,
            "gradient_history_size": max(2 * interval, 100),
            "detailed_logging": False,
            "warmup_steps": interval,
            "cooldown": interval,
        },
        "early_stopping": {"enabled": True, "metric": "psnr"},
        "precision": {"enabled": True, "check_interval": interval},
        "validation_frequency": {"enabled": True},
        "augmentation_scheduling": {
            "enabled": True,
            "schedule": "constant",
            "end_prob": 1.0,
            "update_interval": interval,
        },
        "optimizer_selection": {"enabled": True},
        "regularization_scheduling": {
            "enabled": True,
            "start": 1e-4,
            "end": 1e-3,
            "update_interval": interval,
        },
        "multi_metric_lr": {
            "enabled": True,
            "metrics": {"psnr": {"better": "higher"}, "ssim": {"better": "higher"}},
            "compound_with_lr_scheduling": True,  # every automation on, to time them all
        },
    }


def train_extra(contender: str, interval: int) -> dict[str, Any]:
    extra: dict[str, Any] = {"use_moa": True, "moa_augs": ["none"], "moa_probs": [1.0]}
    if contender != "off":
        extra["automations"] = every_automation(interval)
    if contender == "automations+dls":
        extra["dynamic_loss_scheduling"] = {
            "enabled": True,
            "mode": "balance",
            "baseline_iterations": interval,
            "update_interval": interval,
        }
    return extra


class CountingSink:
    """A decision sink that counts what the automations did (proof they were active)."""

    def __init__(self) -> None:
        self.decisions = 0
        self.scalar_reports = 0

    def decision(self, iteration: int, decision: Decision, level: int = logging.INFO) -> None:
        self.decisions += 1

    def scalars(self, iteration: int, automation: str, values: Mapping[str, float]) -> None:
        self.scalar_reports += 1


class HookTimer:
    """Adds up the time spent inside the automation code itself.

    The step-time ratio is the figure the goal is about, but on a shared machine its
    noise is a few percent; the time inside the hooks is a direct measurement of
    what the automations add, far below that noise.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.seconds = 0.0

    def wrap(self, owner: object, method: str) -> None:
        """Replace `owner.method` by a timed call of the original."""
        original = getattr(owner, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = self.clock()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += self.clock() - start

        setattr(owner, method, timed)


class Contender:
    """One model + controller, stepped as train.py steps it."""

    def __init__(
        self,
        contender: str,
        arch: str,
        args: argparse.Namespace,
        device: torch.device,
        clock: Clock,
    ) -> None:
        opt = training_options(
            arch,
            batch=args.batch,
            lq_size=args.lq_size,
            precision=args.precision,
            channels_last=args.channels_last,
            train_extra=train_extra(contender, args.interval),
        )
        assert opt.train is not None
        torch.manual_seed(args.seed)
        knobs = Knobs.from_options(opt)
        self.model = SRModel(opt, device, knobs, DistInfo())
        self.model.setup_training(args.seed)
        self.sink = CountingSink()
        self.controller = AutomationController(opt.train.automations, knobs, self.sink)
        self.model.observer = self.controller
        self.controller.on_train_start(trainer.train_info(opt, self.model, device, DistInfo(), 0))
        self.best = BestMetrics(opt)
        self.tb = TensorBoard(None)
        self.batch = synthetic_batch(args.batch, args.lq_size, opt.scale, device, args.seed)
        self.iteration = 0
        # Every call into automation code during a step: the controller's per-step hooks
        # (interval work included) and the dynamic loss scheduler's.
        self.hooks = HookTimer(clock)
        for method in ("observe_step", "on_nonfinite", "pop_actions"):
            self.hooks.wrap(self.controller, method)
        if self.model.learned_weights is not None:
            for method in ("weighted_sum", "observe"):
                self.hooks.wrap(self.model.learned_weights, method)

    @property
    def hook_us_per_step(self) -> float:
        return 1e6 * self.hooks.seconds / max(1, self.iteration)

    @property
    def enabled_automations(self) -> int:
        return len(self.controller.automations)

    def step(self) -> None:
        model, iteration = self.model, self.iteration
        model.update_learning_rate(iteration)
        model.optimize_parameters(self.batch, iteration + 1)
        self.iteration = iteration + 1
        # Actions (weight restores) are the trainer's work, not the automations' overhead.
        self.controller.pop_actions()


def measure(
    arch: str, args: argparse.Namespace, device: torch.device, clock: Clock
) -> list[dict[str, object]]:
    contenders = {name: Contender(name, arch, args, device, clock) for name in CONTENDERS}
    steps: dict[str, Callable[[], object]] = {
        name: contender.step for name, contender in contenders.items()
    }
    timings = interleaved_timings(
        steps,
        warmup=args.warmup,
        steps=args.steps,
        repeats=args.repeats,
        device=device,
        clock=clock,
    )
    rows: list[dict[str, object]] = []
    for name, contender in contenders.items():
        ratios = paired_ratios(timings[name], timings["off"])
        ratio = median(ratios)
        rows.append(
            {
                "arch": arch,
                "contender": name,
                "automations": contender.enabled_automations,
                "ms_per_step": 1000 * median(timings[name]),
                "hook_us": contender.hook_us_per_step,
                "hook_share": contender.hook_us_per_step / (1e6 * median(timings[name])),
                "ratio": ratio,
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "decisions": contender.sink.decisions,
                "scalar_reports": contender.sink.scalar_reports,
                "goal_met": None if name == "off" else ("yes" if ratio <= GOAL else "no"),
            }
        )
    return rows


COLUMNS = (
    Column("arch", "arch"),
    Column("contender", "automations"),
    Column("automations", "enabled", "d"),
    Column("ms_per_step", "ms/step", ".2f"),
    Column("hook_us", "in automation code, us/step", ".0f"),
    Column("hook_share", "share of the step", ".2%"),
    Column("ratio", "ratio vs off (median)", ".3f"),
    Column("ratio_min", "ratio min", ".3f"),
    Column("ratio_max", "ratio max", ".3f"),
    Column("decisions", "decisions", "d"),
    Column("scalar_reports", "interval reports", "d"),
    Column("goal_met", f"<= {GOAL}"),
)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(lambda: run(parse_args(argv), command_line(__file__, argv)))


def run(args: argparse.Namespace, command: str) -> int:
    device = setup_run(args)
    clock, clock_name = clock_for(device, args.clock)
    logging.getLogger("traiNNer").setLevel(logging.WARNING)
    rows = [
        row
        for arch in parse_csv_list(args.archs, "--archs")
        for row in measure(arch, args, device, clock)
    ]
    write_table(
        rows,
        COLUMNS,
        out=args.out,
        stem=args.stem,
        title="Automation overhead: SRModel step with every automation on vs off",
        device=device,
        command=command,
        notes=[
            f"batch {args.batch}, LR crop {args.lq_size}, {args.precision}; interval-driven "
            f"automations every {args.interval} iterations; {args.repeats} repeats of "
            f"{args.steps} steps per contender after {args.warmup} warmup steps, order "
            f"rotated each repeat, timed in {clock_name}; ratio = median of per-repeat ratios to `off`. "
            "`in automation code` is the time measured inside the automation hooks "
            "(controller and dynamic loss scheduler calls), averaged over every step; "
            "`decisions` and `interval reports` count what the automations did "
            "(warmup included).",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
