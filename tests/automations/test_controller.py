"""The controller: applying decisions safely, logging them, resuming, DDP broadcast."""

from __future__ import annotations

import io
import json
import logging
import math
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import torch
import torch.multiprocessing as mp

from tests.host_reads import host_reads_forbidden
from traiNNer.automations.adaptive_gradient_clipping import AdaptiveGradientClippingConfig
from traiNNer.automations.base import (
    Automation,
    AutomationConfig,
    Decision,
    Knobs,
    StepRecord,
    TrainInfo,
    TrialSteps,
)
from traiNNer.automations.batch_size import BatchSizeConfig
from traiNNer.automations.config import AutomationsOptions
from traiNNer.automations.controller import AutomationController
from traiNNer.automations.decision_log import DecisionLog, read_decisions
from traiNNer.automations.early_stopping import EarlyStoppingConfig
from traiNNer.automations.lr_scheduling import LRSchedulingConfig
from traiNNer.config.validation import convert
from traiNNer.training.trials import agreed_outcome
from traiNNer.utils.errors import ConfigError, UserError

GIB = 1 << 30


class RecordingSink:
    """Keeps what the controller logs, for assertions."""

    def __init__(self) -> None:
        self.decisions: list[tuple[int, Decision, int]] = []
        self.scalar_calls: list[tuple[int, str, dict[str, float]]] = []

    def decision(self, iteration: int, decision: Decision, level: int = logging.INFO) -> None:
        self.decisions.append((iteration, decision, level))

    def scalars(self, iteration: int, automation: str, values: Any) -> None:
        self.scalar_calls.append((iteration, automation, dict(values)))

    def rows(self) -> list[tuple[Any, ...]]:
        return [
            (it, d.automation, d.parameter, d.old, d.new, d.reason) for it, d, _ in self.decisions
        ]


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None:
        self.scalars.append((tag, scalar_value, global_step))


class Scripted(Automation):
    """A test automation whose hooks return what the test scripts."""

    name = "scripted"
    config_type: ClassVar[type[AutomationConfig]] = AutomationConfig
    actions = frozenset({"restore_best_weights"})

    def __init__(
        self,
        script: Callable[[int, Knobs], list[Decision]],
        *,
        name: str = "scripted",
        interval: int = 1,
        max_adjustments: int = 100,
        oom: Callable[[Knobs], list[Decision]] | None = None,
    ) -> None:
        super().__init__(AutomationConfig(enabled=True, max_adjustments=max_adjustments))
        self.name = name  # type: ignore[misc] - instance-level name for the test
        self.script = script
        self._interval = interval
        self.oom = oom
        self.calls = 0

    @property
    def interval(self) -> int:
        return self._interval

    def on_interval(self, iteration: int, knobs: Knobs) -> list[Decision]:
        self.calls += 1
        return self.script(iteration, knobs)

    def on_oom(
        self, iteration: int, phase: Literal["train", "val"], knobs: Knobs
    ) -> list[Decision]:
        return self.oom(knobs) if self.oom is not None else []


def record(
    iteration: int, loss: float = 0.1, norm: float = 0.5, peak: int | None = None
) -> StepRecord:
    return StepRecord(
        iteration=iteration,
        losses={"l_g_total": torch.tensor(loss)},
        grad_norms={"net_g": torch.tensor(norm)},
        clipped={},
        loss_scale=None,
        step_time=0.01,
        peak_memory=peak,
        batch_size=8,
    )


def info(**overrides: Any) -> TrainInfo:
    fields: dict[str, Any] = {
        "total_iter": 4000,
        "start_iter": 0,
        "device_type": "cpu",
        "bf16_supported": False,
        "base_lr": 1e-3,
        "device_total_memory": 10 * GIB,
        "val_freq": 250,
    }
    fields.update(overrides)
    return TrainInfo(**fields)


def scripted_controller(
    *automations: Automation,
) -> tuple[AutomationController, Knobs, RecordingSink]:
    knobs = Knobs(batch_size=8)
    sink = RecordingSink()
    return AutomationController(None, knobs, sink, automations=list(automations)), knobs, sink


# ---------------------------------------------------------------- safety rules


def test_decision_outside_its_bounds_is_clamped_and_logged_as_clamped() -> None:
    def script(iteration: int, knobs: Knobs) -> list[Decision]:
        return [
            Decision("scripted", "lr_multiplier", knobs.lr_multiplier, 5.0, "go up", (0.1, 2.0))
        ]

    controller, knobs, sink = scripted_controller(Scripted(script))
    controller.observe_step(record(1))
    assert knobs.lr_multiplier == 2.0
    (_, decision, _) = sink.decisions[0]
    assert decision.new == 2.0 and "clamped" in decision.reason
    # A second identical request changes nothing and logs nothing.
    controller.observe_step(record(2))
    assert len(sink.decisions) == 1


def test_non_finite_value_is_refused() -> None:
    def script(iteration: int, knobs: Knobs) -> list[Decision]:
        return [Decision("scripted", "lr_multiplier", 1.0, math.inf, "overflow", (0.0, math.inf))]

    controller, knobs, sink = scripted_controller(Scripted(script))
    controller.observe_step(record(1))
    assert knobs.lr_multiplier == 1.0
    assert sink.decisions[0][2] == logging.WARNING and "refused" in sink.decisions[0][1].reason


def test_max_adjustments_freezes_the_automation_and_logs_it_once() -> None:
    def script(iteration: int, knobs: Knobs) -> list[Decision]:
        return [
            Decision(
                "scripted", "lr_multiplier", knobs.lr_multiplier, knobs.lr_multiplier * 0.5, "down"
            )
        ]

    automation = Scripted(script, max_adjustments=3)
    controller, knobs, sink = scripted_controller(automation)
    for iteration in range(1, 11):
        controller.observe_step(record(iteration))
    assert knobs.lr_multiplier == 0.125
    assert automation.calls == 3  # frozen: hooks stop running
    frozen = [d for _, d, _ in sink.decisions if d.parameter == "frozen"]
    assert len(frozen) == 1 and "max_adjustments=3" in frozen[0].reason
    assert not controller.is_active("scripted")


def test_raising_automation_is_disabled_and_others_keep_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(iteration: int, knobs: Knobs) -> list[Decision]:
        if iteration >= 3:
            raise ZeroDivisionError("bad statistics")
        return [Decision("broken", "aug_prob", knobs.aug_prob, 0.1 * iteration, "ramp")]

    def healthy(iteration: int, knobs: Knobs) -> list[Decision]:
        return [Decision("healthy", "val_interval", knobs.val_interval, 1000 + iteration, "tick")]

    broken_automation = Scripted(broken, name="broken")
    controller, knobs, sink = scripted_controller(
        broken_automation, Scripted(healthy, name="healthy")
    )
    with caplog.at_level(logging.WARNING, logger="traiNNer.automations"):
        for iteration in range(1, 6):
            controller.observe_step(record(iteration))
    assert knobs.aug_prob == pytest.approx(0.2)  # last good value kept
    assert knobs.val_interval == 1005
    assert broken_automation.calls == 3
    disabled = [d for _, d, level in sink.decisions if d.parameter == "enabled"]
    assert len(disabled) == 1 and "ZeroDivisionError" in disabled[0].reason
    assert not controller.is_active("broken")


def test_user_error_at_start_stops_the_run_but_later_errors_only_disable() -> None:
    class StrictStart(Scripted):
        def on_train_start(self, info: TrainInfo, knobs: Knobs) -> list[Decision]:
            raise UserError("train.automations.scripted.x: bad value")

    controller, _, _ = scripted_controller(StrictStart(lambda i, k: []))
    with pytest.raises(UserError, match="bad value"):
        controller.on_train_start(info())

    def later(iteration: int, knobs: Knobs) -> list[Decision]:
        raise UserError("metric missing")

    controller, _, _ = scripted_controller(Scripted(later))
    controller.observe_step(record(1))
    assert not controller.is_active("scripted")


def test_unknown_knob_disables_the_automation_without_touching_knobs() -> None:
    def script(iteration: int, knobs: Knobs) -> list[Decision]:
        return [Decision("scripted", "momentum", 0.9, 0.8, "typo")]

    controller, knobs, _ = scripted_controller(Scripted(script))
    before = Knobs(batch_size=8)
    controller.observe_step(record(1))
    assert knobs == before
    assert not controller.is_active("scripted")


def test_oom_remedies_first_one_wins_and_none_means_unhandled() -> None:
    calls: list[str] = []

    def checkpointing(knobs: Knobs) -> list[Decision]:
        calls.append("precision")
        if knobs.activation_checkpointing:
            return []
        return [Decision("precision", "activation_checkpointing", False, True, "save memory")]

    def shrink(knobs: Knobs) -> list[Decision]:
        calls.append("batch_size")
        if knobs.batch_size == 1:
            return []
        return [
            Decision("batch_size", "batch_size", knobs.batch_size, knobs.batch_size // 2, "oom")
        ]

    class Shrinker(Scripted):
        oom_priority = 20

    class Saver(Scripted):
        oom_priority = 10

    # Listed batch size first: the controller still asks the lower oom_priority first.
    controller, knobs, _ = scripted_controller(
        Shrinker(lambda i, k: [], name="batch_size", oom=shrink, interval=0),
        Saver(lambda i, k: [], name="precision", oom=checkpointing, interval=0),
    )
    assert [d.parameter for d in controller.on_oom(5, "train")] == ["activation_checkpointing"]
    assert knobs.batch_size == 8
    assert [d.new for d in controller.on_oom(5, "train")] == [4]
    assert calls == ["precision", "precision", "batch_size"]
    knobs.set("batch_size", 1)
    assert controller.on_oom(5, "train") == []


def test_knobs_refuse_writes_except_through_set() -> None:
    knobs = Knobs(batch_size=8)
    with pytest.raises(AttributeError):
        knobs.batch_size = 4  # type: ignore[misc]
    with pytest.raises(KeyError, match="unknown knob 'momentum'"):
        knobs.set("momentum", 0.9)
    knobs.set("clip_threshold.net_g", 0.5)
    assert knobs.get("clip_threshold.net_g") == 0.5 and knobs.batch_size == 8


def test_actions_are_queued_for_the_trainer_and_popped_once() -> None:
    def script(iteration: int, knobs: Knobs) -> list[Decision]:
        return [Decision("scripted", "restore_best_weights", None, True, "plateau")]

    controller, _, sink = scripted_controller(Scripted(script))
    controller.observe_step(record(1))
    actions = controller.pop_actions()
    assert [a.parameter for a in actions] == ["restore_best_weights"]
    assert controller.pop_actions() == []
    assert sink.decisions[0][1].parameter == "restore_best_weights"


def test_an_action_the_automation_did_not_declare_is_refused() -> None:
    def script(iteration: int, knobs: Knobs) -> list[Decision]:
        return [Decision("scripted", "restore_last_good_state", None, True, "not mine")]

    controller, _, sink = scripted_controller(Scripted(script))
    controller.observe_step(record(1))
    assert controller.pop_actions() == []
    assert not controller.is_active("scripted")
    assert "not in its declared actions" in sink.decisions[0][1].reason


# ----------------------------------------------------------------------- sink


def test_decision_log_writes_console_jsonl_and_tensorboard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = AutomationsOptions(
        early_stopping=EarlyStoppingConfig(enabled=True, patience=2),
        lr_scheduling=LRSchedulingConfig(
            enabled=True, monitor_train_loss=False, metric="psnr", metric_patience=2
        ),
    )
    writer = FakeWriter()
    jsonl = tmp_path / "experiments" / "run" / "automations.jsonl"
    knobs = Knobs(batch_size=8)
    controller = AutomationController(options, knobs, DecisionLog(jsonl, writer))
    controller.on_train_start(info(val_freq=1000))
    with caplog.at_level(logging.INFO, logger="traiNNer.automations"):
        for iteration, psnr in [(1000, 30.0)] + [(1000 * i, 29.0) for i in range(2, 12)]:
            controller.after_validation(iteration, {"psnr": psnr, "val/psnr": psnr})

    rows = read_decisions(jsonl)
    assert [
        (r["iteration"], r["automation"], r["parameter"], r["old"], r["new"]) for r in rows
    ] == [
        # Automations run in name order; the 2000-iteration window 3000-5000 is flat.
        (5000, "early_stopping", "stop_requested", False, True),
        (5000, "lr_scheduling", "lr_multiplier", 1.0, 0.5),
        # The controller keeps feeding validations; each cut needs a fresh span.
        (8000, "lr_scheduling", "lr_multiplier", 0.5, 0.25),
        (11000, "lr_scheduling", "lr_multiplier", 0.25, 0.125),
    ]
    assert all(
        set(r) == {"iteration", "automation", "parameter", "old", "new", "reason"} for r in rows
    )
    assert "over iterations 3000-5000" in str(rows[0]["reason"])
    assert ("automations/lr_scheduling/lr_multiplier", 0.5, 5000) in writer.scalars
    assert ("automations/early_stopping/stop_requested", 1.0, 5000) in writer.scalars
    # Event-driven automations report their scalars after each validation.
    assert ("automations/early_stopping/best", 30.0, 1000) in writer.scalars
    assert any(
        line.startswith("[early_stopping] stop_requested: False -> True (")
        for line in caplog.messages
    )


def test_decision_log_skips_non_numeric_tensorboard_values_and_flushes_each_line(
    tmp_path: Path,
) -> None:
    writer = FakeWriter()
    log = DecisionLog(tmp_path / "a.jsonl", writer)
    log.decision(7, Decision("precision", "precision", "fp16", "bf16", "scale collapsed"))
    log.decision(8, Decision("x", "clip_threshold.net_d", None, math.inf, "test"))
    # Readable right away, without closing anything: survives a crash.
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert rows[0]["new"] == "bf16" and rows[1]["new"] == "inf"
    assert writer.scalars == [("automations/x/clip_threshold/net_d", math.inf, 8)]


def test_unknown_automation_key_is_a_config_error_with_its_path() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^train\.automations\.lr_scheduling\.patienc: unknown key; did you mean patience",
    ):
        convert({"patienc": 3}, LRSchedulingConfig, prefix="train.automations.lr_scheduling")
    with pytest.raises(ConfigError, match=r"^train\.automations\.batch_size: min_batch_size \(8\)"):
        convert(
            {"batch_size": {"min_batch_size": 8, "max_batch_size": 4}},
            AutomationsOptions,
            prefix="train.automations",
        )


# --------------------------------------------------------------- host syncs


def all_four(**overrides: Any) -> AutomationsOptions:
    configs: dict[str, Any] = {
        "lr_scheduling": LRSchedulingConfig(
            enabled=True, check_interval=100, patience=300, metric="psnr", metric_patience=2
        ),
        "batch_size": BatchSizeConfig(
            enabled=True, grow=True, check_interval=100, grow_patience=400, max_batch_size=64
        ),
        "adaptive_gradient_clipping": AdaptiveGradientClippingConfig(
            enabled=True, monitoring_frequency=50, cooldown=100
        ),
        "early_stopping": EarlyStoppingConfig(enabled=True, patience=2, min_delta=0.01),
    }
    configs.update(overrides)
    return AutomationsOptions(**configs)


def test_observe_step_reads_nothing_on_the_host_between_intervals() -> None:
    knobs = Knobs(batch_size=8)
    controller = AutomationController(all_four(), knobs, RecordingSink())
    controller.on_train_start(info())
    with host_reads_forbidden():
        for iteration in range(1, 50):  # first interval is at 50
            controller.observe_step(record(iteration, peak=GIB))
    controller.observe_step(record(50, peak=GIB))  # the interval may read, once
    assert knobs.clip_threshold["net_g"] == pytest.approx(0.5)  # and it did its work


# ------------------------------------------------------------------- resume


def stream_value(noise: torch.Tensor, iteration: int) -> tuple[float, float]:
    """Loss and gradient norm of a synthetic run: improving, then a plateau, two spikes."""
    progress = min(iteration, 1500)
    loss = (0.02 + 0.1 * (1 + progress / 300) ** -0.5) * (1 + 0.1 * float(noise[iteration, 0]))
    norm = 0.5 * (1 + 0.1 * float(noise[iteration, 1]))
    if iteration in (700, 2200):
        norm *= 20
    return loss, norm


def run_stream(controller: AutomationController, knobs: Knobs, first: int, last: int) -> None:
    noise = torch.randn(3001, 2, generator=torch.Generator().manual_seed(3))
    iteration = first
    while iteration <= last and not knobs.stop_requested:
        if iteration == 1800 and knobs.batch_size > 9:
            # An injected OOM above batch 9: the same iteration is redone afterwards.
            assert controller.on_oom(iteration, "train"), "OOM left unhandled"
            continue
        loss, norm = stream_value(noise, iteration)
        controller.observe_step(record(iteration, loss, norm, peak=3 * GIB))
        if iteration == 1000:
            controller.on_nonfinite(iteration)
        if iteration % 250 == 0:
            psnr = 25 + 5 * min(iteration, 1500) / 1500 + 0.001 * float(noise[iteration, 0])
            controller.after_validation(iteration, {"psnr": psnr, "val/psnr": psnr})
        controller.pop_actions()
        iteration += 1


def fresh(sink: RecordingSink) -> tuple[AutomationController, Knobs]:
    knobs = Knobs(batch_size=8, accum_iter=4)
    return AutomationController(all_four(), knobs, sink), knobs


def test_resumed_run_makes_the_same_decisions_as_an_uninterrupted_one() -> None:
    straight_sink = RecordingSink()
    straight, straight_knobs = fresh(straight_sink)
    straight.on_train_start(info())
    run_stream(straight, straight_knobs, 1, 3000)

    first_sink = RecordingSink()
    first, first_knobs = fresh(first_sink)
    first.on_train_start(info())
    run_stream(first, first_knobs, 1, 1500)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    resumed_sink = RecordingSink()
    resumed, resumed_knobs = fresh(resumed_sink)
    resumed.load_state_dict(state)
    resumed.on_train_start(info(start_iter=1500))
    run_stream(resumed, resumed_knobs, 1501, 3000)

    rows = straight_sink.rows()
    parameters = {row[2] for row in rows}
    # The stream exercises every automation, before and after the resume point.
    assert {
        "lr_multiplier",
        "batch_size",
        "accum_iter",
        "clip_threshold.net_g",
        "stop_requested",
    } <= parameters
    assert any(row[0] > 1500 for row in rows) and any(row[0] <= 1500 for row in rows)
    assert first_sink.rows() == [row for row in rows if row[0] <= 1500]
    assert resumed_sink.rows() == [row for row in rows if row[0] > 1500]
    assert resumed_knobs == straight_knobs
    assert straight_sink.scalar_calls[-1] == resumed_sink.scalar_calls[-1]


def test_knobs_are_restored_only_while_their_automation_is_enabled() -> None:
    sink = RecordingSink()
    controller, knobs = fresh(sink)
    controller.on_train_start(info())
    controller.after_validation(250, {"psnr": 30.0})
    for iteration in range(500, 2001, 250):
        controller.after_validation(iteration, {"psnr": 30.0})
    # lr_scheduling's metric rule cuts after 5 x val_freq (250) iterations without a gain.
    assert knobs.lr_multiplier < 1.0
    state = controller.state_dict()

    knobs_on = Knobs(batch_size=8)
    AutomationController(all_four(), knobs_on, RecordingSink()).load_state_dict(state)
    assert knobs_on.lr_multiplier == knobs.lr_multiplier and knobs_on.clip_threshold == {
        "net_g": 1.0
    }

    knobs_off = Knobs(batch_size=8)
    without_lr = all_four(lr_scheduling=None)
    AutomationController(without_lr, knobs_off, RecordingSink()).load_state_dict(state)
    assert knobs_off.lr_multiplier == 1.0 and knobs_off.clip_threshold == {"net_g": 1.0}


# ---------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        knobs = Knobs(batch_size=8)
        options = all_four(
            batch_size=None,
            lr_scheduling=LRSchedulingConfig(
                enabled=True, metric="psnr", metric_patience=1, check_interval=100, patience=300
            ),
        )
        controller = AutomationController(
            options, knobs, RecordingSink(), is_main=rank == 0, world_size=world_size
        )
        applied: list[list[Any]] = []
        applied += [[d.parameter, d.new] for d in controller.on_train_start(info())]
        for iteration in range(1, 401):
            # Each rank sees different local values; only rank 0's decide.
            norm = 0.05 if rank == 0 else 7.0
            controller.observe_step(record(iteration, loss=0.1, norm=norm))
            if iteration % 50 == 0:
                psnr = 30.0 if rank == 0 else 20.0 + iteration
                applied += [
                    [d.parameter, d.new]
                    for d in controller.after_validation(iteration, {"psnr": psnr})
                ]
        applied += [[d.parameter, d.new] for d in controller.on_oom(401, "val")]

        # Batch size search: a size fits only if it fits on every rank.
        search_knobs = Knobs(batch_size=8)
        searcher = AutomationController(
            AutomationsOptions(
                batch_size=BatchSizeConfig(
                    enabled=True,
                    margin=0.1,
                    max_batch_size=64,
                    search_on_cpu=True,
                    keep_effective_batch=False,
                )
            ),
            search_knobs,
            RecordingSink(),
            is_main=rank == 0,
            world_size=world_size,
        )
        searcher.on_train_start(info())
        limit = 30 if rank == 0 else 20

        def trials(limit: int) -> TrialSteps:
            def run(steps: int, *, batch_size: int | None = None, optimizer: Any = None) -> Any:
                assert batch_size is not None
                oom = batch_size > limit
                losses = [] if oom else [torch.tensor(0.1)] * steps
                return agreed_outcome(losses, oom, world_size, torch.device("cpu"))

            return run

        searcher.run_startup(trials(limit))
        # Nothing fits anywhere: every rank stops with the same user error.
        try:
            searcher.run_startup(trials(0))
            error = ""
        except UserError as caught:
            error = str(caught)
        result = {
            "batch_size": search_knobs.batch_size,
            "error": error,
            "knobs": [knobs.lr_multiplier, knobs.clip_threshold, knobs.val_tiled],
            "applied": applied,
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_apply_rank_zero_decisions(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0 == rank1
    lr_multiplier, thresholds, val_tiled = rank0["knobs"]
    assert lr_multiplier < 1.0  # rank 0's flat metric and loss plateaued
    assert thresholds["net_g"] < 1.0  # from rank 0's small norms, not rank 1's large ones
    assert val_tiled is False  # batch_size automation is off on both ranks
    assert rank0["batch_size"] == 18  # 20 fits on both ranks, less 10%
    assert "min_batch_size" in rank0["error"]
