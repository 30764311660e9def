"""A complete automation defined outside `traiNNer/` (the "writing an automation" example).

`lr_nudge` lowers the LR multiplier a little whenever the mean training loss over its
interval has not fallen since the last interval, and reads a validation metric only to
report it. Importing this module registers it; nothing else in the project names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import torch
from msgspec import Meta

from traiNNer.automations.base import (
    Automation,
    AutomationConfig,
    BetterOption,
    Decision,
    Knobs,
    StepRecord,
)
from traiNNer.automations.registry import register_automation
from traiNNer.utils.errors import ConfigError

if TYPE_CHECKING:
    from traiNNer.config.schema import Options


class LRNudgeConfig(AutomationConfig):
    every: Annotated[int, Meta(ge=1)] = 4
    factor: Annotated[float, Meta(gt=0, lt=1)] = 0.9
    metric: str = "psnr"
    better: BetterOption = "higher"


@register_automation
class LRNudge(Automation):
    name: ClassVar[str] = "lr_nudge"
    config_type: ClassVar[type[AutomationConfig]] = LRNudgeConfig
    metric_options = (("metric", "better"),)

    def __init__(self, config: LRNudgeConfig) -> None:
        super().__init__(config)
        self.cfg = config
        self.loss_sum: torch.Tensor | None = None
        self.steps = 0
        self.previous_mean: float | None = None
        self.intervals_seen = 0
        self.last_metric = float("nan")

    @classmethod
    def check_options(cls, config: LRNudgeConfig, opt: Options) -> None:
        if opt.train is not None and config.every > opt.train.total_iter:
            raise ConfigError(
                f"train.automations.lr_nudge.every: {config.every} is more than total_iter "
                f"({opt.train.total_iter}); it would never act"
            )

    @property
    def interval(self) -> int:
        return self.cfg.every

    def observe_step(self, record: StepRecord) -> None:
        loss = record.losses["l_g_total"].detach()
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.steps += 1

    def on_interval(self, iteration: int, knobs: Knobs) -> list[Decision]:
        if self.loss_sum is None:
            return []
        mean = float(self.loss_sum) / self.steps
        self.loss_sum, self.steps = None, 0
        self.intervals_seen += 1
        previous, self.previous_mean = self.previous_mean, mean
        if previous is None or mean < previous:
            return []
        new = knobs.lr_multiplier * self.cfg.factor
        reason = f"mean loss {mean:.4g} did not fall below {previous:.4g}"
        return self.decide(knobs, "lr_multiplier", new, reason, (0.01, 1.0))

    def after_validation(
        self, iteration: int, metrics: dict[str, float], knobs: Knobs
    ) -> list[Decision]:
        self.last_metric = metrics[self.cfg.metric]
        return []

    def scalars(self) -> dict[str, float]:
        return {"intervals_seen": float(self.intervals_seen), "metric": self.last_metric}

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss_sum": None if self.loss_sum is None else self.loss_sum.cpu(),
            "steps": self.steps,
            "previous_mean": self.previous_mean,
            "intervals_seen": self.intervals_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_sum = state["loss_sum"]
        self.steps = int(state["steps"])
        self.previous_mean = state["previous_mean"]
        self.intervals_seen = int(state["intervals_seen"])
