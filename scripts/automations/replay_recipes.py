"""Replay the ParagonSR2 `_auto` recipes on traces shaped like their runs (docs figures).

    python scripts/automations/replay_recipes.py            # prints the tables
    python scripts/automations/replay_recipes.py --images docs/images

For Nano (60k iterations) and S (100k) it builds two seeded synthetic traces of the
recipe's length: a healthy run (the scenario curves, with the PSNR gain and loss drop
that each MultiStepLR milestone gives) and a troubled one (the same, plus a PSNR
plateau from 40% of the run, an unbroken burst of NaN steps and gradient norms that
triple over the run). Each is replayed through the recipe's own automations; the
script prints, per trace, the decisions per automation and every decision that is not
a routine snapshot, and with --images writes the knob plots that docs/automations.md
shows (`replay_<recipe>_<trace>.png`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.automations.make_trace import TraceSpec, synthetic_trace
from scripts.automations.replay import plot
from traiNNer.config.loader import load_options
from traiNNer.training.replay import ReplayResult, replay

ROOT = Path(__file__).resolve().parents[2]
RECIPES = {
    "nano": ROOT / "options/train/ParagonSR2/2x_ParagonSR2_Nano_fidelity_auto.yml",
    "s": ROOT / "options/train/ParagonSR2/2x_ParagonSR2_S_fidelity_auto.yml",
}
ROUTINE = {"save_good_state"}  # decisions left out of the printed list (counted only)


def traces(total_iter: int, milestones: list[int]) -> dict[str, TraceSpec]:
    healthy = TraceSpec(steps=total_iter, seed=1, val_every=1000, lr_drops=tuple(milestones))
    burst_at = int(total_iter * 0.55)
    troubled = replace(
        healthy,
        metric_plateau_at=int(total_iter * 0.4),
        nan_at=tuple(range(burst_at, burst_at + 4)),
        grad_drift=3.0,
    )
    return {"healthy": healthy, "troubled": troubled}


def describe(name: str, trace: str, result: ReplayResult) -> str:
    lines = [f"### {name}, {trace} trace ({result.steps:,} steps replayed)", ""]
    counts = result.by_automation()
    lines.append(
        "decisions per automation: "
        + (", ".join(f"{a} {n}" for a, n in sorted(counts.items())) or "none")
    )
    if result.stopped_at is not None:
        lines.append(f"stopped at iteration {result.stopped_at:,}")
    lines.append("")
    for row in result.decisions:
        if row["parameter"] in ROUTINE:
            continue
        lines.append(
            f"- {row['iteration']:>7,} {row['automation']}.{row['parameter']}: "
            f"{row['old']} -> {row['new']} ({row['reason']})"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=Path, help="folder for replay_<recipe>_<trace>.png")
    args = parser.parse_args(argv)
    for name, path in RECIPES.items():
        opt = load_options(path, for_training=True)
        assert opt.train is not None and opt.train.scheduler is not None
        milestones = [int(m) for m in opt.train.scheduler.get("milestones", [])]
        for trace, spec in traces(opt.train.total_iter, milestones).items():
            result = replay(opt, synthetic_trace(spec))
            print(describe(path.name, trace, result))
            if args.images is not None:
                args.images.mkdir(parents=True, exist_ok=True)
                plot(result, args.images / f"replay_{name}_{trace}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
