"""Registration of validation metrics and the direction in which each improves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast

from traiNNer.utils.registry import METRIC_REGISTRY

Better = Literal["higher", "lower"]
MetricT = TypeVar("MetricT", bound=Callable[..., float])

# Name of the attribute every registered metric function carries.
BETTER_ATTRIBUTE = "better"


def register_metric(better: Better) -> Callable[[MetricT], MetricT]:
    """Register a metric function under its own name and record whether higher is better."""

    def decorator(metric: MetricT) -> MetricT:
        setattr(metric, BETTER_ATTRIBUTE, better)
        METRIC_REGISTRY.register()(metric)
        return metric

    return decorator


def metric_better(metric: Callable[..., Any]) -> Better:
    """'higher' or 'lower': the direction in which `metric` improves."""
    return cast(Better, getattr(metric, BETTER_ATTRIBUTE))
