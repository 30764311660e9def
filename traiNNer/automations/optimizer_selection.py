"""`optimizer_selection`: a short race of candidate optimizers before training.

The race is the automation's start-up phase (`run_startup`): for each candidate the
trainer's trial runner runs `trial_iterations` training steps with that optimizer from
the same initial weights on the same batches, returns the losses, and restores the
initial state afterwards.
The candidate with the lowest smoothed loss wins; candidates within `tie_tolerance`
of it count as tied and the configured `default` wins a tie it is part of. A
candidate whose losses are not all finite (or that ran out of memory) is out of the
race; if all are out, `default` is used.

The choice goes into `Knobs.optimizer` / `Knobs.optimizer_kwargs` and into the
automation state, so a resumed run keeps it without racing again; no hook ever changes
it during training.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from traiNNer.automations.base import (
    Automation,
    AutomationConfig,
    Decision,
    Knobs,
    TrainInfo,
    TrialOutcome,
    TrialSteps,
)
from traiNNer.automations.registry import register_automation

if TYPE_CHECKING:
    from traiNNer.config.schema import Options

logger = logging.getLogger("traiNNer.automations")

Smoothing = Literal["ema", "tail_mean"]
SCALARS_INTERVAL = 100  # iterations between TensorBoard scalars


# Arguments a candidate gets unless candidate_kwargs says otherwise: Prodigy estimates
# the step size itself and expects lr 1.0 (its documented default), not optim_g's lr.
BUILTIN_CANDIDATE_KWARGS: dict[str, dict[str, Any]] = {"prodigy": {"lr": 1.0}}


class OptimizerSelectionConfig(AutomationConfig):
    """Options of the `optimizer_selection` automation."""

    candidates: Annotated[
        list[str],
        Meta(
            min_length=1,
            description="Optimizer types to race, as registered (e.g. adamw, nadam, "
            "adamwschedulefree, prodigy).",
        ),
    ] = msgspec.field(default_factory=lambda: ["adamw", "nadam", "adamwschedulefree", "prodigy"])
    default: Annotated[
        str, Meta(description="Candidate that wins ties, and the fallback if all fail.")
    ] = "adamw"
    trial_iterations: Annotated[
        int, Meta(ge=1, description="Training steps each candidate runs.")
    ] = 100
    smoothing: Annotated[
        Smoothing,
        Meta(description="ema: bias-corrected EMA of the losses; tail_mean: mean of the tail."),
    ] = "ema"
    ema_beta: Annotated[float, Meta(ge=0, lt=1, description="EMA decay for smoothing: ema.")] = 0.9
    tail_fraction: Annotated[
        float,
        Meta(gt=0, le=1, description="Fraction of the last losses averaged by tail_mean."),
    ] = 0.25
    tie_tolerance: Annotated[
        float,
        Meta(ge=0, description="Relative margin within which smoothed losses count as tied."),
    ] = 0.01
    candidate_kwargs: Annotated[
        dict[str, dict[str, Any]],
        Meta(
            description="Per-candidate optimizer arguments that override optim_g's "
            "(e.g. prodigy: {lr: 1.0})."
        ),
    ] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.candidates = [name.lower() for name in self.candidates]
        self.default = self.default.lower()
        self.candidate_kwargs = {k.lower(): v for k, v in self.candidate_kwargs.items()}
        duplicates = sorted({n for n in self.candidates if self.candidates.count(n) > 1})
        if duplicates:
            raise ValueError(f"candidates lists {', '.join(duplicates)} more than once")
        if self.default not in self.candidates:
            raise ValueError(
                f"default '{self.default}' is not one of candidates ({', '.join(self.candidates)})"
            )
        extra = sorted(set(self.candidate_kwargs) - set(self.candidates))
        if extra:
            raise ValueError(
                f"candidate_kwargs names {', '.join(extra)}, not in candidates "
                f"({', '.join(self.candidates)})"
            )


def smoothed_loss(losses: Sequence[float], smoothing: Smoothing, beta: float, tail: float) -> float:
    """One number summarising a trial's loss curve at its end; inf if any loss is not finite."""
    if not losses or not all(math.isfinite(x) for x in losses):
        return math.inf
    if smoothing == "tail_mean":
        count = max(1, math.ceil(len(losses) * tail))
        return sum(losses[-count:]) / count
    average = 0.0
    for loss in losses:
        average = beta * average + (1.0 - beta) * loss
    # Bias correction: the average started at 0, not at the first loss.
    return average / (1.0 - beta ** len(losses))


@dataclass(frozen=True)
class TrialResult:
    """One row of the race table."""

    name: str
    iterations: int
    final_loss: float  # last raw loss (inf when there was none)
    smoothed_loss: float  # inf when the trial diverged or failed
    status: str  # "winner", "tied", "diverged", "failed" (no losses) or ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "iterations": self.iterations,
            "final_loss": self.final_loss,
            "smoothed_loss": self.smoothed_loss,
            "status": self.status,
        }


def format_table(rows: Sequence[TrialResult]) -> str:
    header = ("optimizer", "iterations", "final loss", "smoothed loss", "")
    lines = [header] + [
        (r.name, str(r.iterations), f"{r.final_loss:.6g}", f"{r.smoothed_loss:.6g}", r.status)
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


@dataclass(frozen=True)
class RaceOutcome:
    winner: str
    rows: list[TrialResult]
    reason: str

    def table(self) -> str:
        return format_table(self.rows)


class OptimizerRace:
    """Runs each candidate's trial and picks the winner (see module docstring)."""

    def __init__(self, config: OptimizerSelectionConfig) -> None:
        self.cfg = config

    def judge(self, losses_by_name: Mapping[str, Sequence[float]]) -> RaceOutcome:
        cfg = self.cfg
        losses_by_name = {name: losses_by_name.get(name, []) for name in cfg.candidates}
        scores = {
            name: smoothed_loss(losses, cfg.smoothing, cfg.ema_beta, cfg.tail_fraction)
            for name, losses in losses_by_name.items()
        }
        finite = [name for name in cfg.candidates if math.isfinite(scores[name])]
        tied: list[str] = []
        if not finite:
            winner = cfg.default
            reason = f"no candidate finished with finite losses; using default {cfg.default}"
        else:
            best = min(finite, key=lambda name: scores[name])  # first in order on exact ties
            margin = cfg.tie_tolerance * abs(scores[best])
            tied = [name for name in finite if scores[name] <= scores[best] + margin]
            winner = cfg.default if cfg.default in tied else best
            reason = (
                f"lowest smoothed loss after {cfg.trial_iterations} iterations: "
                f"{scores[best]:.6g} ({best})"
            )
            if winner != best:
                reason += (
                    f"; {winner} ({scores[winner]:.6g}) is within tie_tolerance "
                    f"{cfg.tie_tolerance:g} and is the default"
                )
        rows: list[TrialResult] = []
        for name, losses in losses_by_name.items():
            if name == winner:
                status = "winner"
            elif not losses:
                status = "failed"
            elif not math.isfinite(scores[name]):
                status = "diverged"
            else:
                status = "tied" if name in tied else ""
            final = float(losses[-1]) if losses else math.inf
            rows.append(TrialResult(name, len(losses), final, scores[name], status))
        return RaceOutcome(winner, rows, reason)

    def run(self, run_trial: Callable[[str], TrialOutcome]) -> RaceOutcome:
        losses: dict[str, Sequence[float]] = {}
        for name in self.cfg.candidates:
            outcome = run_trial(name)
            if outcome.out_of_memory:
                # A candidate that needs more memory than the device has cannot win.
                logger.warning("optimizer race: %s ran out of memory; it is out", name)
            losses[name] = [] if outcome.out_of_memory else outcome.losses
        return self.judge(losses)


@register_automation
class OptimizerSelection(Automation):
    name: ClassVar[str] = "optimizer_selection"
    config_type: ClassVar[type[AutomationConfig]] = OptimizerSelectionConfig
    # The race runs before the batch-size search, which then measures the winner.
    startup_priority = 10

    def __init__(self, config: OptimizerSelectionConfig) -> None:
        super().__init__(config)
        self.cfg = config
        self.chosen: str | None = None
        self.rows: list[TrialResult] = []
        self.optim_g: dict[str, Any] = {}

    @classmethod
    def check_options(cls, config: OptimizerSelectionConfig, opt: Options) -> None:
        """Every candidate exists and accepts optim_g's arguments (with its overrides)."""
        from traiNNer.config.validation import check_kwargs
        from traiNNer.utils.registry import OPTIMIZER_REGISTRY

        assert opt.train is not None
        path = f"train.automations.{cls.name}"
        for name in config.candidates:
            optimizer = OPTIMIZER_REGISTRY.get(name, f"{path}.candidates")
            kwargs = candidate_kwargs(config, name, opt.train.optim_g)
            check_kwargs(optimizer, kwargs, f"{path}.candidate_kwargs.{name}", ("params",))

    @property
    def interval(self) -> int:
        # Decisions happen only before training; the interval only publishes `scalars()`.
        return SCALARS_INTERVAL

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
        self.optim_g = dict(info.optim_g)
        return self._keep_choice(knobs) if self.chosen is not None else []

    def run_startup(self, trials: TrialSteps, knobs: Knobs) -> list[Decision]:
        """Race the candidates from the same weights on the same batches; once per run."""
        if self.chosen is not None:
            return self._keep_choice(knobs)
        race = OptimizerRace(self.cfg)
        outcome = race.run(
            lambda name: trials(
                self.cfg.trial_iterations,
                optimizer=(name, candidate_kwargs(self.cfg, name, self.optim_g)),
            )
        )
        self.chosen = outcome.winner
        self.rows = outcome.rows
        logger.info("optimizer race (%s smoothing):\n%s", self.cfg.smoothing, outcome.table())
        return self._choice_decisions(knobs, outcome.reason)

    def table(self) -> str:
        return format_table(self.rows)

    def _keep_choice(self, knobs: Knobs) -> list[Decision]:
        return self._choice_decisions(knobs, "resume: keep the optimizer chosen by the race")

    def _choice_decisions(self, knobs: Knobs, reason: str) -> list[Decision]:
        assert self.chosen is not None
        # The arguments first: the model rebuilds the optimizer when the type changes.
        kwargs = candidate_kwargs(self.cfg, self.chosen, self.optim_g)
        decisions = self.decide(knobs, "optimizer_kwargs", kwargs, reason)
        # The weight-decay knob (optim_g's, or regularization_scheduling's) applies to the
        # winner too, unless candidate_kwargs gives the winner its own.
        own = self.cfg.candidate_kwargs.get(self.chosen, {})
        if "weight_decay" in own:
            wd_reason = f"candidate_kwargs.{self.chosen}.weight_decay; {reason}"
            decisions += self.decide(knobs, "weight_decay", float(own["weight_decay"]), wd_reason)
        return decisions + self.decide(knobs, "optimizer", self.chosen, reason)

    def scalars(self) -> dict[str, float]:
        return {
            f"{row.name}_smoothed_loss": row.smoothed_loss
            for row in self.rows
            if math.isfinite(row.smoothed_loss)
        }

    def state_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "rows": [row.as_dict() for row in self.rows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.chosen = state["chosen"]
        self.rows = [TrialResult(**row) for row in state["rows"]]


def candidate_kwargs(
    config: OptimizerSelectionConfig, name: str, optim_g: Mapping[str, Any]
) -> dict[str, Any]:
    """optim_g's arguments (without `type`) overridden by `candidate_kwargs[name]`."""
    merged = {k: v for k, v in optim_g.items() if k != "type"}
    merged.update(BUILTIN_CANDIDATE_KWARGS.get(name.lower(), {}))
    merged.update(config.candidate_kwargs.get(name.lower(), {}))
    return merged
