"""SCAFFOLD: replaced by the real automation."""

from traiNNer.automations.base import AutomationConfig


class MultiMetricLRConfig(AutomationConfig):
    """Options of the `multi_metric_lr` automation."""
