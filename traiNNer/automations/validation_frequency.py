"""SCAFFOLD: replaced by the real automation."""

from traiNNer.automations.base import AutomationConfig


class ValidationFrequencyConfig(AutomationConfig):
    """Options of the `validation_frequency` automation."""
