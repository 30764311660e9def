"""Replay a signal trace through the automations of an option file (no training).

    python scripts/automations/replay.py --trace experiments/<name>/signals.jsonl \\
        -opt options/train/ParagonSR2/2x_ParagonSR2_Nano_fidelity_auto.yml --out replay/

Reads `total_iter`, the LR schedule and warmup, `val.val_freq` and the `train.automations`
blocks from the option file; writes `DIR/automations.jsonl` (the format training writes),
`DIR/knobs.png` (knob values over the trace, decisions marked) and prints a summary. The
replay is open-loop: see the note it prints.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from traiNNer.automations.decision_log import DecisionLog
from traiNNer.config.loader import load_options
from traiNNer.training.replay import OPEN_LOOP_NOTE, ReplayResult, replay
from traiNNer.training.signal_trace import read_trace
from traiNNer.utils.errors import UserError


def plot(result: ReplayResult, path: Path) -> bool:
    """knobs.png: the LR and every knob that moved, decisions as ticks. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    iterations = [it for it, _, _ in result.history]
    series: dict[str, list[float]] = {"lr": [lr for _, lr, _ in result.history]}
    labels: dict[str, list[str]] = {}  # text-valued knobs (precision): their tick labels
    for name in result.history[0][2] if result.history else {}:
        values = [knobs[name] for _, _, knobs in result.history]
        if len(set(map(str, values))) <= 1:
            continue
        if all(v is None or isinstance(v, int | float) for v in values):
            series[name] = [math.nan if v is None else float(v) for v in values]
        else:
            mapping = {v: i for i, v in enumerate(dict.fromkeys(map(str, values)))}
            series[name] = [float(mapping[str(v)]) for v in values]
            labels[name] = list(mapping)
    figure, axes = plt.subplots(len(series), 1, figsize=(10, 1.8 * len(series) + 0.6), sharex=True)
    axes = axes if len(series) > 1 else [axes]
    for axis, (name, values) in zip(axes, series.items(), strict=True):
        axis.step(iterations, values, where="post", linewidth=1.2)
        axis.set_ylabel(name, fontsize=8)
        if name == "lr" or name.startswith("clip_threshold"):
            axis.set_yscale("log")
        if name in labels:
            axis.set_yticks(range(len(labels[name])), labels[name], fontsize=8)
        for row in result.decisions:
            if row["parameter"] == name or (name == "lr" and row["parameter"] == "lr_multiplier"):
                axis.axvline(row["iteration"], color="tab:red", alpha=0.35, linewidth=0.8)
    axes[-1].set_xlabel("iteration")
    figure.suptitle("automations on the replayed trace (red: decisions)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trace", type=Path, required=True, help="signals.jsonl")
    parser.add_argument("-opt", required=True, help="option file whose automations to replay")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device-type", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args(argv)
    try:
        if not args.trace.is_file():
            raise UserError(f"--trace: {args.trace} does not exist")
        opt = load_options(args.opt, for_training=True)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / "automations.jsonl"
    jsonl.unlink(missing_ok=True)
    result = replay(
        opt, read_trace(args.trace), sink=DecisionLog(jsonl), device_type=args.device_type
    )
    print(f"replayed {result.steps:,} steps at {result.steps_per_second:,.0f} steps/s")
    counts = result.by_automation()
    for name in sorted(counts):
        print(f"  {name}: {counts[name]} decisions")
    if result.stopped_at is not None:
        print(f"  early stop at iteration {result.stopped_at:,}")
    print(result.summary)
    print(f"decisions: {jsonl}")
    png = args.out / "knobs.png"
    if plot(result, png):
        print(f"plot: {png}")
    else:
        print("plot skipped: matplotlib is not installed (pip install -e '.[bench]')")
    print(f"note: {OPEN_LOOP_NOTE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
