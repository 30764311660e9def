"""Training losses. Importing this package registers every loss in LOSS_REGISTRY.

Each loss is an `nn.Module` whose constructor takes keyword hyperparameters and
whose `forward(sr, gt)` returns an unweighted 0-dim float32 tensor for NCHW
images in [0, 1]. `loss_weight` (including 0 = off and negative = "against the
bicubic upscale of the LR") is applied by the model, not here.

Two optional class attributes extend that contract:
- `check_options(entry, path)` (classmethod): checks of an enabled loss that
  need no construction (its weights file exists), run by the option loader;
  losses at loss_weight 0 are never built and get only the signature check;
- `needs_ema_output = True`: forward takes the EMA model's output as a third
  argument (ldlloss); the loader then requires train.ema_decay > 0.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from traiNNer.config.validation import check_kwargs
from traiNNer.losses import (
    color_losses,
    dists_loss,
    flip_loss,
    frequency_losses,
    ldl_loss,
    perceptual_loss,
    pixel_losses,
    ssim_losses,
)
from traiNNer.utils.registry import LOSS_REGISTRY

# Option-file keys the model consumes; never passed to a loss constructor.
MODEL_KEYS = frozenset({"type", "loss_weight"})

__all__ = [
    "LOSS_REGISTRY",
    "build_loss",
    "color_losses",
    "dists_loss",
    "flip_loss",
    "frequency_losses",
    "ldl_loss",
    "perceptual_loss",
    "pixel_losses",
    "ssim_losses",
]


def build_loss(type_name: str, kwargs: dict[str, Any], path: str = "train.losses") -> nn.Module:
    """Instantiate the loss registered as `type_name` with its hyperparameters.

    `kwargs` are the loss's own keys from the option file (`type` and
    `loss_weight`, if present, are left out). Unknown names or keys and wrongly
    typed values raise ConfigError naming `path`.
    """
    loss_class = LOSS_REGISTRY.get(type_name, path=f"{path}.type")
    hyperparameters = {k: v for k, v in kwargs.items() if k not in MODEL_KEYS}
    return loss_class(**check_kwargs(loss_class, hyperparameters, path))
