"""Arch variants as data: one builder per family, one table row per registered name.

A `Family` names a typed hyperparameter holder (usually a frozen keyword-only
dataclass whose field defaults are the family's) and a builder
`build(name, scale, params)`; the variant name is only for error messages. A
`Variant` row picks a family and overrides some defaults.

Each row becomes a registered `VariantFactory` whose generated `__signature__` and
`__annotations__` are `scale: int = 4` plus the family's hyperparameters with the
row's defaults, all keyword-only. So the config check
(`traiNNer.config.validation.check_kwargs`) and the docs see each variant's own
defaults through both `inspect.signature` and `typing.get_type_hints`. The scale is
checked here, once, before any builder runs.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Generic, TypeVar

from torch import nn

from traiNNer.utils.errors import ConfigError
from traiNNer.utils.registry import ARCH_REGISTRY

P = TypeVar("P")

# Every arch gets the root `scale`; the factories keep traiNNer-redux's default.
DEFAULT_SCALE = 4


@dataclass(frozen=True)
class Family(Generic[P]):
    """A builder and what all its variants share.

    `params(**hyperparameters)` makes the value `build` receives. Its keyword-only
    parameters (other than `scale`) are the family's, unless `signature_of` names
    another callable (e.g. the module class) whose keyword-only ones are.
    """

    params: Callable[..., P]
    build: Callable[[str, int, P], nn.Module]
    scales: tuple[int, ...]
    signature_of: Callable[..., object] | None = None


@dataclass(frozen=True)
class Variant:
    """One registered name: its family, the defaults it changes and its summary."""

    family: Family[Any]
    doc: str
    defaults: Mapping[str, object] = field(default_factory=dict)
    # None: the family's scales.
    scales: tuple[int, ...] | None = None
    # Parameter -> why it has this default (e.g. traiNNer-redux departing from spandrel).
    notes: Mapping[str, str] = field(default_factory=dict)


def check_scale(name: str, scale: int, scales: tuple[int, ...]) -> None:
    """The one scale check of every registered variant."""
    if scale not in scales:
        raise ConfigError(
            f"scale: {name} does not support scale {scale} "
            f"(accepted: {', '.join(map(str, scales))})"
        )


@cache
def family_signature(family: Family[Any]) -> inspect.Signature:
    """`scale` plus the family's hyperparameters, with resolved annotations."""
    source = family.signature_of or family.params
    # A class's annotations live on its __init__; string ones need resolving.
    hints = typing.get_type_hints(source.__init__ if inspect.isclass(source) else source)
    scale = inspect.Parameter(
        "scale", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_SCALE, annotation=int
    )
    parameters = [scale]
    for param in inspect.signature(source).parameters.values():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY or param.name == "scale":
            continue
        if param.name not in hints or param.default is inspect.Parameter.empty:
            # The config check needs a type and a default for every key.
            raise TypeError(
                f"{source.__qualname__}: {param.name} needs an annotation and a default"
            )
        parameters.append(param.replace(annotation=hints[param.name]))
    returns = typing.get_type_hints(family.build).get("return", inspect.Signature.empty)
    return inspect.Signature(parameters, return_annotation=returns)


class VariantFactory:
    """The registered callable of one variant: `factory(scale=..., **hyperparameters)`."""

    def __init__(self, name: str, variant: Variant) -> None:
        family = family_signature(variant.family)
        for key in (*variant.defaults, *variant.notes):
            if key == "scale" or key not in family.parameters:
                raise TypeError(f"{name}: {key} is not a hyperparameter of its family")
        self.variant = variant
        self.supported_scales: tuple[int, ...] = variant.scales or variant.family.scales
        # What inspect.signature and typing.get_type_hints read (the config check).
        self.__signature__ = family.replace(
            parameters=[
                param.replace(default=variant.defaults.get(param.name, param.default))
                for param in family.parameters.values()
            ]
        )
        self.__annotations__: dict[str, Any] = {
            param.name: param.annotation for param in family.parameters.values()
        }
        self.__annotations__["return"] = family.return_annotation
        self.__name__ = self.__qualname__ = name
        self.__module__ = variant.family.build.__module__
        # The docs summarise the first paragraph; the notes follow it.
        notes = "; ".join(f"{key}: {note}" for key, note in variant.notes.items())
        self.__doc__ = f"{variant.doc}\n\nDefaults: {notes}." if notes else variant.doc

    def __call__(self, **kwargs: Any) -> nn.Module:
        bound = self.__signature__.bind(**kwargs)  # TypeError on an unknown key, as a def would
        bound.apply_defaults()
        hyperparameters = dict(bound.arguments)
        scale = hyperparameters.pop("scale")
        check_scale(self.__name__, scale, self.supported_scales)
        family = self.variant.family
        return family.build(self.__name__, scale, family.params(**hyperparameters))

    def __repr__(self) -> str:
        return f"<arch factory {self.__name__}{self.__signature__}>"


def register_variants(table: Mapping[str, Variant]) -> dict[str, VariantFactory]:
    """Register one factory per row under its name (lowercase, as the registry keys)."""
    factories = {name: VariantFactory(name, variant) for name, variant in table.items()}
    for name, factory in factories.items():
        ARCH_REGISTRY.add(name, factory)
    return factories
