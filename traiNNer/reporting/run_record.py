"""What a run leaves behind, read back: decisions, TensorBoard scalars, the signal trace.

Works on a finished run and on one still training (files are read as they are now; a
half-written last line of a JSON-lines file is skipped). Resumed runs write a new
TensorBoard event file per start; later files win for the steps they cover.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traiNNer.utils.errors import UserError

Series = list[tuple[int, float]]


@dataclass
class RunRecord:
    name: str
    decisions: list[dict[str, Any]] = field(default_factory=list)
    scalars: dict[str, Series] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def matching(self, prefix: str) -> dict[str, Series]:
        """Scalars whose tag starts with `prefix`, by the rest of the tag."""
        return {
            tag[len(prefix) :]: values
            for tag, values in sorted(self.scalars.items())
            if tag.startswith(prefix) and values
        }

    @property
    def last_iteration(self) -> int:
        ends = [values[-1][0] for values in self.scalars.values() if values]
        ends += [int(d["iteration"]) for d in self.decisions]
        return max(ends, default=0)


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a running (or killed) process was writing


def _tensorboard_scalars(folder: Path) -> dict[str, Series]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    merged: dict[str, dict[int, float]] = {}
    for events in sorted(folder.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            steps = merged.setdefault(tag, {})
            for event in accumulator.Scalars(tag):
                steps[int(event.step)] = float(event.value)
    return {tag: sorted(steps.items()) for tag, steps in merged.items()}


def _trace_scalars(path: Path) -> dict[str, Series]:
    """losses/*, grad_norms/* and metrics/* from logger.signal_trace's signals.jsonl."""
    scalars: dict[str, dict[int, float]] = {}
    for line in _json_lines(path):
        iteration = int(line.get("iteration", 0))
        for group in ("losses", "grad_norms", "metrics"):
            for name, value in (line.get(group) or {}).items():
                if isinstance(value, int | float) and math.isfinite(value):
                    scalars.setdefault(f"{group}/{name}", {})[iteration] = float(value)
    return {tag: sorted(steps.items()) for tag, steps in scalars.items()}


def tensorboard_folder(experiment: Path) -> Path:
    """experiments/<name> writes its events to tb_logger/<name> beside experiments/."""
    return experiment.parent.parent / "tb_logger" / experiment.name


def read_run(experiment: Path, tb_folder: Path | None = None) -> RunRecord:
    """Everything `experiment` (experiments/<name>) and its TensorBoard folder hold."""
    if not experiment.is_dir():
        raise UserError(f"{experiment}: not a run folder (expected experiments/<name>)")
    record = RunRecord(name=experiment.name)
    decisions = experiment / "automations.jsonl"
    if decisions.is_file():
        record.decisions = sorted(_json_lines(decisions), key=lambda d: int(d["iteration"]))
        record.sources.append(str(decisions))
    tb = tb_folder or tensorboard_folder(experiment)
    if tb.is_dir() and any(tb.glob("events.out.tfevents.*")):
        record.scalars = _tensorboard_scalars(tb)
        record.sources.append(str(tb))
    trace = experiment / "signals.jsonl"
    if trace.is_file():
        # Used for a group TensorBoard lacks (use_tb_logger: false): its metric names are
        # per set there (metrics/<set>/psnr), so the two are not mixed.
        recorded = {tag.split("/")[0] for tag in record.scalars}
        for tag, values in _trace_scalars(trace).items():
            if tag.split("/")[0] not in recorded:
                record.scalars[tag] = values
        record.sources.append(str(trace))
    if not record.sources:
        raise UserError(
            f"{experiment}: no automations.jsonl, TensorBoard events ({tb}) or signals.jsonl "
            "to report on"
        )
    return record
