"""torch's SequentialLR and ChainedScheduler, with the schedules they combine given in the
option file as a list of `{type: ..., <options>}` mappings (torch wants scheduler objects,
which YAML cannot give, so traiNNer-redux cannot use these two from an option file)."""

from __future__ import annotations

import bisect
import math
from typing import Any

from traiNNer.config.validation import check_kwargs
from traiNNer.schedulers.base import SCHEDULER_PATH, BadValue, Schedule, need
from traiNNer.utils.errors import ConfigError
from traiNNer.utils.registry import SCHEDULER_REGISTRY

# torch's "chainable" schedules: each step multiplies the LR the others left, so chaining
# them is the product of their factors. The others set the LR outright in torch, where
# the result of a chain then depends on their order.
CHAINABLE = frozenset(
    {"constantlr", "linearlr", "exponentiallr", "steplr", "multisteplr", "polynomiallr"}
)
# Not inside a composite: a stateful schedule fed by validation (torch refuses it too),
# composites themselves, and the schedules that set the LR and momentum outright.
NOT_NESTED = frozenset(
    {"reducelronplateau", "sequentiallr", "chainedscheduler", "cycliclr", "onecyclelr"}
)


def _nested(
    entries: list[dict[str, Any]], owner: str, allowed: frozenset[str] | None = None
) -> list[Schedule]:
    """Build the listed schedules (unbound), each checked under its own YAML path."""
    need(bool(entries), "schedulers", "needs at least one schedule")
    built: list[Schedule] = []
    for index, entry in enumerate(entries):
        path = f"{SCHEDULER_PATH}.schedulers[{index}]"
        kwargs = dict(entry)
        type_name = kwargs.pop("type", None)
        if not isinstance(type_name, str):
            raise ConfigError(f"{path}.type: required key is missing (a registered scheduler)")
        factory = SCHEDULER_REGISTRY.get(type_name, f"{path}.type")
        key = type_name.lower()
        if key in NOT_NESTED or (allowed is not None and key not in allowed):
            accepted = ", ".join(sorted(allowed if allowed is not None else set()))
            extra = f" (accepted: {accepted})" if allowed is not None else ""
            raise ConfigError(f"{path}.type: {type_name} cannot be part of {owner}{extra}")
        checked = check_kwargs(factory, kwargs, path)
        try:
            built.append(factory(**checked))
        except BadValue as err:
            raise ConfigError(f"{path}.{err.key}: {err.message}") from None
    return built


def _bind_all(schedules: list[Schedule], total_iter: int, base_lr: float) -> None:
    for index, schedule in enumerate(schedules):
        try:
            schedule.bind(total_iter, base_lr)
        except BadValue as err:
            path = f"{SCHEDULER_PATH}.schedulers[{index}]"
            raise ConfigError(f"{path}.{err.key}: {err.message}") from None


@SCHEDULER_REGISTRY.register("sequentiallr")
class SequentialLR(Schedule):
    """`schedulers[0]` until `milestones[0]`, then `schedulers[1]` started afresh (its
    iteration counted from the milestone) until `milestones[1]`, and so on.

    Example: `{type: SequentialLR, milestones: [1000], schedulers: [{type: LinearLR,
    start_factor: 0.01, total_iters: 1000}, {type: CosineAnnealingLR, T_max: 99000}]}`.
    Any schedule but ReduceLROnPlateau, CyclicLR, OneCycleLR and the composites can be
    listed. Defaults that come from the run (e.g. CosineAnnealingLR's T_max) are the whole
    run's, not the part's.
    """

    def __init__(self, schedulers: list[dict[str, Any]], milestones: list[int]) -> None:
        self.schedules = _nested(schedulers, "SequentialLR")
        need(
            len(milestones) == len(self.schedules) - 1,
            "milestones",
            f"needs one milestone fewer than schedulers (got {len(milestones)} for "
            f"{len(self.schedules)})",
        )
        need(
            list(milestones) == sorted(milestones),
            "milestones",
            f"must be in increasing order (got {list(milestones)})",
        )
        self.milestones = list(milestones)

    def bind(self, total_iter: int, base_lr: float) -> None:
        _bind_all(self.schedules, total_iter, base_lr)

    def _active(self, iteration: int) -> tuple[Schedule, int]:
        index = bisect.bisect_right(self.milestones, iteration)
        started = self.milestones[index - 1] if index > 0 else 0
        return self.schedules[index], iteration - started

    def factor(self, iteration: int) -> float:
        schedule, local = self._active(iteration)
        return schedule.factor(local)

    def momentum(self, iteration: int) -> float | None:
        schedule, local = self._active(iteration)
        return schedule.momentum(local)


@SCHEDULER_REGISTRY.register("chainedscheduler")
class ChainedScheduler(Schedule):
    """Every schedule in `schedulers` at once: the product of their factors, which is what
    torch gives for the chainable ones it accepts here (ConstantLR, LinearLR, ExponentialLR,
    StepLR, MultiStepLR, PolynomialLR).

    Example: `{type: ChainedScheduler, schedulers: [{type: ConstantLR, factor: 0.1,
    total_iters: 100}, {type: ExponentialLR, gamma: 0.9999}]}`.
    """

    def __init__(self, schedulers: list[dict[str, Any]]) -> None:
        self.schedules = _nested(schedulers, "ChainedScheduler", CHAINABLE)

    def bind(self, total_iter: int, base_lr: float) -> None:
        _bind_all(self.schedules, total_iter, base_lr)

    def factor(self, iteration: int) -> float:
        return math.prod(schedule.factor(iteration) for schedule in self.schedules)


__all__ = ["CHAINABLE", "ChainedScheduler", "SequentialLR"]
