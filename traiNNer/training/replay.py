"""Replay a signal trace through the automations of an option file, without training.

The automations see exactly what they would see in training (step records, validations
at the interval they set, non-finite steps) and decide through the real controller. The
replay is open-loop: a decision that would have changed the trajectory (an LR cut, a
rollback, a new batch size) cannot change the recorded signal, so decisions after the
first such one show what the rules do on that signal, not what the run would have done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from traiNNer.automations.base import Decision, StepRecord, TrainInfo
from traiNNer.automations.controller import AutomationController
from traiNNer.config.schema import Options
from traiNNer.schedulers import ReduceLROnPlateau, build_schedule, warmup_factor
from traiNNer.training.knobs import Knobs

OPEN_LOOP_NOTE = (
    "replay is open-loop: decisions that would have changed the trajectory (an LR cut, a "
    "rollback, a batch change) cannot change the recorded signal"
)
# Knobs drawn in the replay plot and kept in the history.
PLOTTED_KNOBS = (
    "lr_multiplier",
    "clip_threshold.net_g",
    "val_interval",
    "weight_decay",
    "aug_prob",
    "batch_size",
    "accum_iter",
    "precision",
)


class RecordingSink:
    """Keeps every decision as the JSON-lines record training would write."""

    def __init__(self, forward: Any = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.forward = forward  # e.g. a DecisionLog that writes automations.jsonl

    def decision(self, iteration: int, decision: Decision, level: int = logging.INFO) -> None:
        self.rows.append(
            {
                "iteration": iteration,
                "automation": decision.automation,
                "parameter": decision.parameter,
                "old": decision.old,
                "new": decision.new,
                "reason": decision.reason,
            }
        )
        if self.forward is not None:
            self.forward.decision(iteration, decision, level)

    def scalars(self, iteration: int, automation: str, values: Mapping[str, float]) -> None:
        if self.forward is not None:
            self.forward.scalars(iteration, automation, values)


@dataclass
class ReplayResult:
    decisions: list[dict[str, Any]]
    # (iteration, LR, knob values) sampled along the trace and at every decision.
    history: list[tuple[int, float, dict[str, Any]]] = field(default_factory=list)
    validations: list[int] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    stopped_at: int | None = None
    summary: str = ""

    @property
    def steps_per_second(self) -> float:
        return self.steps / max(self.seconds, 1e-9)

    def by_automation(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.decisions:
            counts[row["automation"]] = counts.get(row["automation"], 0) + 1
        return counts


def _steps_with_their_metrics(
    lines: Iterable[Mapping[str, Any]],
) -> Iterator[tuple[Mapping[str, Any], dict[str, float] | None]]:
    """Each line, a step paired with the metrics line that follows it at its iteration."""
    pending: Mapping[str, Any] | None = None
    for line in lines:
        if pending is None:
            pending = line
            continue
        if "metrics" in line and "losses" in pending and line["iteration"] == pending["iteration"]:
            yield pending, dict(line["metrics"])
            pending = None
            continue
        yield pending, None
        pending = line
    if pending is not None:
        yield pending, None


def train_info_for_replay(opt: Options, device_type: str = "cuda") -> TrainInfo:
    assert opt.train is not None
    optim_g = {k: v for k, v in opt.train.optim_g.items() if k != "type"}
    return TrainInfo(
        total_iter=opt.train.total_iter,
        start_iter=0,
        device_type=device_type,
        bf16_supported=True,
        base_lr=float(optim_g.get("lr", 1e-4)),
        optim_g=optim_g,
        lr_schedule=opt.train.scheduler["type"].lower() if opt.train.scheduler else None,
        val_freq=opt.val.val_freq if opt.val is not None else 0,
        loss_weights=Knobs.from_options(opt).loss_weights,
    )


def replay(
    opt: Options,
    lines: Iterable[Mapping[str, Any]],
    *,
    sink: Any = None,
    device_type: str = "cuda",
    samples: int = 2000,
) -> ReplayResult:
    """Feed `lines` (signals.jsonl records, in order) through `opt`'s automations."""
    assert opt.train is not None
    train = opt.train
    recorder = RecordingSink(sink)
    knobs = Knobs.from_options(opt)
    controller = AutomationController(train.automations, knobs, recorder)
    info = train_info_for_replay(opt, device_type)
    controller.on_train_start(info)
    scheduler = dict(train.scheduler or {})
    schedule = build_schedule(
        scheduler.pop("type", None), scheduler, train.total_iter, info.base_lr or 1.0
    )
    val_enabled = opt.val is not None and opt.val.val_enabled
    every = max(1, train.total_iter // max(1, samples))
    result = ReplayResult(recorder.rows)

    def lr(iteration: int) -> float:
        factor = schedule.factor(iteration) * warmup_factor(iteration, train.warmup_iter)
        return (info.base_lr or 1.0) * factor * knobs.lr_multiplier

    def sample(iteration: int) -> None:
        result.history.append((iteration, lr(iteration), {k: knobs.get(k) for k in PLOTTED_KNOBS}))

    latest_metrics: dict[str, float] | None = None
    next_val = knobs.val_interval
    started = time.perf_counter()
    sample(0)
    for line, same_iteration_metrics in _steps_with_their_metrics(lines):
        iteration = int(line["iteration"])
        if "metrics" in line:
            latest_metrics = dict(line["metrics"])
            continue
        if same_iteration_metrics is not None:
            # Training validates after the step of the same iteration: so does the replay.
            latest_metrics = same_iteration_metrics
        decided = len(recorder.rows)
        finite = bool(line.get("finite", True))
        scale = line.get("loss_scale")
        record = StepRecord(
            iteration=iteration,
            losses={k: torch.tensor(float(v)) for k, v in line["losses"].items()},
            grad_norms={k: torch.tensor(float(v)) for k, v in line.get("grad_norms", {}).items()},
            clipped={},
            loss_scale=None if scale is None else torch.tensor(float(scale)),
            step_time=0.0,
            peak_memory=None,
            batch_size=knobs.batch_size * knobs.accum_iter,
            applied=finite,
        )
        if not finite:
            controller.on_nonfinite(iteration)
        controller.observe_step(record)
        result.steps += 1
        if val_enabled and iteration >= next_val and latest_metrics is not None:
            if isinstance(schedule, ReduceLROnPlateau):
                schedule.step_metric(next(iter(latest_metrics.values())))
            controller.after_validation(iteration, latest_metrics)
            result.validations.append(iteration)
            next_val = iteration + max(1, knobs.val_interval)
        controller.pop_actions()
        if iteration % every == 0 or len(recorder.rows) != decided:
            sample(iteration)
        if knobs.stop_requested:
            result.stopped_at = iteration
            break
        if iteration >= train.total_iter:
            break
    result.seconds = time.perf_counter() - started
    result.summary = controller.summary()
    return result
