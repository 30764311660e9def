"""Every optimizer and LR scheduler traiNNer-redux accepts.

Schedules are pure factors of the base LR here; each one torch (or pytorch-optimizer)
has is compared with that library's own scheduler stepped on an optimizer whose LR is 1,
over thousands of iterations, so the formulas provably match. traiNNer-redux's own
schedules are checked against values worked out from its definitions.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler as torch_sched

from tests.conftest import base_options, write_options
from traiNNer.config.loader import load_options
from traiNNer.optimizers import build_optimizer
from traiNNer.schedulers import Schedule, build_schedule
from traiNNer.utils.errors import ConfigError, UserError
from traiNNer.utils.registry import OPTIMIZER_REGISTRY, SCHEDULER_REGISTRY

MakeTorch = Callable[[torch.optim.Optimizer], Any]


def torch_sequence(
    make: MakeTorch, steps: int, *, adam: bool = False
) -> tuple[list[float], list[float]]:
    """LR and momentum (beta1 for Adam, else SGD's momentum) before each of `steps` steps."""
    param = torch.zeros(1, requires_grad=True)
    optimizer: torch.optim.Optimizer = (
        torch.optim.Adam([param], lr=1.0) if adam else torch.optim.SGD([param], 1.0, 0.9)
    )
    lrs: list[float] = []
    momenta: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no-op steps trip torch's ordering checks
        scheduler = make(optimizer)
        for _ in range(steps):
            group = optimizer.param_groups[0]
            lrs.append(float(group["lr"]))
            momenta.append(float(group["betas"][0] if adam else group["momentum"]))
            optimizer.step()
            scheduler.step()
    return lrs, momenta


def ours(type_name: str, kwargs: dict[str, Any], total_iter: int = 3000) -> Schedule:
    return build_schedule(type_name, kwargs, total_iter=total_iter, base_lr=1.0)


def max_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


STEPS = 3000
S = torch_sched

# (our type, our options, torch's scheduler on the optimizer)
TORCH_CASES: list[tuple[str, dict[str, Any], MakeTorch]] = [
    ("ConstantLR", {}, lambda o: S.ConstantLR(o)),
    ("ConstantLR", {"factor": 0.5, "total_iters": 100}, lambda o: S.ConstantLR(o, 0.5, 100)),
    ("LinearLR", {}, lambda o: S.LinearLR(o)),
    (
        "LinearLR",
        {"start_factor": 0.1, "end_factor": 0.9, "total_iters": 500},
        lambda o: S.LinearLR(o, 0.1, 0.9, 500),
    ),
    ("ExponentialLR", {"gamma": 0.999}, lambda o: S.ExponentialLR(o, 0.999)),
    ("StepLR", {"step_size": 300, "gamma": 0.5}, lambda o: S.StepLR(o, 300, 0.5)),
    (
        "MultiStepLR",
        {"milestones": [100, 500, 500, 2000], "gamma": 0.5},
        lambda o: S.MultiStepLR(o, [100, 500, 500, 2000], 0.5),
    ),
    ("PolynomialLR", {}, lambda o: S.PolynomialLR(o)),
    (
        "PolynomialLR",
        {"total_iters": 1500, "power": 2.0},
        lambda o: S.PolynomialLR(o, 1500, 2.0),
    ),
    # Past T_max torch's cosine goes back up; 3000 steps cover two periods and more.
    (
        "CosineAnnealingLR",
        {"T_max": 700, "eta_min": 0.05},
        lambda o: S.CosineAnnealingLR(o, 700, 0.05),
    ),
    ("CosineAnnealingLR", {"T_max": STEPS}, lambda o: S.CosineAnnealingLR(o, STEPS)),
    (
        "CosineAnnealingWarmRestarts",
        {"T_0": 250},
        lambda o: S.CosineAnnealingWarmRestarts(o, 250),
    ),
    (
        "CosineAnnealingWarmRestarts",
        {"T_0": 100, "T_mult": 2, "eta_min": 0.01},
        lambda o: S.CosineAnnealingWarmRestarts(o, 100, 2, 0.01),
    ),
    (
        "CyclicLR",
        {"base_lr": 0.1, "max_lr": 1.0, "step_size_up": 200, "step_size_down": 100},
        lambda o: S.CyclicLR(o, 0.1, 1.0, 200, 100),
    ),
    (
        "CyclicLR",
        {"base_lr": 0.05, "max_lr": 0.8, "step_size_up": 150, "mode": "triangular2"},
        lambda o: S.CyclicLR(o, 0.05, 0.8, 150, mode="triangular2"),
    ),
    (
        "CyclicLR",
        {
            "base_lr": 0.1,
            "max_lr": 1.0,
            "step_size_up": 250,
            "mode": "exp_range",
            "gamma": 0.999,
            "base_momentum": 0.7,
            "max_momentum": 0.95,
        },
        lambda o: S.CyclicLR(
            o, 0.1, 1.0, 250, mode="exp_range", gamma=0.999, base_momentum=0.7, max_momentum=0.95
        ),
    ),
    # OneCycleLR: max_lr left out is optim_g.lr (1 here); total_steps from the run.
    ("OneCycleLR", {}, lambda o: S.OneCycleLR(o, 1.0, total_steps=STEPS)),
    (
        "OneCycleLR",
        {"max_lr": 0.5, "total_steps": 2000, "pct_start": 0.25, "anneal_strategy": "linear"},
        lambda o: S.OneCycleLR(o, 0.5, 2000, pct_start=0.25, anneal_strategy="linear"),
    ),
    (
        "OneCycleLR",
        {"max_lr": 1.0, "epochs": 10, "steps_per_epoch": 250, "three_phase": True},
        lambda o: S.OneCycleLR(o, 1.0, epochs=10, steps_per_epoch=250, three_phase=True),
    ),
    (
        "OneCycleLR",
        {"max_lr": 1.0, "total_steps": STEPS, "div_factor": 10.0, "final_div_factor": 100.0},
        lambda o: S.OneCycleLR(o, 1.0, STEPS, div_factor=10.0, final_div_factor=100.0),
    ),
    (
        "SequentialLR",
        {
            "milestones": [200],
            "schedulers": [
                {"type": "LinearLR", "start_factor": 0.01, "total_iters": 200},
                {"type": "CosineAnnealingLR", "T_max": 1000, "eta_min": 0.001},
            ],
        },
        lambda o: S.SequentialLR(
            o, [S.LinearLR(o, 0.01, 1.0, 200), S.CosineAnnealingLR(o, 1000, 0.001)], [200]
        ),
    ),
    (
        "SequentialLR",
        {
            "milestones": [100, 1500],
            "schedulers": [
                {"type": "ConstantLR", "factor": 0.5, "total_iters": 50},
                {"type": "ExponentialLR", "gamma": 0.999},
                {"type": "CosineAnnealingWarmRestarts", "T_0": 300},
            ],
        },
        lambda o: S.SequentialLR(
            o,
            [
                S.ConstantLR(o, 0.5, 50),
                S.ExponentialLR(o, 0.999),
                S.CosineAnnealingWarmRestarts(o, 300),
            ],
            [100, 1500],
        ),
    ),
    (
        "ChainedScheduler",
        {
            "schedulers": [
                {"type": "ConstantLR", "factor": 0.1, "total_iters": 100},
                {"type": "ExponentialLR", "gamma": 0.999},
            ]
        },
        lambda o: S.ChainedScheduler([S.ConstantLR(o, 0.1, 100), S.ExponentialLR(o, 0.999)]),
    ),
    (
        "ChainedScheduler",
        {
            "schedulers": [
                {"type": "LinearLR", "start_factor": 0.2, "total_iters": 300},
                {"type": "StepLR", "step_size": 500, "gamma": 0.5},
                {"type": "PolynomialLR", "total_iters": 2500, "power": 1.5},
            ]
        },
        lambda o: S.ChainedScheduler(
            [S.LinearLR(o, 0.2, 1.0, 300), S.StepLR(o, 500, 0.5), S.PolynomialLR(o, 2500, 1.5)]
        ),
    ),
]


@pytest.mark.parametrize(
    ("type_name", "kwargs", "make"),
    TORCH_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(TORCH_CASES)],
)
def test_schedule_matches_torch(type_name: str, kwargs: dict[str, Any], make: MakeTorch) -> None:
    schedule = ours(type_name, kwargs)
    cycles = type_name in ("CyclicLR", "OneCycleLR")
    # torch's OneCycleLR refuses to step past its total_steps.
    total = kwargs.get(
        "total_steps", kwargs.get("epochs", 1) * kwargs.get("steps_per_epoch", STEPS)
    )
    steps = min(STEPS, total)
    for adam in (False, True) if cycles else (False,):
        lrs, momenta = torch_sequence(make, steps, adam=adam)
        assert max_diff([schedule.factor(i) for i in range(steps)], lrs) < 1e-6
        if cycles:
            mine = [schedule.momentum(i) for i in range(steps)]
            assert all(m is not None for m in mine)
            assert max_diff([float(m or 0.0) for m in mine], momenta) < 1e-6


def test_every_scheduler_traiNNer_redux_names_is_registered() -> None:
    upstream = {
        "constantlr", "linearlr", "exponentiallr", "cycliclr", "steplr", "multisteplr",
        "sequentiallr", "chainedscheduler", "onecyclelr", "polynomiallr",
        "cosineannealingwarmrestarts", "cosineannealinglr", "cosineannealingwarmuplr",
        "cosineannealingrestartlr", "reducelronplateau", "kneelr", "warmupstabledecaylr",
    }  # fmt: skip
    assert upstream <= set(SCHEDULER_REGISTRY.names())
    compared = {case[0].lower() for case in TORCH_CASES}
    # Not compared with torch: the validation-driven one, and traiNNer-redux's own.
    assert upstream - compared == {
        "reducelronplateau", "cosineannealingwarmuplr", "cosineannealingrestartlr", "kneelr",
        "warmupstabledecaylr",
    }  # fmt: skip


def test_no_momentum_cycling_when_off_and_absolute_lrs_scale_with_optim_lr() -> None:
    cyclic = build_schedule(
        "CyclicLR",
        {"base_lr": 1e-4, "max_lr": 1e-3, "step_size_up": 10, "cycle_momentum": False},
        total_iter=100,
        base_lr=1e-3,
    )
    assert cyclic.momentum(5) is None
    assert cyclic.factor(0) == pytest.approx(0.1) and cyclic.factor(10) == pytest.approx(1.0)
    one_cycle = build_schedule("OneCycleLR", {"max_lr": 2e-3}, total_iter=100, base_lr=1e-3)
    # Peak at the end of the first 30%: 2x optim_g.lr, the absolute max_lr.
    assert one_cycle.factor(29) == pytest.approx(2.0)
    assert one_cycle.factor(100) == one_cycle.factor(10_000)  # held after total_steps


@pytest.mark.parametrize("cooldown", ["cosine", "1-sqrt", "linear", "1-square"])
def test_warmup_stable_decay_matches_pytorch_optimizer(cooldown: str) -> None:
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    options: dict[str, Any] = {
        "num_warmup_steps": 300,
        "num_stable_steps": 1200,
        "num_decay_steps": 1000,
        "min_lr_ratio": 0.05,
        "num_cycles": 0.5,
        "cooldown_type": cooldown,
    }
    lrs, _ = torch_sequence(lambda o: pytorch_optimizer.get_wsd_schedule(o, **options), STEPS)
    schedule = ours("WarmupStableDecayLR", options)
    assert max_diff([schedule.factor(i) for i in range(STEPS)], lrs) < 1e-6


def test_cosine_annealing_warmup_follows_traiNNer_redux() -> None:
    schedule = ours("CosineAnnealingWarmupLR", {"warmup_iters": 10, "eta_min_ratio": 0.2}, 110)
    assert schedule.factor(0) == 0.0 and schedule.factor(5) == pytest.approx(0.5)
    assert schedule.factor(10) == pytest.approx(1.0)  # warmup done, cosine starts
    assert schedule.factor(60) == pytest.approx(0.2 + 0.8 * 0.5)  # halfway down
    assert schedule.factor(110) == schedule.factor(500) == pytest.approx(0.2)
    # Defaults: no warmup, floor 0.1, total_iters from the run unless given.
    default = ours("CosineAnnealingWarmupLR", {"total_iters": 40}, 1000)
    assert default.factor(0) == 1.0 and default.factor(40) == pytest.approx(0.1)


def test_cosine_annealing_restart_follows_traiNNer_redux() -> None:
    schedule = build_schedule(
        "CosineAnnealingRestartLR",
        {"periods": [10, 20], "restart_weights": [1.0, 0.5], "eta_min": 1e-4},
        total_iter=30,
        base_lr=1e-3,
    )
    floor = 0.1  # eta_min as a factor of the LR
    assert schedule.factor(0) == pytest.approx(1.0)
    assert schedule.factor(5) == pytest.approx(floor + 0.9 * 0.5)
    # A period's end is its low point; the restart (at eta_min + 0.5 * (LR - eta_min)) follows.
    assert schedule.factor(10) == pytest.approx(floor)
    assert schedule.factor(11) == pytest.approx(
        floor + 0.5 * 0.9 * 0.5 * (1 + math.cos(math.pi / 20))
    )
    assert schedule.factor(20) == pytest.approx(floor + 0.5 * 0.9 * 0.5)
    assert schedule.factor(30) == schedule.factor(1000) == pytest.approx(floor)


def test_knee_lr_explores_then_decays_to_zero_over_the_run() -> None:
    schedule = ours("KneeLR", {}, total_iter=100)  # explore_ratio 0.5, peak = optim_g.lr
    assert [schedule.factor(i) for i in (0, 49)] == [1.0, 1.0]
    # Steps are counted from 1: iteration 50 is step 51, one decay step in.
    assert schedule.factor(50) == pytest.approx(1 - 1 / 50)
    assert schedule.factor(74) == pytest.approx(0.5)
    assert schedule.factor(99) == 0.0 and schedule.factor(500) == 0.0
    absolute = build_schedule(
        "KneeLR", {"peak_lr": 2e-3, "total_steps": 10, "explore_ratio": 0.2}, 1000, 1e-3
    )
    assert absolute.factor(1) == pytest.approx(2.0)
    assert absolute.factor(5) == pytest.approx(2.0 - 2.0 / 8 * 4)


# ----------------------------------------------------------------- option files
def load_with(tmp_path: Path, dataset: Path, train: dict[str, Any]) -> Any:
    options = base_options(dataset, tmp_path)
    options["train"].update(train)
    return load_options(write_options(tmp_path / "run.yml", options))


BAD_SCHEDULES: list[tuple[dict[str, Any], str]] = [
    ({"type": "OneCycleLR", "pct_start": 1.5}, "train.scheduler.pct_start: must be between"),
    ({"type": "OneCycleLR", "pct_strat": 0.3}, "train.scheduler.pct_strat: unknown key"),
    ({"type": "CyclicLR", "base_lr": 1e-4}, "train.scheduler.max_lr: required key is missing"),
    (
        {"type": "CyclicLR", "base_lr": 1e-4, "max_lr": 1e-3, "scale_fn": "x"},
        "train.scheduler.scale_fn: needs a Python callable",
    ),
    ({"type": "CyclicLR", "base_lr": 0, "max_lr": 1, "mode": "sine"}, "train.scheduler.mode"),
    ({"type": "ConstantLR", "factor": 2.0}, "train.scheduler.factor: must be between 0 and 1"),
    ({"type": "LinearLR", "start_factor": 0}, "train.scheduler.start_factor: must be in (0, 1]"),
    ({"type": "StepLR", "step_size": 0}, "train.scheduler.step_size: must be >= 1"),
    ({"type": "PolynomialLR", "power": "high"}, "train.scheduler.power: expected `float`"),
    ({"type": "CosineAnnealingWarmRestarts", "T_0": 0}, "train.scheduler.T_0: must be >= 1"),
    ({"type": "KneeLR", "explore_ratio": 2}, "train.scheduler.explore_ratio: must be between"),
    (
        {"type": "WarmupStableDecayLR", "num_warmup_steps": 1, "num_stable_steps": 1},
        "train.scheduler.num_decay_steps: required key is missing",
    ),
    (
        {
            "type": "WarmupStableDecayLR",
            "num_warmup_steps": 1,
            "num_stable_steps": 1,
            "num_decay_steps": 1,
            "cooldown_type": "sqrt",
        },
        "train.scheduler.cooldown_type",
    ),
    (
        {"type": "CosineAnnealingRestartLR", "periods": [10, 10], "restart_weights": [1]},
        "train.scheduler.restart_weights: needs one entry per period",
    ),
    ({"type": "ReduceLROnPlateau", "factor": 1.5}, "train.scheduler.factor: must be in [0, 1)"),
    (
        {"type": "SequentialLR", "milestones": [], "schedulers": [{"type": "LinearLR"}] * 2},
        "train.scheduler.milestones: needs one milestone fewer than schedulers",
    ),
    (
        {
            "type": "SequentialLR",
            "milestones": [5],
            "schedulers": [{"type": "LinearLR"}, {"type": "StepLR", "step_sise": 3}],
        },
        "train.scheduler.schedulers[1].step_sise: unknown key",
    ),
    (
        {
            "type": "SequentialLR",
            "milestones": [5],
            "schedulers": [{"type": "LinearLR", "total_iters": 0}, {"type": "StepLR"}],
        },
        "train.scheduler.schedulers[0].total_iters: must be >= 1",
    ),
    (
        {
            "type": "SequentialLR",
            "milestones": [5],
            "schedulers": [{"type": "LinearLR"}, {"type": "ReduceLROnPlateau"}],
        },
        "train.scheduler.schedulers[1].type: ReduceLROnPlateau cannot be part of SequentialLR",
    ),
    (
        {"type": "ChainedScheduler", "schedulers": [{"type": "CosineAnnealingLR"}]},
        "train.scheduler.schedulers[0].type: CosineAnnealingLR cannot be part of Chained",
    ),
    ({"type": "LambdaLR", "lr_lambda": "x"}, "train.scheduler.type: 'LambdaLR' needs a Python"),
    ({"type": "MultiplicativeLR"}, "train.scheduler.type: 'MultiplicativeLR' needs a Python"),
]


@pytest.mark.parametrize(("scheduler", "expected"), BAD_SCHEDULES)
def test_bad_scheduler_option_is_one_line_naming_the_key(
    tmp_path: Path, tiny_dataset: Path, scheduler: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_with(tmp_path, tiny_dataset, {"scheduler": scheduler})
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_upstream_style_scheduler_loads(tmp_path: Path, tiny_dataset: Path) -> None:
    opt = load_with(
        tmp_path,
        tiny_dataset,
        {"scheduler": {"type": "onecyclelr", "max_lr": 1e-3, "total_steps": 12, "pct_start": 0.25}},
    )
    assert opt.train.scheduler == {
        "type": "onecyclelr",
        "max_lr": 1e-3,
        "total_steps": 12,
        "pct_start": 0.25,
    }


# ----------------------------------------------------------------- optimizers
NEW_OPTIMIZERS: list[tuple[str, dict[str, Any]]] = [
    ("Adan", {"lr": 1e-2}),
    ("Adan", {"lr": 1e-2, "betas": [0.98, 0.92, 0.99], "weight_decay": 0.02, "max_grad_norm": 1.0}),
    ("Adan", {"lr": 1e-2, "weight_decay": 0.02, "no_prox": False, "foreach": False}),
    ("StableAdamW", {"lr": 1e-2}),
    ("SOAP", {"lr": 1e-2, "precondition_frequency": 2}),
    ("ADOPT", {"lr": 1e-2}),
    ("Adam", {"lr": 1e-2}),
    ("AdamW", {"lr": 1e-2}),
    ("NAdam", {"lr": 1e-2}),
    ("AdamWScheduleFree", {"lr": 1e-2, "foreach": False}),
]


def fit(optimizer_type: str, kwargs: dict[str, Any], steps: int = 40) -> tuple[float, float]:
    """Loss before and after `steps` steps of a small regression, and a resumable state."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    inputs = torch.randn(64, 8)
    targets = inputs[:, :1] * 0.5 - inputs[:, 1:2]
    factory = OPTIMIZER_REGISTRY.get(optimizer_type, "train.optim_g.type")
    from traiNNer.config.validation import check_kwargs

    checked = check_kwargs(factory, kwargs, "train.optim_g", ("params",))
    optimizer = build_optimizer(optimizer_type, [{"params": list(model.parameters())}], checked)
    if hasattr(optimizer, "train"):
        optimizer.train()  # pyright: ignore[reportAttributeAccessIssue]

    def loss() -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(inputs), targets)

    first = float(loss().detach())
    for _ in range(steps):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    # The training state holds the optimizer state and is loaded with weights_only.
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    optimizer.load_state_dict(torch.load(buffer, weights_only=True))
    optimizer.zero_grad()
    loss().backward()
    optimizer.step()
    if hasattr(optimizer, "eval"):
        optimizer.eval()  # pyright: ignore[reportAttributeAccessIssue]
    return first, float(loss().detach())


@pytest.mark.parametrize(("optimizer_type", "kwargs"), NEW_OPTIMIZERS)
def test_optimizer_reduces_a_simple_loss(optimizer_type: str, kwargs: dict[str, Any]) -> None:
    if optimizer_type.lower() in ("adan", "stableadamw", "soap", "adopt"):
        pytest.importorskip("pytorch_optimizer")
    before, after = fit(optimizer_type, kwargs)
    assert math.isfinite(after) and after < 0.5 * before


def test_adan_is_pytorch_optimizers_with_traiNNer_redux_decay() -> None:
    """no_prox (default true, traiNNer-redux's only behavior) decays before the step."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    for no_prox in (True, False):
        torch.manual_seed(1)
        a = torch.randn(5, 3, requires_grad=True)
        b = a.detach().clone().requires_grad_(True)
        mine = build_optimizer("adan", [{"params": [a]}], {"weight_decay": 0.1, "no_prox": no_prox})
        theirs = pytorch_optimizer.Adan([b], weight_decay=0.1, weight_decouple=no_prox)
        for _ in range(5):
            for param, optimizer in ((a, mine), (b, theirs)):
                optimizer.zero_grad()
                (param**2).sum().backward()
                optimizer.step()
        assert torch.equal(a, b)


def test_bad_optimizer_values_are_one_line_naming_the_key(
    tmp_path: Path, tiny_dataset: Path
) -> None:
    cases = [
        (
            {"type": "Adan", "betas": [0.9, 0.9]},
            "train.optim_g.betas: expected `array` of length 3",
        ),
        ({"type": "Adan", "lr": 1e-3, "betas": [0.98, 1.5, 0.99]}, "train.optim_g.betas"),
        ({"type": "SOAP", "precondition_frequncy": 2}, "train.optim_g.precondition_frequncy"),
        ({"type": "AdamW", "lr": -1.0}, "train.optim_g.lr: must be >= 0"),
        ({"type": "ADOPT", "eps": -1.0}, "train.optim_g.eps: must be >= 0"),
        ({"type": "StableAdamW", "weight_decay": -0.1}, "train.optim_g.weight_decay: must be >= 0"),
        # Any other value the optimizer itself refuses, in its own words.
        ({"type": "SGD", "nesterov": True}, "train.optim_g: SGD: Nesterov momentum requires"),
    ]
    for optim_g, expected in cases:
        with pytest.raises(ConfigError) as info:
            load_with(tmp_path, tiny_dataset, {"optim_g": optim_g})
        assert expected in str(info.value), str(info.value)
        assert "\n" not in str(info.value)


def test_adan_schedule_free_is_refused_in_one_line(tmp_path: Path, tiny_dataset: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_with(tmp_path, tiny_dataset, {"optim_g": {"type": "AdanScheduleFree", "lr": 1e-3}})
    assert str(info.value).startswith("train.optim_g.type: 'AdanScheduleFree' is not available")
    assert "\n" not in str(info.value)


def test_missing_pytorch_optimizer_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pytorch_optimizer", None)  # import fails
    param = torch.zeros(2, requires_grad=True)
    with pytest.raises(UserError, match=r"pytorch-optimizer.*traiNNer-auto\[optimizers\]"):
        build_optimizer("soap", [{"params": [param]}], {})


def test_adan_with_one_cycle_trains_and_cycles_beta1(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pytorch_optimizer")
    import train

    options = base_options(tiny_dataset, tmp_path)
    options["train"]["optim_g"] = {"type": "Adan", "lr": 1e-3}
    options["train"]["scheduler"] = {"type": "OneCycleLR", "pct_start": 0.5}
    monkeypatch.chdir(tmp_path)
    assert train.main(["-opt", str(write_options(tmp_path / "run.yml", options))]) == 0
    state = torch.load(
        tmp_path / "experiments" / "unit_run" / "training_states" / "12.state", weights_only=True
    )
    # The last step (iteration 11 of 12) ran at torch's OneCycleLR values for that step.
    lrs, betas = torch_sequence(lambda o: S.OneCycleLR(o, 1e-3, 12, pct_start=0.5), 12, adam=True)
    group = state["model"]["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(lrs[11], rel=1e-6)  # max_lr absolute, as torch
    assert group["betas"][0] == pytest.approx(betas[11]) and len(group["betas"]) == 3
