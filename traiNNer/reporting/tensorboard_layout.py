"""The custom-scalars layout each run writes: TensorBoard's "Custom Scalars" tab groups the
automations' charts with the values they act on (regular expressions over the tags)."""

from __future__ import annotations

# category -> chart title -> tag patterns drawn together in one chart.
LAYOUT: dict[str, dict[str, list[str]]] = {
    "automations": {
        "LR and its multipliers": [
            r"^lr$",
            r"^automations/lr_scheduling/lr_multiplier$",
            r"^automations/multi_metric_lr/lr_multiplier$",
        ],
        "gradient clipping": [
            r"^automations/adaptive_gradient_clipping/.*threshold.*",
            r"^automations/adaptive_gradient_clipping/.*/clip_rate$",
        ],
        "batch size": [r"^automations/batch_size/(batch_size|accum_iter)$"],
        "precision": [r"^automations/precision/(precision_level|loss_scale_min)$"],
        "validation interval": [r"^automations/validation_frequency/val_interval$"],
        "augmentation": [r"^automations/augmentation_scheduling/(aug_prob|scheduled_prob)$"],
        "weight decay": [r"^automations/regularization_scheduling/weight_decay$"],
        "loss weights": [r"^automations/dynamic_loss_scheduling/loss_weights/.*"],
        "early stopping": [r"^automations/early_stopping/(best|bad_validations)$"],
    },
    "training": {
        "losses": [r"^losses/.*"],
        "gradient norms": [r"^grad_norms/.*"],
        "validation metrics": [r"^metrics/.*"],
    },
}


def custom_scalars_layout() -> dict[str, dict[str, list[object]]]:
    """LAYOUT in the form SummaryWriter.add_custom_scalars takes."""
    return {
        category: {title: ["Multiline", patterns] for title, patterns in charts.items()}
        for category, charts in LAYOUT.items()
    }
