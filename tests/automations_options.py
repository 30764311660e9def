"""Automation blocks shared by end-to-end tests (small intervals for short runs)."""

from __future__ import annotations

from typing import Any


def ddp_automations() -> dict[str, Any]:
    """Automations whose decisions change training values each rank must agree on."""
    return {
        "lr_scheduling": {
            "enabled": True,
            "monitor_train_loss": True,  # on despite the MultiStepLR schedule
            "check_interval": 2,
            "patience": 2,
            "loss_ema_decay": 0.5,
            "metric": "psnr",
            "metric_patience": 0,
            "factor": 0.7,
            "threshold": 0.5,
        },
        "adaptive_gradient_clipping": {
            "enabled": True,
            "mode": "rule",
            "initial_threshold": 1.0,
            "min_threshold": 0.001,
            "max_threshold": 10.0,
            "adjustment_factor": 1.2,
            "monitoring_frequency": 4,
            "gradient_history_size": 8,
            "cooldown": 4,
        },
        "validation_frequency": {
            "enabled": True,
            "min_interval": 2,
            "max_interval": 8,
            "window": 3,
            "cooldown": 0,
        },
        "early_stopping": {"enabled": True, "metric": "psnr", "patience": 50},
    }
