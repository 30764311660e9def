"""Pieces every benchmark script shares: options built in code, synthetic batches on the
device, interleaved timing, the machine description and the CSV/markdown table writer.

The scripts import this module by its bare name (their own folder is on `sys.path`
when run as `python scripts/benchmarks/<script>.py`). It puts the repository root on
`sys.path` too, so that the scripts reuse `train.py`'s helpers instead of copying them.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from traiNNer.config.loader import decode_options, validate  # noqa: E402
from traiNNer.config.schema import Options  # noqa: E402
from traiNNer.training.knobs import Precision  # noqa: E402
from traiNNer.utils.errors import UserError  # noqa: E402

DEFAULT_OUT = ROOT / "docs" / "benchmarks"
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")
# l1 + MS-SSIM, the ParagonSR2 fidelity recipe's losses.
FIDELITY_LOSSES: list[dict[str, Any]] = [
    {"type": "l1loss", "loss_weight": 1.0},
    {"type": "mssimloss", "loss_weight": 0.05},
]


# ------------------------------------------------------------------ command line
def add_common_args(parser: argparse.ArgumentParser, *, clock: bool = False) -> None:
    """--device, --out, --threads; --clock too for scripts that time steps in-process."""
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder for the CSV and markdown tables"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (0: torch's default); 1 keeps timings steady on a "
        "shared CPU, where threads that wait on each other multiply step times",
    )
    if clock:
        parser.add_argument(
            "--clock",
            choices=("auto", "wall", "cpu"),
            default="auto",
            help="auto: process CPU time on a CPU device, wall time on a GPU",
        )


def setup_run(args: argparse.Namespace) -> torch.device:
    """Apply --threads and return the device --device names (an error if it is absent)."""
    if args.threads < 0:
        raise UserError(f"--threads: must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = str(args.device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(
            f"--device: unknown device '{name}' (accepted: auto, cpu, cuda, cuda:N)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device: CUDA was asked for but torch sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device: '{name}' is not supported (accepted: auto, cpu, cuda)")
    return device


def run_main(body: Callable[[], int]) -> int:
    """Run a benchmark; a user mistake is one line on stderr and a non-zero exit code."""
    try:
        return body()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


def parse_csv_list(text: str, option: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UserError(f"{option}: give at least one comma-separated value")
    return items


def parse_int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(item) for item in parse_csv_list(text, option)]
    except ValueError:
        raise UserError(f"{option}: expected comma-separated integers, got '{text}'") from None
    return values


def positive(value: int, option: str) -> int:
    if value < 1:
        raise UserError(f"{option}: must be at least 1, got {value}")
    return value


# ---------------------------------------------------------------------- the model
def training_options(
    arch: str,
    *,
    batch: int,
    lq_size: int,
    precision: Precision,
    channels_last: bool = False,
    ema_decay: float = 0.999,
    grad_clip: bool = True,
    losses: Sequence[dict[str, Any]] = FIDELITY_LOSSES,
    total_iter: int = 100_000,
    train_extra: dict[str, Any] | None = None,
    name: str = "benchmark",
) -> Options:
    """A complete, validated training configuration built in code (no option file).

    The dataset folder is never read: benchmarks feed the model batches themselves.
    """
    data: dict[str, Any] = {
        "name": name,
        "scale": 2,
        "use_amp": precision != "fp32",
        "amp_bf16": precision == "bf16",
        "use_channels_last": channels_last,
        "datasets": {
            "train": {
                "type": "bicubicimagedataset",
                "dataroot_gt": "unused",
                "lq_size": lq_size,
                "batch_size_per_gpu": batch,
            }
        },
        "network_g": {"type": arch},
        "train": {
            "total_iter": total_iter,
            "optim_g": {
                "type": "AdamW",
                "lr": 2e-4,
                "weight_decay": 1e-4,
                "betas": [0.9, 0.99],
            },
            "ema_decay": ema_decay,
            "grad_clip": grad_clip,
            "grad_clip_max_norm": 1.0,
            "losses": [dict(loss) for loss in losses],
            **(train_extra or {}),
        },
        # Named so that automations watching psnr/ssim validate; never run here.
        "val": {
            "metrics": {
                "psnr": {"type": "calculate_psnr", "crop_border": 4},
                "ssim": {"type": "calculate_ssim", "crop_border": 4},
            }
        },
    }
    return validate(decode_options(data), for_training=True)


def synthetic_batch(
    batch: int, lq_size: int, scale: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    """HR crops of smooth random texture and their bicubic downscales, already on `device`.

    Timing benchmarks use this so that data loading is measured on its own
    (data_pipeline.py) and never mixes into step times.
    """
    generator = torch.Generator().manual_seed(seed)
    hr_size = lq_size * scale
    coarse = torch.rand(batch, 3, max(2, hr_size // 4), max(2, hr_size // 4), generator=generator)
    gt = F.interpolate(coarse, size=(hr_size, hr_size), mode="bicubic", align_corners=False)
    gt = gt.clamp(0, 1)
    lq = F.interpolate(gt, scale_factor=1 / scale, mode="bicubic", antialias=True).clamp(0, 1)
    return {"lq": lq.to(device), "gt": gt.to(device)}


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------ timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Clock = Callable[[], float]


def clock_for(device: torch.device, name: str) -> tuple[Clock, str]:
    """The timer for `--clock`: `auto` is process CPU time on a CPU device, else wall time.

    On a CPU shared with other jobs, wall time also counts the time the OS gave to
    them; the process's own CPU time does not. A GPU works asynchronously, so its
    steps are timed on the wall clock (after synchronising).
    """
    if name == "auto":
        name = "cpu" if device.type == "cpu" else "wall"
    if name == "cpu":
        if device.type != "cpu":
            raise UserError("--clock cpu: only for --device cpu (GPU work is not CPU time)")
        return time.process_time, "process CPU time"
    return time.perf_counter, "wall time"


def time_per_call(
    fn: Callable[[], object], calls: int, device: torch.device, clock: Clock = time.perf_counter
) -> float:
    """Seconds per call of `fn` over `calls` back-to-back calls (device work included)."""
    synchronize(device)
    start = clock()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (clock() - start) / calls


def interleaved_timings(
    contenders: dict[str, Callable[[], object]],
    *,
    warmup: int,
    steps: int,
    repeats: int,
    device: torch.device,
    clock: Clock = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds per step of each contender, one value per repeat.

    Each repeat runs every contender for `steps` calls, in an order rotated every
    repeat, so slow drift of a shared machine (other jobs, clocks, caches) falls on
    all contenders alike; medians over repeats then discard bursts.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    names = list(contenders)
    timings: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            timings[name].append(time_per_call(contenders[name], steps, device, clock))
    return timings


def paired_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Ratio per repeat: both values of a pair were measured close together in time."""
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# ----------------------------------------------------------------- machine facts
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: torch.device) -> str:
    """One line naming what the figures were measured on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [
        f"CPU: {cpu_model()}, {cores} usable cores, torch threads {torch.get_num_threads()}",
        f"torch {torch.__version__}",
        f"Python {platform.python_version()}",
    ]
    if device.type == "cuda":
        parts.insert(0, f"GPU: {torch.cuda.get_device_name(device)}")
    return "; ".join(parts)


# ------------------------------------------------------------------------ tables
@dataclass(frozen=True)
class Column:
    """A table column: `key` in each row dict, header text, format spec for numbers."""

    key: str
    header: str
    spec: str = ""


def format_cell(value: object, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return format(value, spec) if spec else str(value)


def write_table(
    rows: list[dict[str, Any]],
    columns: Sequence[Column],
    *,
    out: Path,
    stem: str,
    title: str,
    device: torch.device,
    command: str,
    notes: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Print the table and write `<out>/<stem>.csv` (raw values) and `<stem>.md`."""
    from rich.console import Console
    from rich.table import Table

    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([column.key for column in columns])
        for row in rows:
            writer.writerow(["" if row.get(c.key) is None else row[c.key] for c in columns])

    lines = [
        f"### {title}",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine_description(device)}.",
        f"Command: `{command}`",
        "",
        "| " + " | ".join(column.header for column in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = [format_cell(row.get(column.key), column.spec) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *notes]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    table = Table(title=title)
    for column in columns:
        table.add_column(column.header, justify="left" if column.spec == "" else "right")
    for row in rows:
        table.add_row(*(format_cell(row.get(column.key), column.spec) for column in columns))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # logs and pipes: no truncated cells
    console.print(table)
    for note in notes:
        console.print(note, markup=False, highlight=False)
    console.print(f"wrote {csv_path} and {md_path}", markup=False, highlight=False)
    return csv_path, md_path


def shown_path(path: Path) -> str:
    """`path` relative to the repository when inside it (tables stay portable)."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces this run, as written in the tables."""
    path = Path(script).resolve()
    shown = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else script
    arguments = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", shown, *arguments])
