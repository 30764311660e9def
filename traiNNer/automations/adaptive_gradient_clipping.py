"""SCAFFOLD: replaced by the real automation."""

from traiNNer.automations.base import AutomationConfig


class AdaptiveGradientClippingConfig(AutomationConfig):
    """Options of the `adaptive_gradient_clipping` automation."""
