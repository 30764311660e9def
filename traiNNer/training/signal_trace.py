"""`logger.signal_trace`: what the automations saw, one JSON line per step or validation.

`experiments/<name>/signals.jsonl` holds, in order,

    {"iteration": 1234, "losses": {"l_g_l1": 0.031, "l_g_total": 0.037},
     "grad_norms": {"net_g": 0.045}, "loss_scale": 65536.0, "finite": true}
    {"iteration": 5000, "metrics": {"psnr": 31.2, "ssim": 0.91}}

(`loss_scale` only under fp16; `finite` false for a skipped step). Step values stay on the
device until `flush`, which the trainer calls where it reads the device anyway (the status
line, validation, checkpoints): one read per flush, none per step.
`scripts/automations/replay.py` feeds such a file back through the automations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from traiNNer.automations.base import StepRecord


def _number(value: Any) -> Any:
    # Strict JSON has no NaN/Infinity; keep them readable as strings.
    return value if math.isfinite(value) else str(value)


class SignalTrace:
    """Buffers step records on the device and appends them to `path` at each flush."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._steps: list[tuple[int, list[str], list[str], bool, list[torch.Tensor]]] = []

    def add_step(self, record: StepRecord) -> None:
        losses, norms = list(record.losses), list(record.grad_norms)
        values = [record.losses[n] for n in losses] + [record.grad_norms[n] for n in norms]
        if record.loss_scale is not None:
            values.append(record.loss_scale)
        # Copies, so that later in-place updates of the model's tensors do not leak in.
        tensors = [value.detach().float().reshape(()).clone() for value in values]
        self._steps.append((record.iteration, losses, norms, record.applied, tensors))

    def add_validation(self, iteration: int, metrics: dict[str, float]) -> None:
        self.flush()
        line = {"iteration": iteration, "metrics": {k: _number(v) for k, v in metrics.items()}}
        self._write([line])

    def flush(self) -> None:
        """Read every buffered step from the device at once and append them."""
        if not self._steps:
            return
        flat = torch.stack([t for *_, tensors in self._steps for t in tensors]).tolist()
        lines: list[dict[str, Any]] = []
        position = 0
        for iteration, losses, norms, applied, tensors in self._steps:
            values = flat[position : position + len(tensors)]
            position += len(tensors)
            line: dict[str, Any] = {
                "iteration": iteration,
                "losses": {n: _number(v) for n, v in zip(losses, values, strict=False)},
                "grad_norms": {
                    n: _number(v) for n, v in zip(norms, values[len(losses) :], strict=False)
                },
            }
            if len(values) > len(losses) + len(norms):
                line["loss_scale"] = _number(values[-1])
            line["finite"] = applied
            lines.append(line)
        self._steps = []
        self._write(lines)

    def truncate_after(self, iteration: int) -> None:
        """On resume: drop lines past the resumed iteration (they are about to be redone)."""
        if not self.path.is_file():
            return
        kept = [line for line in read_trace(self.path) if line["iteration"] <= iteration]
        self.path.write_text("", encoding="utf-8")
        self._write(kept)

    def _write(self, lines: list[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as file:
            file.writelines(json.dumps(line) + "\n" for line in lines)


def read_trace(path: str | Path) -> Iterator[dict[str, Any]]:
    """The lines of a signals.jsonl file, numbers restored ("nan" -> nan)."""

    def restore(value: Any) -> Any:
        if isinstance(value, str) and value in ("nan", "inf", "-inf"):
            return float(value)
        if isinstance(value, dict):
            return {k: restore(v) for k, v in value.items()}
        return value

    with Path(path).open(encoding="utf-8") as file:
        for text in file:
            if text.strip():
                yield restore(json.loads(text))
