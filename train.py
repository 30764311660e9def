"""Train a super-resolution model: `python train.py -opt options/train/<arch>/<file>.yml`.

The run, top to bottom: read and check the option file, set up devices and the
output folders, build data, model and automations, resume if asked, then loop:
step, log, validate, save. Automations observe every step and decide at their
own intervals; this file applies what they decide (batch size, stop, actions).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from traiNNer.automations.base import TrainInfo
from traiNNer.automations.controller import AutomationController
from traiNNer.automations.decision_log import DecisionLog
from traiNNer.config.compat import drain_notes
from traiNNer.config.compat import note as compat_note
from traiNNer.config.loader import load_options
from traiNNer.config.schema import Options
from traiNNer.data import build_dataset
from traiNNer.data.integrity import check_datasets
from traiNNer.data.loader import build_dataloader
from traiNNer.models.precision import bf16_supported
from traiNNer.models.sr_model import SRModel
from traiNNer.training.batches import TrainBatches
from traiNNer.training.best_metrics import BestMetrics
from traiNNer.training.devices import select_device
from traiNNer.training.interrupt import GracefulInterrupt
from traiNNer.training.knobs import Knobs
from traiNNer.training.signal_trace import SignalTrace
from traiNNer.training.trainer import Trainer
from traiNNer.training.trials import TrialRunner
from traiNNer.utils.atomic import remove_stale_temp_files
from traiNNer.utils.checkpoint import (
    latest_training_state,
    load_training_state,
)
from traiNNer.utils.cli import add_upstream_flags, apply_overrides, export_slurm_environment
from traiNNer.utils.dist import (
    DistInfo,
    barrier,
    broadcast_object,
    init_distributed,
    replicas_agree,
    shutdown_distributed,
)
from traiNNer.utils.errors import CheckpointError, UserError
from traiNNer.utils.experiment import ExperimentPaths
from traiNNer.utils.logger import ProgressBar, TensorBoard, record_in_log_file, setup_logging
from traiNNer.utils.rng import seed_everything


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_upstream_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return train(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        record_in_log_file(f"error: {err}")
        return err.exit_code
    except KeyboardInterrupt:
        # Ctrl+C before the loop (start-up searches) or during the final save: the loop's
        # handler is not installed there; the last saved state is what a resume starts from.
        print(
            "interrupted before or after the training loop; nothing new was saved", file=sys.stderr
        )
        return 130
    finally:
        shutdown_distributed()


def train(args: argparse.Namespace) -> int:
    # 1. Options, checked in full before anything is created.
    opt = load_options(args.opt, for_training=True)
    assert opt.train is not None
    for note in apply_overrides(opt, args):
        compat_note(note)
    if args.launcher == "slurm":
        export_slurm_environment(opt.dist_params.port, torch.cuda.device_count())
    if args.dry_run:
        return dry_run(opt)
    dist = init_distributed(args.launcher, opt.dist_params.backend, opt.dist_params.port)
    device = select_device(opt, dist)
    configure_torch(opt)

    # 2. Resume point, data and model, read and checked before anything is written
    #    (console-only logging until the run's folder exists).
    setup_logging(None, dist.is_main)
    paths = ExperimentPaths.for_options(opt)
    resume_path = find_resume_state(opt, paths, args.auto_resume)
    resume_key = "path.resume_state" if opt.path.resume_state else "--auto_resume"
    resume_state = load_training_state(resume_path, resume_key) if resume_path else None
    seed = resume_state["seed"] if resume_state else choose_seed(opt, dist)
    seed_everything(seed + dist.rank)
    knobs = Knobs.from_options(opt)  # the knobs start from the option file
    train_set_opt = opt.datasets["train"]
    train_set = build_dataset(train_set_opt, opt.scale, "train", key="train")
    val_sets = build_val_sets(opt)
    check_datasets({"train": train_set, **val_sets}, dist=dist)  # every image decodes, once
    val_loaders = build_val_loaders(opt, val_sets, dist, device)
    batches = TrainBatches(
        train_set,
        train_set_opt,
        knobs.batch_size * knobs.accum_iter,
        seed=seed,
        rank=dist.rank,
        world_size=dist.world_size,
        use_cuda=device.type == "cuda",
    )
    model = SRModel(opt, device, knobs, dist)
    if resume_state is not None:  # another network is refused before anything is written
        model.check_training_state(resume_state["model"], f"{resume_key}: {resume_path}")
    model.setup_training(seed)

    # 3. Output folders and logging.
    # Temp files that a run killed mid-write left go before the folder is reused or archived.
    stale = remove_stale_temp_files([paths.models, paths.training_states]) if dist.is_main else 0
    if dist.is_main:
        paths.create(Path(args.opt), resuming=resume_path is not None)
    barrier(dist)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    log = setup_logging(paths.root / f"train_{opt.name}_{stamp}.log", dist.is_main)
    tb = TensorBoard(paths.tb_logger if dist.is_main and opt.logger.use_tb_logger else None)
    log.info(f"{opt.name}: {opt.network_g['type']} x{opt.scale} on {device}, seed {seed}")
    for note in drain_notes():
        log.info(note)
    if stale:
        log.info(f"Removed {stale} temporary file(s) that an interrupted write left")

    # 4. Automations and the trainer holding them and the model.
    if opt.train.moa_debug and dist.is_main:
        model.moa_debug_dir = paths.visualization / "moa_debug"
    decision_log = DecisionLog(paths.decision_log if dist.is_main else None, tb.writer)
    automations = AutomationController(
        opt.train.automations, knobs, decision_log, is_main=dist.is_main, world_size=dist.world_size
    )
    model.observer = automations
    trainer = Trainer(
        opt, model, automations, knobs, batches, BestMetrics(opt), paths, dist, seed, log, tb
    )
    trainer.next_val_iter = knobs.val_interval
    if opt.logger.signal_trace and dist.is_main:
        trainer.trace = SignalTrace(paths.root / "signals.jsonl")
    if resume_state is not None:
        trainer.load_checkpoint(resume_state)
        log.info(f"Resumed from {resume_path} at iteration {trainer.iteration:,}")
        if trainer.iteration >= opt.train.total_iter:
            log.warning(
                f"train.total_iter is {opt.train.total_iter:,} and the run was saved at "
                f"iteration {trainer.iteration:,}: nothing left to train; raise "
                "train.total_iter to continue"
            )
    automations.on_train_start(train_info(opt, model, device, dist, trainer.iteration))
    if resume_state is None:  # start-up phases: the optimizer race, the batch-size search
        automations.run_startup(TrialRunner(model, batches, dist))
    batches.set_batch_size(knobs.batch_size * knobs.accum_iter)

    # 5. The loop.
    total_iter = opt.train.total_iter
    progress = ProgressBar(opt.logger.progress_bar and dist.is_main, total_iter, trainer.iteration)
    interrupt = GracefulInterrupt(dist, opt.logger.print_freq, paths.training_states)
    with interrupt, progress:
        trainer.interrupt = interrupt
        if resume_state is not None and trainer.validation_due():
            trainer.validate(val_loaders)  # the validation a signal abandoned, redone first
        while (
            trainer.iteration < total_iter
            and not knobs.stop_requested
            and not interrupt.requested(trainer.iteration)
        ):
            trainer.train_step()
            iteration = trainer.iteration
            progress.update(iteration)
            if iteration % opt.logger.print_freq == 0 or iteration == total_iter:
                trainer.log_status()
            if trainer.validation_due():
                trainer.validate(val_loaders)
            if iteration % opt.logger.save_checkpoint_freq == 0:
                trainer.save_checkpoint()
        if interrupt.stopping:  # a signal: saved at this iteration boundary, 128 + its number
            progress.close()
            return trainer.stop_on_signal()

    # 6. The end: final checkpoint, best weights, summary.
    if not replicas_agree(list(model.bare_net_g.parameters()), dist):
        log.error("DDP ranks ended with different weights: a decision was not applied alike")
    if automations.enabled:
        for line in automations.summary().splitlines():
            log.info(line)
    trainer.save_checkpoint()
    if dist.is_main:
        final = model.save_network(paths.models, "latest")
        log.info(f"Saved {final}")
        for line in trainer.best.summary_lines():
            log.info(line)
    tb.close()
    return 0


# --------------------------------------------------------------------------- setup helpers
def configure_torch(opt: Options) -> None:
    if opt.deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
    if opt.fast_matmul:
        torch.set_float32_matmul_precision("high")
    if opt.detect_anomaly:
        torch.autograd.set_detect_anomaly(True)


def choose_seed(opt: Options, dist: DistInfo) -> int:
    seed = opt.manual_seed if opt.manual_seed is not None else random.randint(1, 10_000)
    result = broadcast_object(seed, dist)
    assert isinstance(result, int)
    return result


def find_resume_state(opt: Options, paths: ExperimentPaths, auto_resume: bool) -> Path | None:
    if opt.path.resume_state:
        path = Path(opt.path.resume_state)
        if not path.is_file():
            raise CheckpointError(f"path.resume_state: {path} does not exist")
        return path
    return latest_training_state(paths.training_states) if auto_resume else None


def dry_run(opt: Options) -> int:
    """--dry_run: every check a run makes before its first step, writing nothing."""
    knobs = Knobs.from_options(opt)
    train_set = build_dataset(opt.datasets["train"], opt.scale, "train", key="train")
    check_datasets({"train": train_set, **build_val_sets(opt)})
    # Checks that one batch fits in an epoch; loads nothing.
    TrainBatches(train_set, opt.datasets["train"], knobs.batch_size * knobs.accum_iter, seed=0)
    for key in opt.datasets:
        print(f"datasets.{key}: found and checked")
    SRModel(opt, torch.device("cpu"), knobs, DistInfo())
    print(f"{opt.name}: options, data and {opt.network_g['type']} x{opt.scale} are fine")
    return 0


def build_val_sets(opt: Options) -> dict[str, torch.utils.data.Dataset[Any]]:
    """Built on every rank, so all ranks check the same files and agree on what is left out."""
    return {
        key: build_dataset(set_opt, opt.scale, "val", key=key)
        for key, set_opt in opt.datasets.items()
        if key != "train"
    }


def build_val_loaders(
    opt: Options,
    val_sets: dict[str, torch.utils.data.Dataset[Any]],
    dist: DistInfo,
    device: torch.device,
) -> dict[str, torch.utils.data.DataLoader[Any]]:
    loaders = {}
    if not dist.is_main:  # validation runs on rank 0; its results are broadcast
        return loaders
    for key, dataset in val_sets.items():
        set_opt = opt.datasets[key]
        loaders[set_opt.name or key] = build_dataloader(
            dataset, set_opt, "val", seed=None, use_cuda=device.type == "cuda", key=key
        )
    return loaders


def train_info(
    opt: Options, model: SRModel, device: torch.device, dist: DistInfo, start_iter: int
) -> TrainInfo:
    assert opt.train is not None
    total_memory = (
        torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    )
    return TrainInfo(
        total_iter=opt.train.total_iter,
        start_iter=start_iter,
        device_type=device.type,
        bf16_supported=bf16_supported(device),
        world_size=dist.world_size,
        base_lr=model.base_lrs[0],
        device_total_memory=total_memory,
        supports_activation_checkpointing=hasattr(model.bare_net_g, "set_activation_checkpointing"),
        optim_g={k: v for k, v in opt.train.optim_g.items() if k != "type"},
        lr_schedule=opt.train.scheduler["type"].lower() if opt.train.scheduler else None,
        val_freq=opt.val.val_freq if opt.val is not None else 0,
        loss_weights=Knobs.from_options(opt).loss_weights,
    )


if __name__ == "__main__":
    sys.exit(main())
