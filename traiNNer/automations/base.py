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

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import msgspec
import torch
from msgspec import Meta

from traiNNer.utils.errors import UserError, did_you_mean

Value = float | int | bool | str | None
Precision = Literal["fp32", "fp16", "bf16"]
Better = Literal["higher", "lower"]


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


@dataclass
class Knobs:
    """Every value an automation may change, read by the trainer each iteration."""

    lr_multiplier: float = 1.0
    clip_threshold: dict[str, float] = field(default_factory=dict)
    batch_size: int = 1
    accum_iter: int = 1
    stop_requested: bool = False
    val_interval: int = 1000
    val_tiled: bool = False
    aug_prob: float = 0.0
    weight_decay: float = 0.0
    precision: Precision = "fp32"
    activation_checkpointing: bool = False
    # Optimizer type chosen by optimizer_selection; "" keeps the configured optim_g type.
    optimizer: str = ""

    def get(self, parameter: str) -> Any:
        name, _, key = parameter.partition(".")
        value = getattr(self, name)
        return value.get(key) if key else value

    def set(self, parameter: str, value: Any) -> None:
        name, _, key = parameter.partition(".")
        if not hasattr(self, name):
            raise KeyError(f"unknown knob '{name}'")
        if key:
            getattr(self, name)[key] = value
        else:
            setattr(self, name, value)


# Actions are decisions whose effect is on the trainer, not a knob value.
ACTIONS = frozenset({"restore_best_weights", "restore_last_good_state", "save_good_state"})


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
        return self.parameter in ACTIONS


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


class Automation:
    """Base class. Subclasses set `name`, `config_type` and override hooks they need."""

    name: ClassVar[str]
    config_type: ClassVar[type[AutomationConfig]]

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
