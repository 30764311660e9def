"""Optimizers by lowercase name (`train.optim_g.type`), built through OPTIMIZER_REGISTRY.

torch's own optimizers are registered as they are (their signatures are typed);
Schedule-Free AdamW, Prodigy and pytorch-optimizer's Adan, StableAdamW, SOAP and
ADOPT come from their authors' packages (the `optimizers` extra) instead of copies
written here. Those are imported only when built, behind factories whose typed
signatures the option loader checks without them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch

from traiNNer.utils.errors import ConfigError, UserError
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
    foreach: bool | None = True,
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
        foreach=foreach,
    )


OPTIMIZER_REGISTRY.refuse(
    "adanschedulefree",
    "is not available yet: pytorch-optimizer has no schedule-free Adan (its generic "
    "ScheduleFreeWrapper is a different method); use adan or adamwschedulefree",
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


# ------------------------------------------------------------- pytorch-optimizer
# StableAdamW, SOAP and ADOPT take pytorch-optimizer's keys and defaults (traiNNer-redux
# registers those classes as they are), less `maximize` and callables YAML cannot give;
# Adan takes traiNNer-redux's own Adan's keys, mapped onto pytorch-optimizer's Adan.


def _pytorch_optimizer() -> Any:
    try:
        import pytorch_optimizer
    except ImportError:
        raise _missing_extra("pytorch-optimizer") from None
    return pytorch_optimizer


@OPTIMIZER_REGISTRY.register("adan")
def adan(
    params: Iterable[Any],
    lr: float = 1e-3,
    betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    max_grad_norm: float = 0.0,
    no_prox: bool = True,
    foreach: bool | None = None,
) -> torch.optim.Optimizer:
    """Adan (Nesterov momentum of the gradient and its difference), pytorch-optimizer's.

    `max_grad_norm` > 0 clips the global gradient norm first. `no_prox` true (the
    default, and traiNNer-redux's only behavior) decays the weights by `lr *
    weight_decay` before the update; false divides them by `1 + lr * weight_decay` after
    it (the Adan paper's proximal form).
    """
    return _pytorch_optimizer().Adan(
        params,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        weight_decouple=no_prox,
        max_grad_norm=max_grad_norm,
        foreach=foreach,
    )


@OPTIMIZER_REGISTRY.register("stableadamw")
def stable_adamw(
    params: Iterable[Any],
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.99),
    kahan_sum: bool = True,
    weight_decay: float = 0.01,
    weight_decouple: bool = True,
    eps: float = 1e-8,
    foreach: bool | None = None,
) -> torch.optim.Optimizer:
    """StableAdamW (AdamW with update clipping), pytorch-optimizer's."""
    return _pytorch_optimizer().StableAdamW(
        params,
        lr=lr,
        betas=betas,
        kahan_sum=kahan_sum,
        weight_decay=weight_decay,
        weight_decouple=weight_decouple,
        eps=eps,
        foreach=foreach,
    )


@OPTIMIZER_REGISTRY.register("soap")
def soap(
    params: Iterable[Any],
    lr: float = 3e-3,
    betas: tuple[float, float] = (0.95, 0.95),
    shampoo_beta: float | None = None,
    weight_decay: float = 0.01,
    precondition_frequency: int = 10,
    max_precondition_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    correct_bias: bool = True,
    normalize_gradient: bool = False,
    data_format: Literal["channels_first", "channels_last"] = "channels_first",
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """SOAP (Adam in Shampoo's eigenbasis), pytorch-optimizer's."""
    return _pytorch_optimizer().SOAP(
        params,
        lr=lr,
        betas=betas,
        shampoo_beta=shampoo_beta,
        weight_decay=weight_decay,
        precondition_frequency=precondition_frequency,
        max_precondition_dim=max_precondition_dim,
        merge_dims=merge_dims,
        precondition_1d=precondition_1d,
        correct_bias=correct_bias,
        normalize_gradient=normalize_gradient,
        data_format=data_format,
        eps=eps,
    )


@OPTIMIZER_REGISTRY.register("adopt")
def adopt(
    params: Iterable[Any],
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.9999),
    weight_decay: float = 0.0,
    weight_decouple: bool = False,
    fixed_decay: bool = False,
    eps: float = 1e-6,
    foreach: bool | None = None,
) -> torch.optim.Optimizer:
    """ADOPT (Adam converging with any beta2), pytorch-optimizer's, with its default
    gradient clipping schedule (`clip_lambda` needs a Python callable)."""
    return _pytorch_optimizer().ADOPT(
        params,
        lr=lr,
        betas=betas,
        weight_decay=weight_decay,
        weight_decouple=weight_decouple,
        fixed_decay=fixed_decay,
        eps=eps,
        foreach=foreach,
    )


# -------------------------------------------------------------------- building
def build_optimizer(
    type_name: str, param_groups: list[dict[str, Any]], kwargs: dict[str, Any]
) -> torch.optim.Optimizer:
    """Build a registered optimizer over `param_groups` (kwargs already validated)."""
    return OPTIMIZER_REGISTRY.get(type_name)(param_groups, **kwargs)


# Keys most optimizers share, with the range every one of them needs.
_NON_NEGATIVE = ("lr", "eps", "weight_decay", "momentum", "max_grad_norm")


def check_optimizer_values(type_name: str, kwargs: dict[str, Any], path: str) -> None:
    """Values out of range as one-line ConfigErrors naming the key (`kwargs` are
    type-checked already): the shared keys here, the rest by building the optimizer over
    a dummy parameter and reporting what it rejects. A missing package is left for the
    build to report, so an option file still loads without it."""
    for key in _NON_NEGATIVE:
        value = kwargs.get(key)
        if isinstance(value, int | float) and value < 0:
            raise ConfigError(f"{path}.{key}: must be >= 0 (got {value})")
    betas = kwargs.get("betas")
    if isinstance(betas, tuple | list):
        for index, beta in enumerate(betas):
            if isinstance(beta, int | float) and not 0 <= beta < 1:
                raise ConfigError(f"{path}.betas: beta{index + 1} must be in [0, 1) (got {beta})")
    dummy = torch.zeros(1, requires_grad=True)
    try:
        build_optimizer(type_name, [{"params": [dummy]}], kwargs)
    except UserError:
        return
    except Exception as err:  # each library raises its own types for a bad value
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{path}: {type_name}: {message}") from None


def is_schedule_free(optimizer: torch.optim.Optimizer) -> bool:
    """Schedule-free optimizers need train()/eval() switches around evaluation."""
    return hasattr(optimizer, "eval") and hasattr(optimizer, "train")
