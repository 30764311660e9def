"""`Knobs`: the values the automations may change and the trainer reads back.

Built once from the options (`Knobs.from_options`); afterwards only the automation
controller writes them, through `Knobs.set` (attribute assignment raises, so a stray
writer elsewhere fails loudly instead of silently fighting an automation). The model
reads them in `BaseModel.apply_knobs` and `optimize_parameters`, the trainer in its loop.

Resume rule (one, everywhere): a training state holds only the knob values an
automation set, each once, next to the name of that automation. On resume a value
comes back only while that automation is enabled; a knob whose automation was
switched off returns to what the option file says.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from traiNNer.config.schema import Options

Precision = Literal["fp32", "fp16", "bf16"]


@dataclass(frozen=True)
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
    # Optimizer type chosen by optimizer_selection and its arguments; "" keeps optim_g.
    optimizer: str = ""
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    # Signed effective weight of each loss by its log name (l_g_l1, ...).
    loss_weights: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_options(cls, opt: Options) -> Knobs:
        """The knob values the option file implies (what a run without automations uses)."""
        from traiNNer.models.precision import configured_precision

        train = opt.train
        train_set = opt.datasets.get("train")
        values: dict[str, Any] = {
            "precision": configured_precision(opt.use_amp, opt.amp_bf16),
            "val_interval": opt.val.val_freq if opt.val is not None else 0,
        }
        if train_set is not None:
            values["batch_size"] = train_set.batch_size_per_gpu
            values["accum_iter"] = train_set.accum_iter
        if train is not None:
            values["aug_prob"] = 1.0 if train.use_moa else 0.0
            values["weight_decay"] = configured_weight_decay(train.optim_g)
            values["loss_weights"] = configured_loss_weights(train.losses)
        return cls(**values)

    def get(self, parameter: str) -> Any:
        """`name` or `name.key` for the dict-valued knobs (clip_threshold.net_g)."""
        name, _, key = parameter.partition(".")
        value = getattr(self, name)
        return value.get(key) if key else value

    def set(self, parameter: str, value: Any) -> None:
        """The controller's write; KeyError for a knob that does not exist."""
        name, _, key = parameter.partition(".")
        if name.startswith("_") or name not in self.__dataclass_fields__:
            raise KeyError(f"unknown knob '{name}'")
        if key:
            getattr(self, name)[key] = value
        else:
            object.__setattr__(self, name, value)

    def values(self) -> dict[str, Any]:
        return {name: self.get(name) for name in self.__dataclass_fields__}


def configured_weight_decay(optim_g: dict[str, Any]) -> float:
    """optim_g's weight decay, or the optimizer's own default when the file omits it."""
    if "weight_decay" in optim_g:
        return float(optim_g["weight_decay"])
    from traiNNer.utils.registry import OPTIMIZER_REGISTRY

    factory = OPTIMIZER_REGISTRY.get(optim_g["type"], "train.optim_g.type")
    parameter = inspect.signature(factory).parameters.get("weight_decay")
    if parameter is None or not isinstance(parameter.default, int | float):
        return 0.0
    return float(parameter.default)


def loss_log_name(type_name: str, taken: set[str]) -> str:
    """`l1loss` -> `l_g_l1`, made unique when a type appears twice."""
    stem = type_name.lower().removesuffix("loss") or type_name.lower()
    name, index = f"l_g_{stem}", 2
    while name in taken:
        name, index = f"l_g_{stem}_{index}", index + 1
    taken.add(name)
    return name


def configured_loss_weights(losses: list[dict[str, Any]]) -> dict[str, float]:
    """Log name -> loss_weight of every enabled (non-zero weight) loss, in file order."""
    taken: set[str] = set()
    weights: dict[str, float] = {}
    for entry in losses:
        weight = float(entry.get("loss_weight", 1.0))
        if weight != 0:  # a 0-weight loss is off and takes no name
            weights[loss_log_name(entry["type"], taken)] = weight
    return weights
