"""SCAFFOLD: replaced by the real automation."""

from traiNNer.automations.base import AutomationConfig


class RegularizationSchedulingConfig(AutomationConfig):
    """Options of the `regularization_scheduling` automation."""
