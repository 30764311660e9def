"""The contract between the training loop and every automation.

An automation observes signals (step records, validation metrics, OOM and
non-finite events) and returns `Decision`s. It never touches the model, the
optimizer or the data loader: the `AutomationController` applies decisions to
`Knobs`, the small set of values the trainer reads back, and forwards actions
(restore weights, stop) to the trainer.

Hot-path rule: `observe_step` runs every iteration and must not read device
values on the host (no `.item()`, `.tolist()`, `float(tensor)`); keep running
statistics as device tensors and read them in `on_interval`, which runs every
`interval` iterations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol, TypeVar

import msgspec
import torch
from msgspec import Meta

from traiNNer.training.knobs import Knobs as Knobs
from traiNNer.training.knobs import Precision as Precision
from traiNNer.utils.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from traiNNer.config.schema import Options

Value = float | int | bool | str | dict[str, Any] | None
Better = Literal["higher", "lower"]
# The `better` key of automations that watch a validation metric; the loader fills a
# null one in from val.metrics (`Automation.completed`).
BetterOption = Annotated[
    Better | None,
    Meta(description="Direction in which the metric improves; null: the one val.metrics gives it."),
]
# What a metric key left null means where no option file says otherwise.
FALLBACK_METRIC = "psnr"


class AutomationConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Fields every automation accepts."""

    enabled: Annotated[bool, Meta(description="Turn this automation on.")] = False
    max_adjustments: Annotated[
        int,
        Meta(
            ge=0,
            description="After this many applied decisions the automation freezes its "
            "values and stops deciding (0 = no limit).",
        ),
    ] = 100


C = TypeVar("C", bound=AutomationConfig)


# What the trainer can do when an automation asks (a decision on one of these names is
# an action, not a knob value). An automation lists the ones it uses in `actions`.
TRAINER_ACTIONS = frozenset({"restore_best_weights", "restore_last_good_state", "save_good_state"})


@dataclass(frozen=True)
class Decision:
    """One change an automation asks for; applied and logged by the controller."""

    automation: str
    parameter: str
    old: Value
    new: Value
    reason: str
    bounds: tuple[float, float] | None = None

    @property
    def is_action(self) -> bool:
        return self.parameter in TRAINER_ACTIONS


@dataclass
class StepRecord:
    """What one optimizer step produced. Tensors are 0-dim, detached, on the device."""

    iteration: int
    losses: dict[str, torch.Tensor]
    grad_norms: dict[str, torch.Tensor]
    clipped: dict[str, torch.Tensor]
    loss_scale: torch.Tensor | None
    step_time: float
    peak_memory: int | None
    batch_size: int
    # False when the step was skipped (non-finite loss or gradient): the weights did not
    # change. A host bool the step has already read, so reading it costs nothing.
    applied: bool = True


@dataclass(frozen=True)
class TrainInfo:
    """Static facts about the run, given to `on_train_start`."""

    total_iter: int
    start_iter: int
    device_type: str
    bf16_supported: bool
    networks: tuple[str, ...] = ("net_g",)
    world_size: int = 1
    # Initial learning rate of net_g's optimizer: turns an absolute `min_lr` into a
    # bound on `Knobs.lr_multiplier`.
    base_lr: float | None = None
    # Bytes of memory on the training device (None on CPU): lets the batch size grow
    # while peak memory stays under a fraction of it.
    device_total_memory: int | None = None
    # Whether net_g has `set_activation_checkpointing` (the precision automation may use it).
    supports_activation_checkpointing: bool = False
    # train.scheduler's type (lowercase), None without one: whether the LR already decays.
    lr_schedule: str | None = None
    # The option file's val.val_freq (0 without validation): patience counted in
    # validations becomes iterations with it.
    val_freq: int = 0
    # optim_g's arguments without `type` (the optimizer race starts from them).
    optim_g: Mapping[str, Any] = field(default_factory=dict)
    # The option file's signed loss_weight of each enabled loss, by log name (l_g_l1).
    loss_weights: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricRead:
    """A validation metric an automation reads: checked against `val.metrics` at load."""

    option: str  # the key under the automation's block that names it, e.g. "metric"
    metric: str  # "psnr" or "<dataset>/psnr"
    better: Better | None = None  # the direction the automation assumes, when it has one


@dataclass(frozen=True)
class TrialOutcome:
    """What trial steps produced; identical on every DDP rank (the runner agrees them)."""

    losses: list[float]  # l_g_total of each step (mean over ranks)
    out_of_memory: bool


class TrialSteps(Protocol):
    """Runs real training steps from the current state and undoes them afterwards.

    `batch_size`: run every step on one micro-batch of that many samples (a memory
    probe); None: the first `steps` batches of the data stream, the same ones on
    every call. `optimizer`: (type, kwargs) to train the trial with instead of the
    current optimizer. Automations do not observe trial steps.
    """

    def __call__(
        self,
        steps: int,
        *,
        batch_size: int | None = None,
        optimizer: tuple[str, dict[str, Any]] | None = None,
    ) -> TrialOutcome: ...


class Automation:
    """Base class: one subclass per automation, self-contained in its own module.

    Declared on the class (read by the registry, the option loader and the controller):
    - `name`: the key under `train.automations`; `config_type`: its config struct;
    - `actions`: the trainer actions (TRAINER_ACTIONS) its decisions may request;
    - `oom_priority`: on an out-of-memory error remedies are asked in ascending order
      and the first that acts wins (cheap memory savings before a smaller batch);
    - `startup_priority`: order of the `run_startup` phases (optimizer race first);
    - `metric_options`: (metric key, direction key) pairs of its config, e.g.
      `(("metric", "better"),)`: the metrics it reads, checked against `val.metrics`
      at load (override `metric_reads` for anything else). A null direction key is
      filled in from val.metrics, and so is a null metric key listed in
      `default_metric_keys` (with the first validation metric), by `completed`;
    - `check_options`: other cross-checks against the rest of the options.
    """

    name: ClassVar[str]
    config_type: ClassVar[type[AutomationConfig]]
    actions: ClassVar[frozenset[str]] = frozenset()
    oom_priority: ClassVar[int] = 100
    startup_priority: ClassVar[int] = 100
    metric_options: ClassVar[tuple[tuple[str, str], ...]] = ()
    default_metric_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def completed(cls, config: C, opt: Options | None = None) -> C:
        """`config` with its null metric keys derived from the option file.

        A metric key in `default_metric_keys` left null becomes the first of val.metrics;
        a null direction becomes the one val.metrics declares for that metric. Without
        an option file (an automation built on its own) they become "psnr" and "higher".
        """
        metrics = opt.val.metrics if opt is not None and opt.val is not None else {}
        changes: dict[str, Any] = {}
        for metric_key, better_key in cls.metric_options:
            metric = getattr(config, metric_key)
            if metric is None and metric_key in cls.default_metric_keys:
                metric = changes[metric_key] = next(iter(metrics), FALLBACK_METRIC)
            if metric is not None and getattr(config, better_key) is None:
                declared = metrics.get(metric.rpartition("/")[2])
                changes[better_key] = (declared.better if declared else None) or "higher"
        return msgspec.structs.replace(config, **changes) if changes else config

    @classmethod
    def metric_reads(cls, config: Any) -> list[MetricRead]:
        """The validation metrics this automation reads with `config` (for the loader)."""
        reads: list[MetricRead] = []
        for metric_key, better_key in cls.metric_options:
            metric = getattr(config, metric_key)
            if metric is not None:  # an optional metric left null is off
                reads.append(MetricRead(metric_key, metric, getattr(config, better_key)))
        return reads

    @classmethod
    def check_options(cls, config: Any, opt: Options) -> None:
        """Raise ConfigError when `config` cannot work with the rest of `opt`."""

    def __init__(self, config: AutomationConfig) -> None:
        self.config = config

    @property
    def interval(self) -> int:
        """How often `on_interval` runs; 0 means never."""
        return 0

    def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
        return []

    def observe_step(self, record: StepRecord) -> None:
        """Every iteration; device-side bookkeeping only (see module docstring)."""

    def on_interval(self, iteration: int, knobs: Knobs) -> list[Decision]:
        return []

    def after_validation(
        self, iteration: int, metrics: dict[str, float], knobs: Knobs
    ) -> list[Decision]:
        return []

    def on_oom(
        self, iteration: int, phase: Literal["train", "val"], knobs: Knobs
    ) -> list[Decision]:
        return []

    def on_nonfinite(self, iteration: int, knobs: Knobs) -> list[Decision]:
        return []

    def run_startup(self, trials: TrialSteps, knobs: Knobs) -> list[Decision]:
        """Before the first iteration of a fresh run (not on resume), on every DDP rank.

        Decide from real steps run through `trials`; the decisions must follow from the
        trial outcomes alone (they are the same on every rank). Rank 0's are applied.
        """
        return []

    def scalars(self) -> dict[str, float]:
        """Monitoring values logged to TensorBoard after `on_interval` (no decisions)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Plain data (numbers, strings, lists, dicts, tensors) restored on resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def decide(
        self,
        knobs: Knobs,
        parameter: str,
        new: Value,
        reason: str,
        bounds: tuple[float, float] | None = None,
    ) -> list[Decision]:
        """A one-element decision list, or [] when the value would not change."""
        old = knobs.get(parameter)
        if old == new:
            return []
        return [Decision(self.name, parameter, old, new, reason, bounds)]


def metric_value(metrics: dict[str, float], name: str, option: str) -> float:
    """The validation metric `name` ("psnr" or "<dataset>/psnr") from `after_validation`.

    `option` is the YAML key that named the metric, quoted in the error when it is missing.
    """
    if name in metrics:
        return float(metrics[name])
    raise UserError(
        f"{option}: validation produced no metric '{name}'{did_you_mean(name, metrics)} "
        f"(available: {', '.join(sorted(metrics)) or 'none'})"
    )
