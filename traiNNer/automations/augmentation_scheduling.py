"""SCAFFOLD: replaced by the real automation."""

from traiNNer.automations.base import AutomationConfig


class AugmentationSchedulingConfig(AutomationConfig):
    """Options of the `augmentation_scheduling` automation."""
