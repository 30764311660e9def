"""Where automation decisions go: console, TensorBoard and a JSON-lines file.

Every decision becomes
- one console line `[automation] parameter: old -> new (reason)` on the logger
  "traiNNer.automations",
- a TensorBoard scalar `automations/<automation>/<parameter>` (booleans as 0/1,
  non-numeric values skipped; a dotted parameter such as `clip_threshold.net_g`
  becomes `clip_threshold/net_g`),
- one JSON object per line in `experiments/<name>/automations.jsonl` with the keys
  iteration, automation, parameter, old, new, reason. The file is opened, appended
  and closed for every decision so that the record survives a crash.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from traiNNer.automations.base import Decision, Value

LOGGER_NAME = "traiNNer.automations"
logger = logging.getLogger(LOGGER_NAME)


class ScalarWriter(Protocol):
    """The part of torch.utils.tensorboard.SummaryWriter the log uses."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None: ...


class DecisionSink(Protocol):
    """Receives every decision and the monitoring scalars of the automations."""

    def decision(self, iteration: int, decision: Decision, level: int = logging.INFO) -> None: ...

    def scalars(self, iteration: int, automation: str, values: Mapping[str, float]) -> None: ...


def format_value(value: Value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_decision(decision: Decision) -> str:
    return (
        f"[{decision.automation}] {decision.parameter}: {format_value(decision.old)} -> "
        f"{format_value(decision.new)} ({decision.reason})"
    )


def scalar_value(value: Value) -> float | None:
    """The number TensorBoard shows for a value, or None when it has none."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _json_value(value: Value) -> Value:
    # Strict JSON has no NaN/Infinity; keep them readable as strings.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def tag_for(automation: str, quantity: str) -> str:
    return f"automations/{automation}/{quantity.replace('.', '/')}"


class DecisionLog:
    """The default sink: console line + TensorBoard scalar + JSON line per decision.

    `jsonl_path` and `tb_writer` may be None (that output is then skipped).
    """

    def __init__(
        self, jsonl_path: str | Path | None, tb_writer: ScalarWriter | None = None
    ) -> None:
        self.jsonl_path = Path(jsonl_path) if jsonl_path is not None else None
        self.tb_writer = tb_writer
        if self.jsonl_path is not None:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)

    def decision(self, iteration: int, decision: Decision, level: int = logging.INFO) -> None:
        logger.log(level, format_decision(decision))
        number = scalar_value(decision.new)
        if self.tb_writer is not None and number is not None:
            self.tb_writer.add_scalar(
                tag_for(decision.automation, decision.parameter), number, iteration
            )
        if self.jsonl_path is not None:
            record = {
                "iteration": iteration,
                "automation": decision.automation,
                "parameter": decision.parameter,
                "old": _json_value(decision.old),
                "new": _json_value(decision.new),
                "reason": decision.reason,
            }
            with self.jsonl_path.open("a", encoding="utf-8") as file:
                file.write(json.dumps(record) + "\n")

    def scalars(self, iteration: int, automation: str, values: Mapping[str, float]) -> None:
        if self.tb_writer is None:
            return
        for quantity, value in values.items():
            if math.isfinite(value):
                self.tb_writer.add_scalar(tag_for(automation, quantity), value, iteration)


def read_decisions(jsonl_path: str | Path) -> list[dict[str, Value]]:
    """Every record of an automations.jsonl file, in order."""
    with Path(jsonl_path).open(encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]
