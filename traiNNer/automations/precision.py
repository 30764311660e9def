"""SCAFFOLD: replaced by the real automation."""

from traiNNer.automations.base import AutomationConfig


class PrecisionConfig(AutomationConfig):
    """Options of the `precision` automation."""
