"""SCAFFOLD: replaced by the real automation."""

from traiNNer.automations.base import AutomationConfig


class LRSchedulingConfig(AutomationConfig):
    """Options of the `lr_scheduling` automation."""
