"""Automation name -> (config class, automation class).

How an automation module registers itself: subclass `Automation`, set the class
attributes `name` (the key under `train.automations`, e.g. "precision") and
`config_type` (its `AutomationConfig` subclass), and decorate the class:

    from traiNNer.automations.registry import register_automation

    @register_automation
    class Precision(Automation):
        name = "precision"
        config_type = PrecisionConfig

The controller asks `get_automation(name)`, which imports the module of that name
from `BUILTIN_MODULES` (`load_builtin_automations()` imports them all); importing a
module runs its decorators. A module that holds only a config class registers
nothing, so enabling that automation is reported as unavailable.

DDP note for authors: `Automation.interval` must depend on the config only (not on
state that changes during training), because every rank derives from it when a
broadcast of rank 0's decisions takes place.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple, TypeVar

from traiNNer.automations.base import Automation, AutomationConfig
from traiNNer.utils.errors import ConfigError

# Modules under traiNNer.automations that define the built-in automations.
BUILTIN_MODULES = (
    "lr_scheduling",
    "batch_size",
    "adaptive_gradient_clipping",
    "early_stopping",
    "precision",
    "validation_frequency",
    "augmentation_scheduling",
    "optimizer_selection",
    "regularization_scheduling",
    "multi_metric_lr",
)


class AutomationEntry(NamedTuple):
    config_type: type[AutomationConfig]
    automation_type: type[Automation]


_ENTRIES: dict[str, AutomationEntry] = {}

A = TypeVar("A", bound=type[Automation])


def register_automation(automation_type: A) -> A:
    """Class decorator: make `automation_type` available under its `name`."""
    name = automation_type.name
    existing = _ENTRIES.get(name)
    # Re-importing the same module (e.g. importlib.reload) replaces its entry; two
    # different classes claiming one name is a programming error.
    if existing is not None and (
        existing.automation_type.__qualname__ != automation_type.__qualname__
    ):
        raise KeyError(f"automation '{name}' is registered twice")
    _ENTRIES[name] = AutomationEntry(automation_type.config_type, automation_type)
    return automation_type


def load_builtin_automations() -> None:
    """Import the built-in automation modules so that their decorators run."""
    for module in BUILTIN_MODULES:
        importlib.import_module(f"traiNNer.automations.{module}")


def get_automation(name: str) -> AutomationEntry:
    """The entry registered under `name`; ConfigError naming the option when missing.

    Only the module of the requested built-in automation is imported.
    """
    if name not in _ENTRIES and name in BUILTIN_MODULES:
        importlib.import_module(f"traiNNer.automations.{name}")
    entry = _ENTRIES.get(name)
    if entry is None:
        raise ConfigError(
            f"train.automations.{name}: this automation is not available "
            f"(available: {', '.join(registered_names()) or 'none'})"
        )
    return entry


def registered_names() -> list[str]:
    return sorted(_ENTRIES)
