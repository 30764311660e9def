"""SCAFFOLD: replaced by the real automation."""

from traiNNer.automations.base import AutomationConfig


class EarlyStoppingConfig(AutomationConfig):
    """Options of the `early_stopping` automation."""
