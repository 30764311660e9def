"""Train a super-resolution model: `python train.py -opt options/train/<arch>/<file>.yml`.

The run, top to bottom: read and check the option file, set up devices and the
output folders, build data, model and automations, resume if asked, then loop:
step, log, validate, save. Automations observe every step and decide at their
own intervals; this file applies what they decide (batch size, stop, actions).
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from traiNNer.automations.base import Knobs, TrainInfo
from traiNNer.automations.controller import AutomationController
from traiNNer.automations.decision_log import DecisionLog
from traiNNer.automations.optimizer_selection import OptimizerSelection
from traiNNer.config.loader import load_options
from traiNNer.config.schema import Options
from traiNNer.data import build_dataset
from traiNNer.data.loader import build_dataloader
from traiNNer.models.precision import bf16_supported, configured_precision
from traiNNer.models.sr_model import SRModel, release_memory
from traiNNer.training.batches import TrainBatches, first_samples
from traiNNer.training.best_metrics import BestMetrics
from traiNNer.training.devices import select_device
from traiNNer.training.interrupt import GracefulInterrupt
from traiNNer.training.setup_search import run_startup_searches
from traiNNer.utils.checkpoint import (
    latest_training_state,
    load_training_state,
    prune_training_states,
    save_training_state,
)
from traiNNer.utils.dist import (
    DistInfo,
    barrier,
    broadcast_object,
    init_distributed,
    replicas_agree,
)
from traiNNer.utils.errors import UserError
from traiNNer.utils.experiment import ExperimentPaths
from traiNNer.utils.logger import ProgressBar, TensorBoard, setup_logging, status_line
from traiNNer.utils.rng import restore_rng_state, rng_state, seed_everything


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-opt", required=True, help="path to the option YAML file")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    parser.add_argument("--auto_resume", action="store_true", help="resume from the newest state")
    parser.add_argument("--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return train(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


def train(args: argparse.Namespace) -> int:
    # 1. Options, checked in full before anything is created.
    opt = load_options(args.opt, for_training=True)
    assert opt.train is not None
    dist = init_distributed(args.launcher, opt.dist_params.backend, opt.dist_params.port)
    device = select_device(opt, dist)
    configure_torch(opt)

    # 2. Output folders, logging, resume point.
    paths = ExperimentPaths.for_options(opt)
    resume_path = find_resume_state(opt, paths, args.auto_resume)
    if dist.is_main:
        paths.create(Path(args.opt), resuming=resume_path is not None)
    barrier(dist)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    log = setup_logging(paths.root / f"train_{opt.name}_{stamp}.log", dist.is_main)
    tb = TensorBoard(paths.tb_logger if dist.is_main and opt.logger.use_tb_logger else None)
    resume_state = load_training_state(resume_path) if resume_path else None
    seed = resume_state["seed"] if resume_state else choose_seed(opt, dist)
    seed_everything(seed + dist.rank)
    log.info(f"{opt.name}: {opt.network_g['type']} x{opt.scale} on {device}, seed {seed}")

    # 3. Data.
    train_set_opt = opt.datasets["train"]
    train_set = build_dataset(train_set_opt, opt.scale, "train", key="train")
    val_loaders = build_val_loaders(opt, dist, device)
    knobs = Knobs(
        batch_size=train_set_opt.batch_size_per_gpu,
        accum_iter=train_set_opt.accum_iter,
        val_interval=opt.val.val_freq if opt.val else 0,
        precision=configured_precision(opt.use_amp, opt.amp_bf16),
    )
    batches = TrainBatches(
        train_set,
        train_set_opt,
        knobs.batch_size * knobs.accum_iter,
        seed=seed,
        rank=dist.rank,
        world_size=dist.world_size,
        use_cuda=device.type == "cuda",
    )

    # 4. Model and automations.
    model = SRModel(opt, device, knobs, dist)
    model.setup_training(seed)
    if opt.train.moa_debug and dist.is_main:
        model.moa_debug_dir = paths.visualization / "moa_debug"
    decision_log = DecisionLog(paths.decision_log if dist.is_main else None, tb.writer)
    automations = AutomationController(
        opt.train.automations,
        knobs,
        decision_log,
        is_main=dist.is_main,
        world_size=dist.world_size,
    )
    model.observer = automations
    best = BestMetrics(opt)
    start_iter = 0
    next_val_iter = knobs.val_interval
    if resume_state is not None:
        start_iter, next_val_iter = resume(resume_state, model, automations, knobs, batches, best)
        log.info(f"Resumed from {resume_path} at iteration {start_iter:,}")
    automations.on_train_start(train_info(opt, model, device, dist, start_iter))
    if resume_state is None:
        run_startup_searches(model, automations, knobs, batches, log)
    batches.set_batch_size(knobs.batch_size * knobs.accum_iter)

    # 5. The loop.
    total_iter = opt.train.total_iter
    iteration = start_iter
    timer = IterationTimer(start_iter)
    checkpoint = functools.partial(
        save_checkpoint, model, automations, knobs, batches, best, seed, paths, opt, dist
    )
    progress = ProgressBar(opt.logger.progress_bar and dist.is_main, total_iter, start_iter)
    with GracefulInterrupt(dist, opt.logger.print_freq) as interrupt, progress:
        while iteration < total_iter and not knobs.stop_requested:
            batch = next(batches)
            model.update_learning_rate(iteration)
            while True:  # an OOM redoes the same iteration until a remedy works
                try:
                    model.optimize_parameters(batch, iteration + 1)
                    break
                except torch.OutOfMemoryError:
                    batch = recover_from_train_oom(
                        model, automations, knobs, batches, batch, iteration
                    )
            iteration += 1
            progress.update(iteration)
            perform_actions(automations, model, best, log)
            batches.set_batch_size(knobs.batch_size * knobs.accum_iter)
            log_loss_weights(model, tb, iteration, log)

            if iteration % opt.logger.print_freq == 0 or iteration == total_iter:
                log_status(model, timer, batches, tb, iteration, total_iter, log)
            if opt.val and opt.val.val_enabled and iteration >= next_val_iter:
                run_validation(model, val_loaders, automations, best, tb, paths, iteration, log)
                perform_actions(automations, model, best, log)
                next_val_iter = iteration + max(1, knobs.val_interval)
            if iteration % opt.logger.save_checkpoint_freq == 0:
                checkpoint(iteration, next_val_iter)
            if interrupt.requested(iteration):
                progress.close()
                checkpoint(iteration, next_val_iter)
                log.warning(f"Interrupted: saved a resumable state at iteration {iteration:,}")
                tb.close()
                return 130

    # 6. The end: final checkpoint, best weights, summary.
    if not replicas_agree(list(model.bare_net_g.parameters()), dist):
        log.error("DDP ranks ended with different weights: a decision was not applied alike")
    if automations.enabled:
        for line in automations.summary().splitlines():
            log.info(line)
    checkpoint(iteration, next_val_iter)
    if dist.is_main:
        final = model.save_network(paths.models, "latest")
        log.info(f"Saved {final}")
        for line in best.summary_lines():
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
            raise UserError(f"path.resume_state: {path} does not exist")
        return path
    return latest_training_state(paths.training_states) if auto_resume else None


def build_val_loaders(
    opt: Options, dist: DistInfo, device: torch.device
) -> dict[str, torch.utils.data.DataLoader[Any]]:
    loaders = {}
    if not dist.is_main:  # validation runs on rank 0; its results are broadcast
        return loaders
    for key, set_opt in opt.datasets.items():
        if key == "train":
            continue
        dataset = build_dataset(set_opt, opt.scale, "val", key=key)
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
    )


def resume(
    state: dict[str, Any],
    model: SRModel,
    automations: AutomationController,
    knobs: Knobs,
    batches: TrainBatches,
    best: BestMetrics,
) -> tuple[int, int]:
    optimizer = state["knobs"].get("optimizer") or model.optimizer_type
    if optimizer != model.optimizer_type:  # the optimizer race chose another one
        kwargs = {k: v for k, v in model.train_opt.optim_g.items() if k != "type"}
        selection = automations.get("optimizer_selection")
        if isinstance(selection, OptimizerSelection):
            kwargs = selection.kwargs_for(optimizer, kwargs)
        model.replace_optimizer(optimizer, kwargs)
    # Knob values come back through the automations that set them (controller state);
    # an automation switched off for the resumed run leaves its knobs at the config.
    model.load_training_state(state["model"])
    automations.load_state_dict(state["automations"])
    batches.load_state_dict(state["batches"])
    best.load_state_dict(state["best_metrics"])
    restore_rng_state(state["rng"])
    model.apply_knobs()
    return int(state["iteration"]), int(state["next_val_iter"])


# ------------------------------------------------------------------------- loop helpers
class IterationTimer:
    """Iterations per second and ETA over the last print window."""

    def __init__(self, start_iter: int) -> None:
        self.window_start = time.perf_counter()
        self.window_iter = start_iter

    def rate(self, iteration: int) -> float:
        now = time.perf_counter()
        done = iteration - self.window_iter
        rate = done / max(now - self.window_start, 1e-9)
        self.window_start, self.window_iter = now, iteration
        return rate


def recover_from_train_oom(
    model: SRModel,
    automations: AutomationController,
    knobs: Knobs,
    batches: TrainBatches,
    batch: dict[str, Any],
    iteration: int,
) -> dict[str, Any]:
    """Free memory, let the automations react, and return the batch to redo the step with."""
    assert model.optimizer is not None
    model.optimizer.zero_grad(set_to_none=True)
    release_memory(model.device)
    before = (knobs.batch_size, knobs.accum_iter, knobs.activation_checkpointing)
    automations.on_oom(iteration, "train")
    after = (knobs.batch_size, knobs.accum_iter, knobs.activation_checkpointing)
    if after == before:
        set_opt = model.opt.datasets["train"]
        raise UserError(
            f"out of GPU memory at iteration {iteration + 1} with batch_size_per_gpu "
            f"{knobs.batch_size} and lq_size {set_opt.lq_size}: lower "
            "datasets.train.batch_size_per_gpu or lq_size, or enable "
            "train.automations.batch_size for automatic recovery"
        )
    batches.set_batch_size(knobs.batch_size * knobs.accum_iter)
    # Redo the same iteration on (a prefix of) the same samples: nothing skipped or repeated.
    return first_samples(batch, knobs.batch_size * knobs.accum_iter)


def perform_actions(
    automations: AutomationController, model: SRModel, best: BestMetrics, log: Any
) -> None:
    for action in automations.pop_actions():
        if action.parameter == "restore_best_weights":
            if best.restore_into(model):
                log.info(f"[{action.automation}] restored the best weights ({action.reason})")
        elif action.parameter == "save_good_state":
            model.snapshot_good_state()
        elif action.parameter == "restore_last_good_state":
            model.restore_good_state()
            log.info(f"[{action.automation}] restored the last good state ({action.reason})")


def log_loss_weights(model: SRModel, tb: TensorBoard, iteration: int, log: Any) -> None:
    weights = model.update_loss_weights(iteration)
    if not weights:
        return
    for name, weight in weights.items():
        tb.add_scalar(f"loss_weights/{name}", weight, iteration)
    text = ", ".join(f"{name}: {weight:.4g}" for name, weight in weights.items())
    log.info(f"[dynamic_loss_scheduling] iter {iteration:,} weights {text}")


def log_status(
    model: SRModel,
    timer: IterationTimer,
    batches: TrainBatches,
    tb: TensorBoard,
    iteration: int,
    total_iter: int,
    log: Any,
) -> None:
    values = model.pop_log_values()
    rate = timer.rate(iteration)
    peak_bytes = model.pop_peak_memory()
    peak = peak_bytes / 1024**3 if peak_bytes is not None else None
    lr = model.current_lr()
    log.info(
        status_line(
            batches.epoch,
            iteration,
            lr,
            rate,
            (total_iter - iteration) / max(rate, 1e-9),
            peak,
            values,
        )
    )
    for name, value in values.items():
        tag = "grad_norms/net_g" if name == "grad_norm_g" else f"losses/{name}"
        tb.add_scalar(tag, value, iteration)
    tb.add_scalar("lr", lr, iteration)


def run_validation(
    model: SRModel,
    loaders: dict[str, torch.utils.data.DataLoader[Any]],
    automations: AutomationController,
    best: BestMetrics,
    tb: TensorBoard,
    paths: ExperimentPaths,
    iteration: int,
    log: Any,
) -> None:
    metrics: dict[str, float] = {}

    def on_oom() -> bool:
        automations.on_oom(iteration, "val")
        return model.knobs.val_tiled

    for index, (name, loader) in enumerate(loaders.items()):
        values = model.validation(
            loader,
            name,
            iteration,
            paths.visualization,
            on_oom,
            image_callback=lambda tag, img: tb.add_image(f"val/{tag}", img, iteration),
        )
        for metric, value in values.items():
            metrics[f"{name}/{metric}"] = value
            if index == 0:
                metrics[metric] = value
            tb.add_scalar(f"metrics/{name}/{metric}", value, iteration)
        text = " ".join(f"{metric}: {value:.4f}" for metric, value in values.items())
        log.info(f"Validation {name} at iter {iteration:,}: {text}")
    # Rank 0 validated; every rank acts on the same values.
    metrics = broadcast_object(metrics, model.dist)  # type: ignore[assignment]
    if model.dist.is_main and best.update(metrics, iteration, model):
        model.save_network(paths.models, "best")
    model.feed_plateau_schedule(metrics)
    automations.after_validation(iteration, metrics)


def save_checkpoint(
    model: SRModel,
    automations: AutomationController,
    knobs: Knobs,
    batches: TrainBatches,
    best: BestMetrics,
    seed: int,
    paths: ExperimentPaths,
    opt: Options,
    dist: DistInfo,
    iteration: int,
    next_val_iter: int,
) -> None:
    if not dist.is_main or iteration == 0:
        return
    model.save_network(paths.models, iteration)
    state = {
        "iteration": iteration,
        "next_val_iter": next_val_iter,
        "seed": seed,
        "model": model.training_state(),
        "knobs": asdict(knobs),
        "automations": automations.state_dict(),
        "batches": batches.state_dict(),
        "best_metrics": best.state_dict(),
        "rng": rng_state(),
    }
    save_training_state(state, paths.training_states / f"{iteration}.state")
    prune_training_states(paths.training_states, opt.logger.keep_last_states)


if __name__ == "__main__":
    sys.exit(main())
