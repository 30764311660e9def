"""Dynamic loss scheduling: directions, limits, config strictness, resume, no host sync.

`dwa` and `balance` run as the `dynamic_loss_scheduling` automation through a real
controller (so its decisions get the controller's bounds and logging); `uncertainty` is the
loss-side `UncertaintyWeighting` module. Both are driven through one harness.
"""

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

from traiNNer.automations.base import Decision, StepRecord, TrainInfo
from traiNNer.automations.controller import AutomationController
from traiNNer.automations.dynamic_loss_scheduling import (
    DynamicLossScheduling,
    DynamicLossSchedulingConfig,
)
from traiNNer.losses.dynamic_loss_scheduling import UncertaintyWeighting
from traiNNer.training.knobs import Knobs, configured_loss_weights
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


def options(mode: str, **overrides: Any) -> DynamicLossSchedulingConfig:
    raw = {
        "enabled": True,
        "mode": mode,
        "baseline_iterations": BASELINE,
        "update_interval": INTERVAL,
        **overrides,
    }
    return msgspec.convert(raw, DynamicLossSchedulingConfig)


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


class NullSink:
    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def decision(self, iteration: int, decision: Decision, level: int = 0) -> None:
        self.decisions.append(decision)

    def scalars(self, iteration: int, automation: str, values: Any) -> None:
        pass


class Trainer:
    """Drives a mode the way training does: the automation through the controller and
    the `loss_weights` knob, uncertainty through the model-side module and an optimizer."""

    def __init__(
        self, config: DynamicLossSchedulingConfig, base: dict[str, float], world_size: int = 1
    ) -> None:
        self.config = config
        self.base = base
        self.learned: UncertaintyWeighting | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.sink = NullSink()
        self.knobs = Knobs(loss_weights=dict(base))
        if config.mode == "uncertainty":
            self.learned = UncertaintyWeighting(config, base)
            self.optimizer = torch.optim.Adam(self.learned.parameters(), lr=0.02)
        else:
            rank = dist.get_rank() if world_size > 1 else 0
            self.automation = DynamicLossScheduling(config)
            self.controller = AutomationController(
                None,
                self.knobs,
                self.sink,
                automations=[self.automation],
                is_main=rank == 0,
                world_size=world_size,
            )
            self.controller.on_train_start(TrainInfo(10_000, 0, "cpu", True, loss_weights=base))

    def weighted_sum(self, losses: Losses) -> torch.Tensor:
        if self.learned is not None:
            return self.learned.weighted_sum(losses)
        total = sum(abs(self.knobs.loss_weights[name]) * losses[name] for name in self.base)
        assert isinstance(total, torch.Tensor)
        return total

    def current_weights(self) -> dict[str, float]:
        if self.learned is not None:
            return self.learned.current_weights()
        return dict(self.knobs.loss_weights)

    def observe(self, iteration: int, losses: Losses) -> None:
        if self.learned is not None:
            self.learned.observe(iteration, losses)
        else:
            total = sum(losses.values())
            record = StepRecord(
                iteration, {**losses, "l_g_total": total}, {}, {}, None, 0.0, None, 2
            )
            self.controller.observe_step(record)

    def step(self, iteration: int, losses: Losses) -> dict[str, float] | None:
        """One step; the weights after it when it was an update after the baseline."""
        if self.optimizer is not None:
            self.optimizer.zero_grad()
            total = self.weighted_sum(losses)
            if total.requires_grad:  # synthetic losses: only the log-variances learn
                total.backward()
                self.optimizer.step()
        self.observe(iteration, losses)
        if iteration % INTERVAL == 0 and iteration >= self.config.baseline_iterations:
            return self.current_weights()
        return None

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
    return Trainer(options(mode, **overrides), base)


def multipliers(updates: Trajectory, base: dict[str, float]) -> list[dict[str, float]]:
    return [{name: weights[name] / base[name] for name in base} for _, weights in updates]


# ------------------------------------------------------------------ config
def test_defaults_are_valid_and_every_key_is_documented() -> None:
    opts = msgspec.convert({}, DynamicLossSchedulingConfig)
    assert opts.enabled is False
    assert opts.min_weight <= 1 <= opts.max_weight
    # Every update is bounded already; a cap on their count would freeze a long run.
    assert opts.max_adjustments == 0
    schema = msgspec.json.schema(DynamicLossSchedulingConfig)
    properties = schema["$defs"]["DynamicLossSchedulingConfig"]["properties"]
    assert set(properties) == set(DynamicLossSchedulingConfig.__struct_fields__)
    assert [key for key, spec in properties.items() if not spec.get("description")] == []


def test_unknown_key_is_an_error_not_a_silent_disable() -> None:
    with pytest.raises(msgspec.ValidationError, match="adaptation_rat"):
        msgspec.convert({"enabled": True, "adaptation_rat": 0.1}, DynamicLossSchedulingConfig)


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
        msgspec.convert({key: value}, DynamicLossSchedulingConfig)


def test_zero_weight_losses_are_off_and_take_no_name() -> None:
    losses = [
        {"type": "l1loss", "loss_weight": 1.0},
        {"type": "fftloss", "loss_weight": 0.0},
        {"type": "l1loss", "loss_weight": -0.5},
    ]
    assert configured_loss_weights(losses) == {"l_g_l1": 1.0, "l_g_l1_2": -0.5}


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
    stream = synthetic_losses()
    for _ in range(99):
        iteration, losses = next(stream)
        assert trainer.step(iteration, losses) is None
        assert trainer.current_weights() == {STALL: 1.0, FALL: 1.0}
        expected = losses[STALL] + losses[FALL]
        assert torch.allclose(trainer.weighted_sum(losses), expected)
    if trainer.learned is not None:
        assert trainer.learned.log_variances.grad is None
    else:
        assert trainer.sink.decisions == []
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
    # dwa's own guard: rates within noise_sigmas standard errors of each other are equal.
    guarded = make("dwa", adaptation_threshold=0.0).run(alike(1), 300)
    assert all(w == {STALL: 1.0, FALL: 1.0} for _, w in guarded)
    for mode, unguarded in (("dwa", {"noise_sigmas": 0.0}), ("balance", {})):
        noisy = make(mode, adaptation_threshold=0.0, **unguarded).run(alike(1), 300)
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
    total = trainer.weighted_sum(losses)
    if mode == "uncertainty":  # minus the log-variance regulariser, which is not a weight
        reg = trainer.weighted_sum({STALL: torch.tensor(0.0), FALL: torch.tensor(0.0)})
        total = total - reg
    assert total.item() == pytest.approx(float(expected), rel=1e-5)


def test_missing_loss_is_reported_by_name() -> None:
    learned = make("uncertainty").learned
    assert learned is not None
    with pytest.raises(ValueError, match=FALL):
        learned.observe(1, {STALL: torch.tensor(1.0)})
    # The automation is disabled by the controller (and the weights stay) instead.
    trainer = make("balance")
    record = StepRecord(1, {STALL: torch.tensor(1.0)}, {}, {}, None, 0.0, None, 2)
    trainer.controller.observe_step(record)
    assert not trainer.controller.is_active("dynamic_loss_scheduling")
    assert "KeyError" in trainer.sink.decisions[0].reason


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
    trainer.run(stream, INTERVAL)  # past the first update: weights are moving
    for _ in range(INTERVAL - 1):
        iteration, losses = next(stream)
        if trainer.optimizer is not None:
            trainer.optimizer.zero_grad()
        with no_host_sync():
            total = trainer.weighted_sum(losses)
            if total.requires_grad:
                total.backward()
        if trainer.optimizer is not None:
            trainer.optimizer.step()  # torch's Adam reads its step count; not ours
        with no_host_sync():
            trainer.observe(iteration, losses)


# -------------------------------------------------------------------- resume
def saved_state(trainer: Trainer) -> dict[str, Any]:
    if trainer.learned is not None:
        assert trainer.optimizer is not None
        state = {"learned": trainer.learned.state_dict(), "opt": trainer.optimizer.state_dict()}
    else:
        state = {"controller": trainer.controller.state_dict()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def resume(trainer: Trainer, state: dict[str, Any]) -> None:
    if trainer.learned is not None:
        assert trainer.optimizer is not None
        trainer.learned.load_state_dict(state["learned"])
        trainer.optimizer.load_state_dict(state["opt"])
    else:
        # As the trainer does it: controller state (and knobs) first, then the start.
        trainer.controller = AutomationController(
            None, trainer.knobs, trainer.sink, automations=[trainer.automation]
        )
        trainer.controller.load_state_dict(state["controller"])
        info = TrainInfo(10_000, 125, "cpu", True, loss_weights=trainer.base)
        trainer.controller.on_train_start(info)


@pytest.mark.parametrize("mode", MODES)
def test_state_round_trip_gives_identical_future_weights(mode: str) -> None:
    original = make(mode)
    stream = synthetic_losses()
    original.run(stream, 125)  # mid-interval, after the baseline
    state = saved_state(original)

    resumed = make(mode)
    resume(resumed, state)
    assert resumed.current_weights() == original.current_weights()
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


def test_resume_with_other_losses_is_a_user_error_for_learned_weights() -> None:
    learned = make("uncertainty").learned
    assert learned is not None
    other = UncertaintyWeighting(options("uncertainty"), {STALL: 1.0, "l_g_fft": 0.1})
    with pytest.raises(UserError, match="l_g_fft"):
        other.load_state_dict(learned.state_dict())


def test_automation_starts_afresh_when_the_losses_changed() -> None:
    trainer = make("balance")
    trainer.run(synthetic_losses(), 125)
    state = saved_state(trainer)
    other = Trainer(options("balance"), {STALL: 1.0, "l_g_fft": 0.1})
    resume(other, state)
    assert other.automation.stats is None and other.automation.base == {STALL: 1.0, "l_g_fft": 0.1}


# --------------------------------------------------------------- uncertainty
def test_uncertainty_parameters_receive_gradients_through_weighted_sum() -> None:
    trainer = make("uncertainty", baseline_iterations=0, uncertainty_lr=0.01)
    scheduler = trainer.learned
    assert scheduler is not None
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
            trainer = Trainer(options(mode), {STALL: 1.0, FALL: 1.0}, world_size=2)
            # Each rank sees differently scaled losses with its own noise.
            stream = synthetic_losses(seed=rank, scales=(1.0 + rank, 1.0 - 0.5 * rank))
            results[mode] = (trainer.run(stream, 150), trainer.current_weights())
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
