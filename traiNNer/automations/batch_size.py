"""SCAFFOLD: replaced by the real automation."""

from traiNNer.automations.base import AutomationConfig


class BatchSizeConfig(AutomationConfig):
    """Options of the `batch_size` automation."""
