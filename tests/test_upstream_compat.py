"""traiNNer-redux option vocabulary: keys upstream's templates use decode here with their
meaning, or fail with a line that says what is not available (not a did-you-mean)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import base_options
from traiNNer.config.compat import drain_notes
from traiNNer.config.loader import decode_options, validate
from traiNNer.utils.errors import ConfigError


def upstream_style(**root: Any) -> dict[str, Any]:
    """A fidelity option file in upstream's vocabulary (written here, not copied)."""
    data = base_options(Path("/unused"), Path("/unused"))
    data.update(use_compile=False, compile_mode="max-autotune", fast_matmul=False)
    data["datasets"]["val"]["io_backend"] = {"type": "disk"}
    data["train"].update(ema_decay=0.999, ema_power=0.75, ema_switch_iter=0)
    data.update(root)
    return data


def load(data: dict[str, Any], for_training: bool = True) -> Any:
    return validate(decode_options(data), for_training=for_training)


def test_upstream_keys_decode_with_their_meaning() -> None:
    opt = load(upstream_style())
    assert opt.compile_mode == "max-autotune"
    assert opt.train.ema_power == 0.75 and opt.train.ema_switch_iter == 0
    assert opt.datasets["val"].io_backend == {"type": "disk"}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("compile_mode", "fastest", "compile_mode"),
        (
            "io_backend",
            {"type": "lmdb"},
            r"datasets\.val\.io_backend\.type: 'lmdb' is not supported",
        ),
    ],
)
def test_values_outside_upstream_or_not_supported_name_the_key(
    key: str, value: Any, message: str
) -> None:
    data = upstream_style()
    if key == "io_backend":
        data["datasets"]["val"]["io_backend"] = value
    else:
        data[key] = value
    with pytest.raises(ConfigError, match=message):
        load(data)


def test_metrics_not_available_here_are_noted_when_off_and_an_error_when_on() -> None:
    drain_notes()
    data = upstream_style()
    data["val"]["metrics"]["topiq_nr"] = {"type": "calculate_topiq_nr"}
    data["val"]["metrics"]["lpips"] = {"type": "calculate_lpips", "better": "lower"}
    data["val"]["metrics"]["dists"] = {"type": "calculate_dists", "better": "lower"}
    data["val"]["metrics"]["topiq"] = {"type": "calculate_topiq"}
    data["val"]["metrics_enabled"] = False
    opt = load(data)
    assert "topiq_nr" not in opt.val.metrics and "psnr" in opt.val.metrics
    # Upstream's learned metrics are available (tests/test_upstream_metrics.py); with
    # metrics off they are kept as written and their weights are not looked for.
    assert (
        opt.val.metrics["topiq"].better == "higher" and opt.val.metrics["dists"].better == "lower"
    )
    notes = drain_notes()
    assert len(notes) == 1 and "calculate_topiq_nr ignored" in notes[0]
    data["val"]["metrics_enabled"] = True
    with pytest.raises(
        ConfigError, match=r"val\.metrics\.topiq_nr\.type: calculate_topiq_nr is not available"
    ):
        load(data)


def test_an_upstream_architecture_not_provided_here_says_so() -> None:
    data = upstream_style()
    data["network_g"] = {"type": "spanplus"}
    with pytest.raises(ConfigError) as error:
        load(data)
    message = str(error.value)
    assert "'spanplus' is a traiNNer-redux architecture" in message
    assert "did you mean" not in message


# --------------------------------------------------------------------------- command line
def parse(*argv: str) -> Any:
    import argparse

    from traiNNer.utils.cli import add_upstream_flags

    parser = argparse.ArgumentParser()
    add_upstream_flags(parser)
    return parser.parse_args(["-opt", "x.yml", *argv])


def test_upstream_flags_parse_and_name_and_seed_override_the_file() -> None:
    from traiNNer.utils.cli import apply_overrides

    opt = load(upstream_style())
    args = parse("--launcher", "slurm", "--name", "other", "--manual_seed", "42", "--debug")
    notes = apply_overrides(opt, args)
    assert (opt.name, opt.manual_seed) == ("other", 42)
    assert len(notes) == 1 and notes[0].startswith("--debug is accepted")
    assert apply_overrides(opt, parse("--resume", "3", "--watch", "--start-iter", "5"))


def test_slurm_variables_become_torchrun_ones() -> None:
    from traiNNer.utils.cli import slurm_environment
    from traiNNer.utils.errors import UserError

    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_NODELIST": "node[01-02]"}
    resolved = slurm_environment(env, gpus=4, port=29511, resolve=lambda nodes: "node01")
    assert resolved == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "node01",
        "MASTER_PORT": "29511",
    }
    with pytest.raises(UserError, match="SLURM_PROCID"):
        slurm_environment({}, gpus=1, port=1)


# --------------------------------------------------------------------------- architectures
@pytest.mark.parametrize("unshuffle", [True, False])
def test_esrgan_use_pixel_unshuffle_at_scale_2_upscales_and_opens_in_spandrel(
    unshuffle: bool,
) -> None:
    import torch
    from spandrel import ModelLoader

    from traiNNer.config.loader import _populate_registries
    from traiNNer.models.sr_model import build_network

    _populate_registries()
    kwargs = {"num_filters": 8, "num_blocks": 1, "use_pixel_unshuffle": unshuffle}
    net = build_network("esrgan", 2, kwargs)
    assert net(torch.rand(1, 3, 16, 16)).shape == (1, 3, 32, 32)
    descriptor = ModelLoader().load_from_state_dict(net.state_dict())
    assert descriptor.scale == 2
    first = next(iter(net.state_dict().values()))
    assert first.shape[1] == (12 if unshuffle else 3)  # unshuffled input: 3 x 2 x 2 channels


def test_dat_accepts_use_chk() -> None:
    data = upstream_style()
    data["network_g"] = {"type": "dat_light", "use_chk": True}
    assert load(data).network_g["use_chk"] is True


def test_dry_run_checks_data_and_model_and_writes_nothing(
    tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import train
    from tests.conftest import write_options

    monkeypatch.chdir(tmp_path)
    option_file = write_options(tmp_path / "run.yml", base_options(tiny_dataset, tmp_path))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert train.main(["-opt", str(option_file), "--dry_run"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no experiments/, tb_logger/
    data = base_options(tiny_dataset, tmp_path)
    data["datasets"]["train"]["dataroot_gt"] = str(tmp_path / "missing")
    # A missing data folder fails the dry run (one line), still writing nothing.
    assert train.main(["-opt", str(write_options(tmp_path / "bad.yml", data)), "--dry_run"]) != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "bad.yml"])
