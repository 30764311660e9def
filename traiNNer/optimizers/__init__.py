"""Optimizers by lowercase name (`train.optim_g.type`), built through OPTIMIZER_REGISTRY.

torch's own optimizers are registered as they are (their signatures are typed);
Schedule-Free AdamW and Prodigy come from their authors' packages (the
`optimizers` extra) instead of copies written here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from traiNNer.utils.errors import UserError
from traiNNer.utils.registry import OPTIMIZER_REGISTRY

for _name, _cls in {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "sgd": torch.optim.SGD,
    "adamax": torch.optim.Adamax,
    "rmsprop": torch.optim.RMSprop,
}.items():
    OPTIMIZER_REGISTRY.add(_name, _cls)


def _missing_extra(package: str) -> UserError:
    return UserError(
        f"optimizer needs the '{package}' package: pip install 'traiNNer-auto[optimizers]'"
    )


@OPTIMIZER_REGISTRY.register("adamwschedulefree")
def adamw_schedule_free(
    params: Iterable[Any],
    lr: float = 0.0025,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
) -> torch.optim.Optimizer:
    """Schedule-Free AdamW; the model switches it to eval mode around validation and saving."""
    try:
        import schedulefree
    except ImportError:
        raise _missing_extra("schedulefree") from None
    return schedulefree.AdamWScheduleFree(
        params,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
        r=r,
        weight_lr_power=weight_lr_power,
    )


@OPTIMIZER_REGISTRY.register("prodigy")
def prodigy(
    params: Iterable[Any],
    lr: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    beta3: float | None = None,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decouple: bool = True,
    use_bias_correction: bool = False,
    safeguard_warmup: bool = False,
    d0: float = 1e-6,
    d_coef: float = 1.0,
    growth_rate: float = float("inf"),
) -> torch.optim.Optimizer:
    """Prodigy (learning-rate free Adam); keep lr at 1.0 and tune d_coef instead."""
    try:
        from prodigyopt import Prodigy
    except ImportError:
        raise _missing_extra("prodigyopt") from None
    # Prodigy's untyped defaults make pyright infer int for float arguments.
    return Prodigy(
        params,
        lr=lr,
        betas=betas,
        beta3=beta3,
        eps=eps,
        weight_decay=weight_decay,  # pyright: ignore[reportArgumentType]
        decouple=decouple,
        use_bias_correction=use_bias_correction,
        safeguard_warmup=safeguard_warmup,
        d0=d0,
        d_coef=d_coef,
        growth_rate=growth_rate,
    )


def build_optimizer(
    type_name: str, param_groups: list[dict[str, Any]], kwargs: dict[str, Any]
) -> torch.optim.Optimizer:
    """Build a registered optimizer over `param_groups` (kwargs already validated)."""
    return OPTIMIZER_REGISTRY.get(type_name)(param_groups, **kwargs)


def is_schedule_free(optimizer: torch.optim.Optimizer) -> bool:
    """Schedule-free optimizers need train()/eval() switches around evaluation."""
    return hasattr(optimizer, "eval") and hasattr(optimizer, "train")
