"""Write a synthetic signal trace (signals.jsonl) for `replay.py` and the scenario suite.

    python scripts/automations/make_trace.py --steps 200000 --seed 1 --out trace.jsonl
    python scripts/automations/make_trace.py --loss-plateau-at 60000 --nan-at 40000 41000 ...

Defaults are shaped like a ParagonSR2 Nano L1 run: loss `0.028 + 0.012 (1 + t/2000)^-0.6`
with lognormal noise (sigma 0.3), gradient norm around 0.05 with its own noise, PSNR
`33 - (1 + t/3000)^-0.7` with 0.005 dB noise. Flags add plateaus, spikes, NaN steps, an fp16
loss-scale collapse, gradient-norm drift, a metric plateau and overfitting. Seeded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class TraceSpec:
    steps: int = 200_000
    seed: int = 0
    # Training loss: floor + amp * (1 + t / t0) ** -power, times lognormal noise.
    loss_floor: float = 0.028
    loss_amp: float = 0.012
    loss_t0: float = 2000.0
    loss_power: float = 0.6
    loss_sigma: float = 0.3
    # From this iteration the noise-free loss stays where it is (a real plateau).
    loss_plateau_at: int | None = None
    # Gradient norm: base times a linear drift to `grad_drift` x at the end, lognormal noise.
    grad_norm: float = 0.05
    grad_sigma: float = 0.2
    grad_drift: float = 1.0
    # Iterations whose gradient norm (and loss) jumps by spike_factor.
    spikes: Sequence[int] = ()
    spike_factor: float = 20.0
    # Iterations whose loss is NaN (the step is skipped: finite false).
    nan_at: Sequence[int] = ()
    # fp16: a loss scale in every step; from `scale_collapse_at` overflowing steps halve it
    # (`scale_collapse_steps` of them, gradient norm inf, the loss itself finite).
    fp16: bool = False
    scale_collapse_at: int | None = None
    scale_collapse_steps: int = 12
    # Validation metric (PSNR, dB): final - amp * (1 + t / t0) ** -power, Gaussian noise.
    val_every: int = 250
    psnr_final: float = 33.0
    psnr_amp: float = 1.0
    psnr_t0: float = 3000.0
    psnr_power: float = 0.7
    psnr_noise: float = 0.005
    # From this iteration the noise-free metric stays where it is.
    metric_plateau_at: int | None = None
    # From this iteration the metric falls by overfit_rate dB per 10k iterations.
    overfit_at: int | None = None
    overfit_rate: float = 0.05
    nan_metric_at: Sequence[int] = ()
    # What a step schedule's LR drop (MultiStepLR milestones) does to the curves: from each
    # of these iterations on, PSNR gains lr_drop_psnr dB and the loss is x lr_drop_loss.
    lr_drops: Sequence[int] = ()
    lr_drop_psnr: float = 0.04
    lr_drop_loss: float = 0.98
    # More losses: name -> share of the noise-free l1, each with its own lognormal noise
    # (loss_sigma); a name in stalled_losses stays at its share of the starting l1.
    extra_losses: dict[str, float] = field(default_factory=dict)
    stalled_losses: Sequence[str] = ()


def _held(t: np.ndarray, at: int | None) -> np.ndarray:
    return t if at is None else np.minimum(t, at)


def _drops_passed(spec: TraceSpec, t: np.ndarray) -> np.ndarray:
    return sum((t >= at).astype(np.float64) for at in spec.lr_drops) + np.zeros_like(t)


def clean_loss(spec: TraceSpec, t: np.ndarray) -> np.ndarray:
    held = _held(t, spec.loss_plateau_at)
    loss = spec.loss_floor + spec.loss_amp * (1 + held / spec.loss_t0) ** -spec.loss_power
    return loss * spec.lr_drop_loss ** _drops_passed(spec, t)


def clean_psnr(spec: TraceSpec, t: np.ndarray) -> np.ndarray:
    held = _held(t, spec.metric_plateau_at)
    psnr = spec.psnr_final - spec.psnr_amp * (1 + held / spec.psnr_t0) ** -spec.psnr_power
    if spec.overfit_at is not None:
        psnr = psnr - spec.overfit_rate * np.maximum(0, t - spec.overfit_at) / 10_000
    return psnr + spec.lr_drop_psnr * _drops_passed(spec, t)


def synthetic_trace(spec: TraceSpec) -> Iterator[dict[str, Any]]:
    """The trace's lines in order: a step line per iteration, a metrics line per val_every."""
    rng = np.random.default_rng(spec.seed)
    t = np.arange(1, spec.steps + 1, dtype=np.float64)
    loss = clean_loss(spec, t) * np.exp(spec.loss_sigma * rng.standard_normal(spec.steps))
    drift = 1 + (spec.grad_drift - 1) * t / spec.steps
    norm = spec.grad_norm * drift * np.exp(spec.grad_sigma * rng.standard_normal(spec.steps))
    finite = np.ones(spec.steps, dtype=bool)
    for at in spec.spikes:
        norm[at - 1] *= spec.spike_factor
        loss[at - 1] *= spec.spike_factor**0.5
    for at in spec.nan_at:
        loss[at - 1] = math.nan
        norm[at - 1] = math.nan
        finite[at - 1] = False
    scale = np.full(spec.steps, 65536.0)
    if spec.fp16 and spec.scale_collapse_at is not None:
        start = spec.scale_collapse_at - 1
        for k in range(spec.scale_collapse_steps):
            if start + k < spec.steps:
                scale[start + k :] /= 2
                norm[start + k] = math.inf
    val_t = np.arange(spec.val_every, spec.steps + 1, spec.val_every, dtype=np.float64)
    psnr = clean_psnr(spec, val_t) + spec.psnr_noise * rng.standard_normal(len(val_t))
    nan_metric = set(spec.nan_metric_at)
    clean = clean_loss(spec, t)
    extra = {
        name: share
        * (clean[0] if name in spec.stalled_losses else clean)
        * np.exp(spec.loss_sigma * rng.standard_normal(spec.steps))
        for name, share in spec.extra_losses.items()
    }
    next_val = 0
    for i in range(spec.steps):
        iteration = i + 1
        l1 = float(loss[i])
        losses = {"l_g_l1": l1, **{name: float(values[i]) for name, values in extra.items()}}
        losses["l_g_total"] = sum(losses.values())
        line: dict[str, Any] = {
            "iteration": iteration,
            "losses": losses,
            "grad_norms": {"net_g": float(norm[i])},
        }
        if spec.fp16:
            line["loss_scale"] = float(scale[i])
        line["finite"] = bool(finite[i])
        yield line
        if next_val < len(val_t) and iteration == int(val_t[next_val]):
            value = math.nan if iteration in nan_metric else float(psnr[next_val])
            yield {"iteration": iteration, "metrics": {"psnr": value}}
            next_val += 1


def json_safe(value: Any) -> Any:
    """Non-finite floats as the strings signals.jsonl uses ("nan", "inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


def parse_args(argv: list[str] | None) -> tuple[TraceSpec, Path]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="signals.jsonl to write")
    defaults = TraceSpec()
    for spec_field in fields(TraceSpec):
        name = spec_field.name
        if name in ("extra_losses", "stalled_losses"):
            continue
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        if name in ("spikes", "nan_at", "nan_metric_at", "lr_drops"):
            parser.add_argument(flag, type=int, nargs="*", default=[])
        elif isinstance(default, bool):
            parser.add_argument(flag, action="store_true")
        elif default is None:
            parser.add_argument(flag, type=int, default=None)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    return TraceSpec(**args), out


def main(argv: list[str] | None = None) -> int:
    spec, out = parse_args(argv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as file:
        for line in synthetic_trace(spec):
            file.write(json.dumps(json_safe(line)) + "\n")
    print(f"wrote {out} ({spec.steps:,} steps, seed {spec.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
