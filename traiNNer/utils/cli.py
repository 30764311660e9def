"""The command-line flags `train.py` and `test.py` share with traiNNer-redux.

`-opt`, `--launcher`, `--auto_resume`, `--name` and `--manual_seed` act as upstream's
do. `--resume`, `--watch`, `--start-iter` and `--debug` are accepted because upstream's
parser accepts them, but upstream's train.py and test.py do nothing with them either
(only its retest.py reads the last two); using one prints a note saying so.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Callable, Mapping

from traiNNer.config.schema import Options
from traiNNer.utils.errors import UserError

NO_EFFECT_FLAGS = ("resume", "watch", "start_iter", "debug")


def add_upstream_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-opt", required=True, help="path to the option YAML file")
    parser.add_argument(
        "--launcher",
        choices=["none", "pytorch", "slurm"],
        default="none",
        help="none: one process; pytorch: under torchrun; slurm: under srun (untested here)",
    )
    parser.add_argument("--auto_resume", action="store_true", help="resume from the newest state")
    parser.add_argument("--name", default=None, help="replaces the option file's name")
    parser.add_argument("--manual_seed", type=int, default=None, help="replaces manual_seed")
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="train.py: decode the option file, check its data folders and build the model, "
        "then exit 0 without writing anything",
    )
    parser.add_argument("--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    # Accepted as traiNNer-redux's parser accepts them; no effect there either.
    parser.add_argument("--resume", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--watch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-iter", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)


def apply_overrides(opt: Options, args: argparse.Namespace) -> list[str]:
    """--name and --manual_seed into `opt`; notes for the flags that do nothing."""
    if args.name:
        opt.name = args.name
    if args.manual_seed is not None:
        opt.manual_seed = args.manual_seed
    defaults = {"resume": 0, "watch": False, "start_iter": 0, "debug": False}
    return [
        f"--{flag.replace('_', '-')} is accepted for traiNNer-redux compatibility and has no "
        "effect (it has none in traiNNer-redux's train.py and test.py either)"
        for flag in NO_EFFECT_FLAGS
        if getattr(args, flag) != defaults[flag]
    ]


def first_slurm_host(node_list: str) -> str:
    """The first host of a SLURM node list, as `scontrol show hostname` expands it."""
    try:
        output = subprocess.run(
            ["scontrol", "show", "hostname", node_list],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise UserError(
            f"--launcher slurm: could not expand SLURM_NODELIST '{node_list}' with scontrol "
            f"({error}); run under srun, or use --launcher pytorch with torchrun"
        ) from None
    return output.split()[0]


def slurm_environment(
    env: Mapping[str, str],
    gpus: int,
    port: int,
    resolve: Callable[[str], str] = first_slurm_host,
) -> dict[str, str]:
    """The torchrun-style variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) for
    a process started by srun, from SLURM's own (as BasicSR's slurm launcher derives them)."""
    missing = [k for k in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_NODELIST") if k not in env]
    if missing:
        raise UserError(f"--launcher slurm: {', '.join(missing)} not set; start the job with srun")
    rank = int(env["SLURM_PROCID"])
    return {
        "RANK": str(rank),
        "WORLD_SIZE": env["SLURM_NTASKS"],
        "LOCAL_RANK": str(rank % max(1, gpus)),
        "MASTER_ADDR": env.get("MASTER_ADDR") or resolve(env["SLURM_NODELIST"]),
        "MASTER_PORT": env.get("MASTER_PORT") or str(port),
    }


def export_slurm_environment(port: int, gpus: int) -> None:
    os.environ.update(slurm_environment(os.environ, gpus, port))
