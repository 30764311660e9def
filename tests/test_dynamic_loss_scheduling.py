"""Dynamic loss scheduling: directions, limits, config strictness, resume, no host sync."""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from traiNNer.losses.dynamic_loss_scheduling import (
    DynamicLossScheduler,
    DynamicLossSchedulingOptions,
    build_dynamic_loss_scheduler,
)
from traiNNer.utils.errors import UserError

STALL, FALL = "l_g_stall", "l_g_fall"
MODES = ("dwa", "balance", "uncertainty")
BASELINE, INTERVAL = 50, 10
# Where each mode is documented to move the stalled and the falling loss (+1 up, -1 down, 0 stays).
DIRECTIONS = {
    "dwa": {STALL: 1, FALL: -1},
    "balance": {STALL: -1, FALL: 1},
    "uncertainty": {STALL: 0, FALL: 1},
}

Losses = dict[str, torch.Tensor]
Trajectory = list[tuple[int, dict[str, float]]]


def options(mode: str, **overrides: Any) -> DynamicLossSchedulingOptions:
    raw = {
        "enabled": True,
        "mode": mode,
        "baseline_iterations": BASELINE,
        "update_interval": INTERVAL,
        **overrides,
    }
    return msgspec.convert(raw, DynamicLossSchedulingOptions)


def synthetic_losses(
    seed: int = 0, scales: tuple[float, float] = (1.0, 1.0), fall_rate: float = 0.97
) -> Iterator[tuple[int, Losses]]:
    """A loss stalled near 0.05 and one falling from 3.0 by 3% per interval, 2% noise."""
    generator = torch.Generator().manual_seed(seed)
    iteration = 0
    while True:
        iteration += 1
        noise = 1 + 0.02 * torch.randn(2, generator=generator)
        stall = 0.05 * scales[0] * noise[0]
        fall = 3.0 * scales[1] * fall_rate ** (iteration / INTERVAL) * noise[1]
        yield iteration, {STALL: stall, FALL: fall}


class Trainer:
    """Drives a scheduler the way the model does; uncertainty gets its own optimizer."""

    def __init__(self, scheduler: DynamicLossScheduler) -> None:
        self.scheduler = scheduler
        params = scheduler.parameters()
        self.optimizer = torch.optim.Adam(params, lr=0.02) if params else None

    def step(self, iteration: int, losses: Losses) -> dict[str, float] | None:
        if self.optimizer is not None:
            self.optimizer.zero_grad()
            total = self.scheduler.weighted_sum(losses)
            if total.requires_grad:  # synthetic losses: only the log-variances learn
                total.backward()
                self.optimizer.step()
        self.scheduler.observe(iteration, losses)
        return self.scheduler.maybe_update(iteration)

    def run(self, stream: Iterator[tuple[int, Losses]], steps: int) -> Trajectory:
        updates: Trajectory = []
        for _ in range(steps):
            iteration, losses = next(stream)
            weights = self.step(iteration, losses)
            if weights is not None:
                updates.append((iteration, weights))
        return updates


def make(mode: str, weights: dict[str, float] | None = None, **overrides: Any) -> Trainer:
    base = weights if weights is not None else {STALL: 1.0, FALL: 1.0}
    return Trainer(DynamicLossScheduler(options(mode, **overrides), base))


def multipliers(updates: Trajectory, base: dict[str, float]) -> list[dict[str, float]]:
    return [{name: weights[name] / base[name] for name in base} for _, weights in updates]


# ------------------------------------------------------------------ config
def test_defaults_are_valid_and_every_key_is_documented() -> None:
    opts = msgspec.convert({}, DynamicLossSchedulingOptions)
    assert opts.enabled is False
    assert opts.min_weight <= 1 <= opts.max_weight
    schema = msgspec.json.schema(DynamicLossSchedulingOptions)
    properties = schema["$defs"]["DynamicLossSchedulingOptions"]["properties"]
    assert set(properties) == set(DynamicLossSchedulingOptions.__struct_fields__)
    assert [key for key, spec in properties.items() if not spec.get("description")] == []


def test_unknown_key_is_an_error_not_a_silent_disable() -> None:
    with pytest.raises(msgspec.ValidationError, match="adaptation_rat"):
        msgspec.convert({"enabled": True, "adaptation_rat": 0.1}, DynamicLossSchedulingOptions)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("mode", "gradnorm"),
        ("momentum", 1.0),
        ("momentum", -0.1),
        ("adaptation_rate", 0.0),
        ("adaptation_rate", 1.5),
        ("min_weight", 0.0),
        ("min_weight", 1.5),
        ("max_weight", 0.5),
        ("adaptation_threshold", -0.01),
        ("adaptation_threshold", 1.0),
        ("baseline_iterations", -1),
        ("update_interval", 0),
        ("temperature", 0.0),
        ("uncertainty_lr", 0.0),
    ],
)
def test_out_of_range_values_are_rejected(key: str, value: Any) -> None:
    with pytest.raises(msgspec.ValidationError, match=key):
        msgspec.convert({key: value}, DynamicLossSchedulingOptions)


def test_builder_skips_disabled_scheduler_and_zero_weight_losses() -> None:
    weights = {STALL: 1.0, FALL: 0.0}
    assert build_dynamic_loss_scheduler(None, weights) is None
    assert build_dynamic_loss_scheduler(options("dwa", enabled=False), weights) is None
    scheduler = build_dynamic_loss_scheduler(options("dwa"), weights)
    assert scheduler is not None and scheduler.names == (STALL,)


# --------------------------------------------------------------- behaviour
@pytest.mark.parametrize("mode", MODES)
def test_weights_move_in_documented_direction_within_bounds(mode: str) -> None:
    base = {STALL: 1.0, FALL: 1.0}
    updates = make(mode).run(synthetic_losses(), 400)
    history = multipliers(updates, base)
    opts = options(mode)
    for step in history:
        for value in step.values():
            assert opts.min_weight - 1e-6 <= value <= opts.max_weight + 1e-6
    final = history[-1]
    for name, direction in DIRECTIONS[mode].items():
        if direction > 0:
            assert final[name] > 1.05, (name, final)
        elif direction < 0:
            assert final[name] < 0.95, (name, final)
        else:
            assert abs(final[name] - 1) < 0.05, (name, final)


@pytest.mark.parametrize("mode", MODES)
def test_weights_do_not_depend_on_loss_scale(mode: str) -> None:
    plain = make(mode).run(synthetic_losses(), 250)
    rescaled = make(mode).run(synthetic_losses(scales=(100.0, 0.01)), 250)
    assert [it for it, _ in plain] == [it for it, _ in rescaled]
    for (_, a), (_, b) in zip(plain, rescaled, strict=True):
        for name in a:
            assert a[name] == pytest.approx(b[name], rel=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_each_update_changes_weights_by_at_most_adaptation_rate(mode: str) -> None:
    rate = 0.03
    history = multipliers(
        make(mode, adaptation_rate=rate).run(synthetic_losses(), 300), {STALL: 1.0, FALL: 1.0}
    )
    ratios = [
        after[name] / before[name]
        for before, after in zip([{STALL: 1.0, FALL: 1.0}, *history], history, strict=False)
        for name in after
    ]
    assert all(1 - rate - 1e-5 <= ratio <= 1 + rate + 1e-5 for ratio in ratios)
    # The limit binds: the targets want more than 3% per update in this scenario.
    assert max(abs(ratio - 1) for ratio in ratios) > rate - 1e-4


@pytest.mark.parametrize("mode", MODES)
def test_tight_bounds_hold_and_are_reached(mode: str) -> None:
    history = multipliers(
        make(mode, min_weight=0.9, max_weight=1.1).run(synthetic_losses(), 400),
        {STALL: 1.0, FALL: 1.0},
    )
    assert all(0.9 - 1e-6 <= v <= 1.1 + 1e-6 for step in history for v in step.values())
    moving = [name for name, direction in DIRECTIONS[mode].items() if direction != 0]
    expected = {name: 1.1 if DIRECTIONS[mode][name] > 0 else 0.9 for name in moving}
    assert {name: history[-1][name] for name in moving} == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_no_change_during_baseline(mode: str) -> None:
    trainer = make(mode, baseline_iterations=100)
    scheduler = trainer.scheduler
    stream = synthetic_losses()
    for _ in range(99):
        iteration, losses = next(stream)
        assert trainer.step(iteration, losses) is None
        assert scheduler.current_weights() == {STALL: 1.0, FALL: 1.0}
        expected = losses[STALL] + losses[FALL]
        assert torch.allclose(scheduler.weighted_sum(losses), expected)
    if scheduler.log_variances is not None:
        assert scheduler.log_variances.grad is None
    iteration, losses = next(stream)
    assert trainer.step(iteration, losses) is not None  # iteration 100 ends the baseline


def test_threshold_ignores_noise_when_losses_fall_alike() -> None:
    # Both losses fall at the same rate (different scales): only noise differs.
    def alike(seed: int) -> Iterator[tuple[int, Losses]]:
        for iteration, losses in synthetic_losses(seed):
            yield (
                iteration,
                {STALL: losses[STALL] * 0.97 ** (iteration / INTERVAL), FALL: losses[FALL]},
            )

    for mode in ("dwa", "balance"):
        quiet = make(mode, adaptation_threshold=0.1).run(alike(1), 300)
        assert all(w == {STALL: 1.0, FALL: 1.0} for _, w in quiet), mode
        noisy = make(mode, adaptation_threshold=0.0).run(alike(1), 300)
        assert any(w != {STALL: 1.0, FALL: 1.0} for _, w in noisy), mode


@pytest.mark.parametrize("mode", MODES)
def test_negative_weight_keeps_its_sign_and_counts_by_magnitude(mode: str) -> None:
    base = {STALL: 1.0, FALL: -0.5}
    trainer = make(mode, base)
    updates = trainer.run(synthetic_losses(), 400)
    final = updates[-1][1]
    assert final[FALL] < 0 and final[STALL] > 0
    moving = FALL if DIRECTIONS[mode][FALL] != 0 else STALL
    assert abs(final[moving] / base[moving] - 1) > 0.05
    losses = {STALL: torch.tensor(0.05), FALL: torch.tensor(2.0)}
    expected = sum(abs(final[name]) * losses[name] for name in base)
    total = trainer.scheduler.weighted_sum(losses)
    if mode == "uncertainty":  # minus the log-variance regulariser, which is not a weight
        reg = trainer.scheduler.weighted_sum({STALL: torch.tensor(0.0), FALL: torch.tensor(0.0)})
        total = total - reg
    assert total.item() == pytest.approx(float(expected), rel=1e-5)


def test_missing_loss_is_reported_by_name() -> None:
    scheduler = make("balance").scheduler
    with pytest.raises(ValueError, match=FALL):
        scheduler.observe(1, {STALL: torch.tensor(1.0)})


def test_non_finite_losses_are_left_out_of_the_statistics() -> None:
    def corrupted() -> Iterator[tuple[int, Losses]]:
        for iteration, losses in synthetic_losses():
            if iteration % 7 == 0:
                losses = {**losses, STALL: torch.tensor(math.nan)}
            if iteration % 11 == 0:
                losses = {**losses, FALL: torch.tensor(math.inf)}
            yield iteration, losses

    clean = multipliers(make("dwa").run(synthetic_losses(), 300), {STALL: 1.0, FALL: 1.0})
    spiked = multipliers(make("dwa").run(corrupted(), 300), {STALL: 1.0, FALL: 1.0})
    assert len(spiked) == len(clean)
    assert all(math.isfinite(v) for step in spiked for v in step.values())
    assert spiked[-1] == pytest.approx(clean[-1], rel=0.05)


# ------------------------------------------------------------------ hot path
@contextlib.contextmanager
def no_host_sync() -> Iterator[None]:
    """Any read of a tensor value on the host raises inside this block."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("host sync on the hot path")

    with pytest.MonkeyPatch.context() as patch:
        for method in ("item", "tolist", "__bool__", "__float__", "__int__", "__array__"):
            patch.setattr(torch.Tensor, method, refuse)
        yield


@pytest.mark.parametrize("mode", MODES)
def test_hot_path_reads_nothing_on_the_host(mode: str) -> None:
    trainer = make(mode, baseline_iterations=0)
    stream = synthetic_losses()
    trainer.run(stream, INTERVAL)  # past the first update: uncertainty is learning
    scheduler = trainer.scheduler
    for _ in range(INTERVAL - 1):
        iteration, losses = next(stream)
        if trainer.optimizer is not None:
            trainer.optimizer.zero_grad()
        with no_host_sync():
            total = scheduler.weighted_sum(losses)
            scheduler.weighted_terms(losses)
            if total.requires_grad:
                total.backward()
        if trainer.optimizer is not None:
            trainer.optimizer.step()  # torch's Adam reads its step count; not ours
        with no_host_sync():
            scheduler.observe(iteration, losses)
            assert scheduler.maybe_update(iteration) is None


# -------------------------------------------------------------------- resume
@pytest.mark.parametrize("mode", MODES)
def test_state_round_trip_gives_identical_future_weights(mode: str) -> None:
    original = make(mode)
    stream = synthetic_losses()
    original.run(stream, 125)  # mid-interval, after the baseline
    buffer = io.BytesIO()
    optimizer_state = original.optimizer.state_dict() if original.optimizer else None
    torch.save({"dls": original.scheduler.state_dict(), "opt": optimizer_state}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed = make(mode)
    resumed.scheduler.load_state_dict(saved["dls"])
    if resumed.optimizer is not None:
        resumed.optimizer.load_state_dict(saved["opt"])
    assert resumed.scheduler.current_weights() == original.scheduler.current_weights()
    future_original: Trajectory = []
    future_resumed: Trajectory = []
    for _ in range(150):
        iteration, losses = next(stream)
        for trainer, record in ((original, future_original), (resumed, future_resumed)):
            result = trainer.step(iteration, losses)
            if result is not None:
                record.append((iteration, result))
    assert future_resumed == future_original
    assert len(future_original) == 15
    assert future_original[-1][1] != future_original[0][1]


def test_resume_with_other_losses_is_a_user_error() -> None:
    state = make("balance").scheduler.state_dict()
    other = DynamicLossScheduler(options("balance"), {STALL: 1.0, "l_g_fft": 0.1})
    with pytest.raises(UserError, match="l_g_fft"):
        other.load_state_dict(state)
    with pytest.raises(UserError, match="dwa"):
        make("dwa").scheduler.load_state_dict(state)


# --------------------------------------------------------------- uncertainty
def test_uncertainty_parameters_receive_gradients_through_weighted_sum() -> None:
    trainer = make("uncertainty", baseline_iterations=0, uncertainty_lr=0.01)
    scheduler = trainer.scheduler
    trainer.run(synthetic_losses(), INTERVAL)
    (log_variances,) = scheduler.parameters()
    group = scheduler.optimizer_param_group()
    assert group is not None and group["weight_decay"] == 0.0 and group["lr"] == 0.01
    network_output = torch.tensor([0.3, 2.0], requires_grad=True)
    losses = {STALL: network_output[0] ** 2, FALL: network_output[1] * 1.5}
    log_variances.grad = None
    scheduler.weighted_sum(losses).backward()
    assert log_variances.grad is not None
    assert torch.isfinite(log_variances.grad).all() and (log_variances.grad != 0).all()
    assert network_output.grad is not None and (network_output.grad != 0).all()


# ----------------------------------------------------------------------- DDP
DDP_MODES = ("balance", "uncertainty")


def _ddp_worker(rank: int, init_file: str, out_folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        results = {}
        for mode in DDP_MODES:
            trainer = make(mode)
            # Each rank sees differently scaled losses with its own noise.
            stream = synthetic_losses(seed=rank, scales=(1.0 + rank, 1.0 - 0.5 * rank))
            results[mode] = (trainer.run(stream, 150), trainer.scheduler.multipliers())
        torch.save(results, os.path.join(out_folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_hold_identical_weights() -> None:
    with tempfile.TemporaryDirectory() as folder:
        init_file = os.path.join(folder, "init")
        mp.spawn(_ddp_worker, args=(init_file, folder), nprocs=2, join=True)
        rank0, rank1 = (torch.load(os.path.join(folder, f"rank{r}.pt")) for r in (0, 1))
    for mode in DDP_MODES:
        assert rank0[mode] == rank1[mode], mode
        assert any(abs(v - 1) > 0.05 for v in rank0[mode][1].values()), mode
