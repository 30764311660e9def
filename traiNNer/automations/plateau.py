"""Plateau detection shared by the LR automations (ReduceLROnPlateau semantics)."""

from __future__ import annotations

import math
from typing import Any, Literal

Mode = Literal["min", "max"]
ThresholdMode = Literal["rel", "abs"]


class PlateauDetector:
    """Counts updates without significant improvement; fires after `patience` of them.

    An update improves on the best value when it beats it by more than `threshold`
    (relative to the best in `rel` mode, absolute in `abs` mode). After firing, the
    detector waits `cooldown` updates before counting again. Non-finite values never
    improve and count as bad.
    """

    def __init__(
        self,
        mode: Mode,
        patience: int,
        threshold: float = 1e-4,
        threshold_mode: ThresholdMode = "rel",
        cooldown: int = 0,
    ) -> None:
        self.mode = mode
        self.patience = patience
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.cooldown = cooldown
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad = 0
        self.cooldown_left = 0

    def is_improvement(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if math.isinf(self.best):
            return True
        margin = self.threshold * abs(self.best) if self.threshold_mode == "rel" else self.threshold
        if self.mode == "min":
            return value < self.best - margin
        return value > self.best + margin

    def update(self, value: float) -> bool:
        """Feed one observation; True when a plateau is declared on this update."""
        if self.is_improvement(value):
            self.best = value
            self.num_bad = 0
        else:
            self.num_bad += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.num_bad = 0
            return False
        if self.num_bad > self.patience:
            self.num_bad = 0
            self.cooldown_left = self.cooldown
            return True
        return False

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_left > 0

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "num_bad": self.num_bad, "cooldown_left": self.cooldown_left}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.num_bad = int(state["num_bad"])
        self.cooldown_left = int(state["cooldown_left"])
