"""The one object the trainer talks to: builds the enabled automations, calls their
hooks, applies their decisions to the `Knobs` and logs every decision.

Call order expected from the trainer:
- construct, then on resume `load_state_dict(state)`, then `on_train_start(info)`,
  then on a fresh run `run_startup(trials)` (the automations' start-up phases);
- every iteration `observe_step(record)` (runs `on_interval` where due);
- `after_validation`, `on_oom`, `on_nonfinite` when those happen, then
  `pop_actions()` to perform trainer-side actions (restore best weights, ...);
- `state_dict()` into the training state.

Safety rules enforced here, whatever an automation returns:
- a value outside `Decision.bounds` is clamped (the logged reason says so); a
  non-finite number is refused;
- after `max_adjustments` adjustments (hook calls that changed at least one knob)
  an automation is frozen: its hooks stop running and its values stay;
- an automation that raises is disabled with a warning and the knobs keep their last
  values. A `UserError` raised while the run starts (construction, `on_train_start`)
  stops the run instead, because the user has to fix the option file.

DDP: automations run on rank 0 only. Rank 0's decisions are broadcast with
`torch.distributed.broadcast_object_list` at the iterations where a hook fires
(interval, validation, OOM, non-finite, start) and every rank applies them the same
way. Every rank must therefore call every hook at the same iteration. With
`world_size == 1` nothing from torch.distributed is used.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal, TypeVar

import msgspec

from traiNNer.automations.base import (
    Automation,
    Decision,
    Knobs,
    StepRecord,
    TrainInfo,
    TrialSteps,
)
from traiNNer.automations.config import enabled_automations
from traiNNer.automations.decision_log import LOGGER_NAME, DecisionSink
from traiNNer.automations.registry import get_automation
from traiNNer.utils.errors import UserError

logger = logging.getLogger(LOGGER_NAME)

STATE_VERSION = 1

Proposal = tuple[str, list[Decision]]
T = TypeVar("T")


def build_automations(options: Any) -> list[Automation]:
    """The enabled automations of a decoded `train.automations`, in name order."""
    automations: list[Automation] = []
    for name, config in sorted(enabled_automations(options).items()):
        automation_type = get_automation(name)
        if not isinstance(config, automation_type.config_type):
            raise TypeError(
                f"train.automations.{name}: config is {type(config).__name__}, "
                f"expected {automation_type.config_type.__name__}"
            )
        automations.append(automation_type(config))
    return automations


def _overrides(automation: Automation, hook: str) -> bool:
    return getattr(type(automation), hook) is not getattr(Automation, hook)


def _clamp(value: float | int, bounds: tuple[float, float]) -> float | int:
    low, high = bounds
    clamped = min(max(value, low), high)
    return int(clamped) if isinstance(value, int) else float(clamped)


class AutomationController:
    """Runs the automations configured under `train.automations`."""

    def __init__(
        self,
        options: Any,
        knobs: Knobs,
        sink: DecisionSink,
        *,
        is_main: bool = True,
        world_size: int = 1,
        automations: Sequence[Automation] | None = None,
    ) -> None:
        """`automations`, when given, replaces those built from `options` (custom
        automations, tests)."""
        self.options = options
        self.knobs = knobs
        self.sink = sink
        self.is_main = is_main
        self.world_size = world_size
        self.automations = (
            list(automations) if automations is not None else build_automations(options)
        )
        self._by_name = {automation.name: automation for automation in self.automations}
        # Fixed at construction so that every rank agrees on when a broadcast happens.
        self._intervals = [a.interval for a in self.automations if a.interval > 0]
        self._adjustments = dict.fromkeys(self._by_name, 0)
        self._frozen: set[str] = set()
        self._disabled: set[str] = set()
        # knob parameter -> automation that last changed it (restored on resume).
        self._changed_by: dict[str, str] = {}
        self._actions: list[Decision] = []
        self._starting = False

    # ------------------------------------------------------------------ queries

    @property
    def enabled(self) -> bool:
        return bool(self.automations)

    def get(self, name: str) -> Automation | None:
        return self._by_name.get(name)

    def is_active(self, name: str) -> bool:
        return name in self._by_name and name not in self._frozen and name not in self._disabled

    def adjustments(self, name: str) -> int:
        return self._adjustments.get(name, 0)

    def summary(self) -> str:
        """One line per automation for the end of training."""
        lines: list[str] = []
        for automation in self.automations:
            status = (
                "disabled"
                if automation.name in self._disabled
                else "frozen"
                if automation.name in self._frozen
                else "active"
            )
            line = f"[{automation.name}] {status}, {self.adjustments(automation.name)} adjustments"
            describe = getattr(automation, "summary", None)
            if callable(describe):
                line += f"; {describe()}"
            lines.append(line)
        return "\n".join(lines)

    def pop_actions(self) -> list[Decision]:
        """Trainer-side actions decided since the last call (e.g. restore_best_weights)."""
        actions, self._actions = self._actions, []
        return actions

    # -------------------------------------------------------------------- hooks

    def on_train_start(self, info: TrainInfo) -> list[Decision]:
        """Every rank starts its automations alike (their state must agree for the start-up
        phases, which run on every rank); rank 0's decisions are applied everywhere."""
        self._starting = True
        proposals: list[Proposal] = []
        user_error: UserError | None = None
        try:
            for automation in self.automations:
                if not self.is_active(automation.name):
                    continue
                try:
                    decisions = list(automation.on_train_start(info, self.knobs))
                except UserError as error:
                    user_error = error if self.is_main else None
                    break
                except Exception as error:
                    if self.is_main:
                        self._disable(info.start_iter, automation, "on_train_start", error)
                    continue
                if self.is_main and decisions:
                    proposals.append((automation.name, decisions))
            return self._share_and_apply(info.start_iter, proposals, user_error, counts=False)
        finally:
            self._starting = False

    def observe_step(self, record: StepRecord) -> None:
        """Every iteration: device-side bookkeeping, plus `on_interval` where due."""
        if self.is_main:
            for automation in self.automations:
                if self.is_active(automation.name):
                    try:
                        automation.observe_step(record)
                    except Exception as error:
                        self._disable(record.iteration, automation, "observe_step", error)
        iteration = record.iteration
        if any(iteration % interval == 0 for interval in self._intervals):
            self._run_interval(iteration)

    def after_validation(self, iteration: int, metrics: dict[str, float]) -> list[Decision]:
        applied = self._dispatch(
            iteration,
            "after_validation",
            lambda a: a.after_validation(iteration, metrics, self.knobs),
        )
        # Automations that react to validation report their scalars with it (as do those
        # without an interval, which have no other moment).
        self._log_scalars(
            iteration,
            [
                a
                for a in self.automations
                if a.interval == 0 or type(a).after_validation is not Automation.after_validation
            ],
        )
        return applied

    def on_oom(self, iteration: int, phase: Literal["train", "val"]) -> list[Decision]:
        """Apply the first remedy an automation offers; [] means nothing could be done
        (the trainer should then re-raise the error instead of retrying)."""
        order = sorted(
            (a for a in self.automations if _overrides(a, "on_oom")),
            key=lambda a: type(a).oom_priority,
        )
        return self._dispatch(
            iteration,
            "on_oom",
            lambda a: a.on_oom(iteration, phase, self.knobs),
            order=order,
            first_only=True,
        )

    def on_nonfinite(self, iteration: int) -> list[Decision]:
        return self._dispatch(
            iteration, "on_nonfinite", lambda a: a.on_nonfinite(iteration, self.knobs)
        )

    def run_startup(self, trials: TrialSteps, iteration: int = 0) -> list[Decision]:
        """The start-up phases of a fresh run, by `startup_priority` (e.g. the optimizer
        race, then the batch-size search).

        Trial steps are collective under DDP, so every rank runs every phase; the trial
        runner makes their outcomes identical on every rank, and rank 0's decisions are
        applied everywhere. A UserError (nothing fits) stops the run on every rank.
        """
        # Rank 0's view of which automations are active decides for every rank.
        names = self._broadcast(
            [
                a.name
                for a in sorted(self.automations, key=lambda a: type(a).startup_priority)
                if _overrides(a, "run_startup") and self.is_active(a.name)
            ]
        )
        applied: list[Decision] = []
        for name in names:
            automation = self._by_name[name]
            proposals: list[Proposal] = []
            user_error: UserError | None = None
            try:
                decisions = automation.run_startup(trials, self.knobs)
                if self.is_main and decisions:
                    proposals.append((name, decisions))
            except UserError as error:
                user_error = error if self.is_main else None
            except Exception as error:
                self._disable(iteration, automation, "run_startup", error)
            applied += self._share_and_apply(iteration, proposals, user_error, counts=False)
            self._log_scalars(iteration, [automation])
        return applied

    # ------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "automations": {a.name: a.state_dict() for a in self.automations},
            "configs": {a.name: msgspec.json.encode(a.config).decode() for a in self.automations},
            "adjustments": dict(self._adjustments),
            "disabled": sorted(self._disabled),
            "knobs": {
                parameter: {"automation": name, "value": self.knobs.get(parameter)}
                for parameter, name in self._changed_by.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore automation state and the knob values the automations had set.

        A knob is restored only while the automation that set it is still enabled,
        so turning an automation off on resume returns its knobs to the config.
        An automation disabled by an error stays disabled unless its config changed.
        """
        saved_states: dict[str, Any] = state.get("automations", {})
        saved_configs: dict[str, str] = state.get("configs", {})
        for automation in self.automations:
            name = automation.name
            if name in saved_states:
                automation.load_state_dict(saved_states[name])
            self._adjustments[name] = int(state.get("adjustments", {}).get(name, 0))
            limit = automation.config.max_adjustments
            if limit > 0 and self._adjustments[name] >= limit:
                self._frozen.add(name)
            unchanged = saved_configs.get(name) == msgspec.json.encode(automation.config).decode()
            if name in state.get("disabled", []) and unchanged:
                self._disabled.add(name)
        for parameter, entry in state.get("knobs", {}).items():
            if entry["automation"] in self._by_name:
                self.knobs.set(parameter, entry["value"])
                self._changed_by[parameter] = entry["automation"]
            elif self.is_main:
                logger.info(
                    "[%s] is not enabled in this run: %s returns to the option file's value",
                    entry["automation"],
                    parameter,
                )

    # ---------------------------------------------------------------- internals

    def _run_interval(self, iteration: int) -> None:
        due = [a for a in self.automations if a.interval > 0 and iteration % a.interval == 0]
        self._dispatch(
            iteration, "on_interval", lambda a: a.on_interval(iteration, self.knobs), order=due
        )
        self._log_scalars(iteration, due)

    def _log_scalars(self, iteration: int, automations: Iterable[Automation]) -> None:
        if not self.is_main:
            return
        for automation in automations:
            if self.is_active(automation.name):
                try:
                    values = automation.scalars()
                except Exception as error:
                    self._disable(iteration, automation, "scalars", error)
                    continue
                if values:
                    self.sink.scalars(iteration, automation.name, values)

    def _dispatch(
        self,
        iteration: int,
        hook: str,
        call: Callable[[Automation], list[Decision]],
        *,
        order: Iterable[Automation] | None = None,
        first_only: bool = False,
        counts: bool = True,
    ) -> list[Decision]:
        """Run `call` on rank 0's active automations, share and apply the decisions."""
        proposals: list[Proposal] = []
        user_error: UserError | None = None
        if self.is_main:
            for automation in self.automations if order is None else order:
                if not self.is_active(automation.name):
                    continue
                try:
                    decisions = list(call(automation))
                except Exception as error:
                    if self._starting and isinstance(error, UserError):
                        user_error = error
                        break
                    self._disable(iteration, automation, hook, error)
                    continue
                if decisions:
                    proposals.append((automation.name, decisions))
                    if first_only:
                        break
        return self._share_and_apply(iteration, proposals, user_error, counts=counts)

    def _share_and_apply(
        self,
        iteration: int,
        proposals: list[Proposal],
        user_error: UserError | None,
        *,
        counts: bool,
    ) -> list[Decision]:
        """Give every rank rank 0's decisions (or its UserError, raised everywhere) and apply."""
        proposals, user_error = self._broadcast((proposals, user_error))
        if user_error is not None:
            raise user_error
        return self._apply_all(iteration, proposals, counts=counts)

    def _apply_all(
        self, iteration: int, proposals: list[Proposal], *, counts: bool
    ) -> list[Decision]:
        applied: list[Decision] = []
        for name, decisions in proposals:
            applied.extend(self._apply(iteration, name, decisions, counts=counts))
        return applied

    def _apply(
        self, iteration: int, name: str, decisions: list[Decision], *, counts: bool
    ) -> list[Decision]:
        if name in self._frozen:
            return []
        applied: list[Decision] = []
        changed_knob = False
        for decision in decisions:
            decision = replace(decision, automation=name)
            if decision.is_action:
                if decision.parameter not in type(self._by_name[name]).actions:
                    self._log(
                        iteration,
                        Decision(
                            name,
                            "enabled",
                            True,
                            False,
                            f"refused action {decision.parameter}: not in its declared actions",
                        ),
                        logging.WARNING,
                    )
                    self._disabled.add(name)
                    return applied
                self._actions.append(decision)
                self._log(iteration, decision)
                applied.append(decision)
                continue
            final = self._checked(iteration, decision)
            if final is None:
                continue
            try:
                self.knobs.set(final.parameter, final.new)
            except (KeyError, AttributeError, TypeError) as error:
                self._log(
                    iteration,
                    Decision(name, "enabled", True, False, f"refused {final.parameter}: {error}"),
                    logging.WARNING,
                )
                self._disabled.add(name)
                return applied
            self._changed_by[final.parameter] = name
            self._log(iteration, final)
            applied.append(final)
            changed_knob = True
        if changed_knob and counts:
            self._count_adjustment(iteration, name)
        return applied

    def _checked(self, iteration: int, decision: Decision) -> Decision | None:
        """The decision as it will be applied (bounds enforced), or None if nothing changes."""
        try:
            old = self.knobs.get(decision.parameter)
        except AttributeError:
            old = decision.old  # unknown knob: reported when set
        new = decision.new
        reason = decision.reason
        if isinstance(new, int | float) and not isinstance(new, bool):
            if not math.isfinite(new):
                self._log(
                    iteration,
                    replace(decision, old=old, reason=f"refused non-finite value; {reason}"),
                    logging.WARNING,
                )
                return None
            if decision.bounds is not None:
                clamped = _clamp(new, decision.bounds)
                if clamped != new:
                    reason = f"{reason}; clamped from {new:.6g} to its bound {clamped:.6g}"
                    new = clamped
        if new == old:
            return None
        return replace(decision, old=old, new=new, reason=reason)

    def _count_adjustment(self, iteration: int, name: str) -> None:
        self._adjustments[name] += 1
        limit = self._by_name[name].config.max_adjustments
        if limit > 0 and self._adjustments[name] >= limit:
            self._frozen.add(name)
            self._log(
                iteration,
                Decision(
                    name,
                    "frozen",
                    False,
                    True,
                    f"reached max_adjustments={limit}; values stay as they are",
                ),
                logging.WARNING,
            )

    def _disable(self, iteration: int, automation: Automation, hook: str, error: Exception) -> None:
        self._disabled.add(automation.name)
        logger.debug("automation %s failed in %s", automation.name, hook, exc_info=error)
        message = (
            f"{type(error).__name__} in {hook}: {error}; training continues with the current values"
        )
        self._log(
            iteration, Decision(automation.name, "enabled", True, False, message), logging.WARNING
        )

    def _log(self, iteration: int, decision: Decision, level: int = logging.INFO) -> None:
        if self.is_main:
            self.sink.decision(iteration, decision, level)

    # ------------------------------------------------------------ distributed

    def _broadcast(self, payload: T) -> T:
        if self.world_size <= 1:
            return payload
        import torch.distributed as dist

        holder: list[Any] = [payload if self.is_main else None]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def _all_ranks(self, flag: bool) -> bool:
        if self.world_size <= 1:
            return flag
        import torch.distributed as dist

        flags: list[Any] = [None] * self.world_size
        dist.all_gather_object(flags, flag)
        return all(flags)
