"""Automation name -> automation class, one `Registry` like every other kind.

An automation is one module in this package (or anywhere, e.g. a test or a plugin):
subclass `Automation`, declare `name` and `config_type` (and, when used, `actions`,
`oom_priority`, `startup_priority`, `metric_reads`, `check_options`) and decorate:

    @register_automation
    class Precision(Automation):
        name = "precision"
        config_type = PrecisionConfig

Nothing else is edited: `train.automations.<name>` is then accepted and checked by
the option loader, built by the controller, saved and resumed under its name.
`load_builtin_automations()` imports every module of this package, which runs their
decorators.

DDP note for authors: `Automation.interval` must depend on the config only (not on
state that changes during training), because every rank derives from it when a
broadcast of rank 0's decisions takes place.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TypeVar

from traiNNer.automations.base import TRAINER_ACTIONS, Automation, AutomationConfig
from traiNNer.utils.registry import Registry

AUTOMATION_REGISTRY: Registry[type[Automation]] = Registry("automation")
# The framework's own modules in this package (they define no automation and import
# the registry themselves); every other module is an automation or a helper of one.
FRAMEWORK_MODULES = frozenset({"base", "config", "controller", "decision_log", "registry"})

A = TypeVar("A", bound=type[Automation])


def register_automation(automation_type: A) -> A:
    """Class decorator: make `automation_type` available under its `name`."""
    name = getattr(automation_type, "name", None)
    config_type = getattr(automation_type, "config_type", None)
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise TypeError(f"{automation_type.__qualname__}.name must be a lowercase identifier")
    if not (isinstance(config_type, type) and issubclass(config_type, AutomationConfig)):
        raise TypeError(f"{automation_type.__qualname__}.config_type must be an AutomationConfig")
    unknown = automation_type.actions - TRAINER_ACTIONS
    if unknown:
        raise TypeError(
            f"{automation_type.__qualname__}.actions: the trainer has no action "
            f"{', '.join(sorted(unknown))} (it has: {', '.join(sorted(TRAINER_ACTIONS))})"
        )
    existing = AUTOMATION_REGISTRY.find(name)
    same_class = existing is not None and (
        (existing.__module__, existing.__qualname__)
        == (automation_type.__module__, automation_type.__qualname__)
    )
    # Re-importing the same module (importlib.reload) replaces its entry; two different
    # classes claiming one name is a programming error and raises in `add`.
    AUTOMATION_REGISTRY.add(name, automation_type, replace=same_class)
    return automation_type


def load_builtin_automations() -> None:
    """Import every module of this package so that their decorators run."""
    package = importlib.import_module("traiNNer.automations")
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_") and module.name not in FRAMEWORK_MODULES:
            importlib.import_module(f"traiNNer.automations.{module.name}")


def get_automation(name: str) -> type[Automation]:
    """The class registered under `name`; ConfigError naming the option when missing."""
    load_builtin_automations()
    return AUTOMATION_REGISTRY.get(name, f"train.automations.{name}")


def registered_automations() -> dict[str, type[Automation]]:
    """Every registered automation by name, sorted by name (the order they run in)."""
    load_builtin_automations()
    return {name: AUTOMATION_REGISTRY.get(name) for name in AUTOMATION_REGISTRY.names()}


def registered_names() -> list[str]:
    return list(registered_automations())
