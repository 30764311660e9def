"""SCAFFOLD: replaced by the real automation."""

from traiNNer.automations.base import AutomationConfig


class OptimizerSelectionConfig(AutomationConfig):
    """Options of the `optimizer_selection` automation."""
