"""`train.automations`: one optional block per registered automation.

The struct is derived from the registry, so an automation registered anywhere (its
own module, a test, a plugin) is accepted and strictly checked without an edit here.
`AutomationsOptions` is the struct for the built-in automations (the option schema
and docs are generated from it); the loader decodes with `automations_options_type()`,
which also covers automations registered later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from traiNNer.automations.base import AutomationConfig
from traiNNer.automations.registry import registered_automations

_STRUCTS: dict[tuple[tuple[str, type[AutomationConfig]], ...], type[msgspec.Struct]] = {}


def automations_options_type(builtin_only: bool = False) -> type[msgspec.Struct]:
    """A strict struct with one optional field per registered automation (or per
    automation of this package: the documented ones)."""
    key = tuple(
        (name, cls.config_type)
        for name, cls in registered_automations().items()
        if not builtin_only or cls.__module__.startswith(f"{__package__}.")
    )
    if key not in _STRUCTS:
        _STRUCTS[key] = msgspec.defstruct(
            "AutomationsOptions",
            [(name, config_type | None, None) for name, config_type in key],
            forbid_unknown_fields=True,
            kw_only=True,
            module=__name__,
        )
    return _STRUCTS[key]


def configured_automations(options: Any) -> dict[str, AutomationConfig]:
    """name -> config of every block present in a decoded `train.automations`."""
    if options is None:
        return {}
    configs: dict[str, AutomationConfig] = {}
    for field in msgspec.structs.fields(type(options)):
        config = getattr(options, field.name)
        if config is not None:
            configs[field.name] = config
    return configs


def enabled_automations(options: Any) -> dict[str, AutomationConfig]:
    """The blocks with `enabled: true`, by name."""
    return {name: cfg for name, cfg in configured_automations(options).items() if cfg.enabled}


if TYPE_CHECKING:
    AutomationsOptions = msgspec.Struct
else:
    AutomationsOptions = automations_options_type(builtin_only=True)
