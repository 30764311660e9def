"""ONNX export (scripts/onnx/convert_to_onnx.py) checked against PyTorch with onnxruntime."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from traiNNer.archs.paragonsr2 import VARIANTS, ParagonSR2
from traiNNer.models.sr_model import build_network
from traiNNer.utils.checkpoint import network_metadata, save_network

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "onnx" / "convert_to_onnx.py"
# By its bare name, as the survey imports it when run from its folder.
sys.path.insert(0, str(SCRIPT.parent))
convert = importlib.import_module("convert_to_onnx")


def export_and_verify(
    net: torch.nn.Module,
    tmp_path: Path,
    dtype: str,
    shape: str = "Nx3xHxW",
    dynamo: bool = False,
) -> Any:
    """Export `net` as the script does and compare it with PyTorch on three image sizes
    other than the traced 32x32 (plus a batch of two when the batch axis is dynamic)."""
    parsed = convert.parse_shape(shape, 32)
    path = tmp_path / f"model_{dtype}.onnx"
    convert.try_export(
        net.eval(), path, parsed, "net", dtype=dtype, opset=20, dynamo=dynamo, optimize=True
    )
    checks = convert.check_set(net, convert.verify_inputs(parsed, None))
    assert {tuple(x.shape[-2:]) for x in checks.inputs} == {(48, 64), (64, 48), (56, 40)}
    assert len(checks.inputs) == (4 if shape.startswith("N") else 3) and not checks.rejected
    return convert.verify_onnx(path, checks, dtype)


def paragonsr2(name: str, scale: int) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_network(name, scale, {"export_safe": True})
    assert isinstance(net, ParagonSR2)
    # A trained-looking detail path: the initial gain would hide most of its output.
    with torch.no_grad():
        net.detail_gain.fill_(1.0)
    return net


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_paragonsr2_variant_exports(name: str, tmp_path: Path) -> None:
    net = paragonsr2(name, 2)
    fp32 = export_and_verify(net, tmp_path, "fp32")
    fp16 = export_and_verify(net, tmp_path, "fp16")
    print(f"{name} x2: fp32 {fp32.psnr:.1f} dB, fp16 {fp16.psnr:.1f} dB")
    assert fp32.psnr >= 50
    assert fp16.psnr > 30


def test_paragonsr2_scale4_with_dynamo(tmp_path: Path) -> None:
    net = paragonsr2("paragonsr2_nano", 4)
    fp32 = export_and_verify(net, tmp_path, "fp32", dynamo=True)
    assert fp32.psnr >= 50


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("compact", {"num_feat": 16, "num_conv": 2}),
        ("span", {"feature_channels": 16}),
        ("esrgan_lite", {"num_filters": 16, "num_blocks": 1}),
        ("plksr_tiny", {"dim": 16, "n_blocks": 2}),
    ],
)
def test_spandrel_archs_export(arch: str, kwargs: dict[str, Any], tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_network(arch, 2, kwargs)
    fp32 = export_and_verify(net, tmp_path, "fp32", shape="1x3xHxW")
    fp16 = export_and_verify(net, tmp_path, "fp16", shape="1x3xHxW")
    print(f"{arch} x2: fp32 {fp32.psnr:.1f} dB, fp16 {fp16.psnr:.1f} dB")
    assert fp32.psnr >= 50
    assert fp16.psnr > 30


def saved_weights(tmp_path: Path, arch: str = "paragonsr2_nano", scale: int = 2) -> Path:
    """Weights as training saves them: experiments/<name>/models/net_g_<iter>.safetensors."""
    kwargs = {"num_feat": 8} if arch.startswith("paragonsr2") else {}
    net = build_network(arch, scale, kwargs)
    path = tmp_path / "experiments" / "demo" / "models" / "net_g_100.safetensors"
    path.parent.mkdir(parents=True)
    return save_network(net.state_dict(), path, network_metadata(arch, scale, kwargs))


def test_cli_on_saved_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = saved_weights(tmp_path)
    out = tmp_path / "onnx"
    assert convert.main([str(weights), "--out", str(out), "--shape", "Nx3xHxW"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "paragonsr2_nano x2 fp32",
        "paragonsr2_nano x2 fp16",
    ]
    assert all("generated smooth images" in line for line in lines)
    assert sorted(p.name for p in out.iterdir()) == [
        "demo_net_g_100_Nx3xHxW_dyn-NHW_fp16_op20.onnx",
        "demo_net_g_100_Nx3xHxW_dyn-NHW_fp32_op20.onnx",
    ]


def test_cli_on_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import write_png

    images = tmp_path / "images"
    for i, (height, width) in enumerate([(40, 72), (300, 50)]):
        write_png(images / f"img{i}.png", convert.smooth_images([(height, width)], seed=i)[0][0])
    weights = saved_weights(tmp_path)
    argv = [str(weights), "--out", str(tmp_path), "--dtype", "fp32", "--images", str(images)]
    assert convert.main([*argv, "--crop", "64"]) == 0
    line = capsys.readouterr().out.strip()
    assert "fp32: PSNR" in line and f"2 inputs, images of {images})" in line


def test_option_file_with_upstream_onnx_block(tmp_path: Path) -> None:
    weights = saved_weights(tmp_path, "compact")
    option_file = tmp_path / "Compact.yml"
    option = {
        "name": "2x_Compact",
        "scale": 2,
        "num_gpu": "auto",
        "network_g": {"type": "compact"},
        "path": {"pretrain_network_g": str(weights)},
        "onnx": {
            "dynamo": False,
            "dtype": "fp32",
            "bf16_exclude_depthwise": True,
            "opset": 17,
            "shape": "1x3xHxW",
            "wrap_5d_to_4d": True,
            "verify": True,
            "optimize": False,
        },
    }
    option_file.write_text(yaml.safe_dump(option), encoding="utf-8")
    out = tmp_path / "onnx"
    assert convert.main(["-opt", str(option_file), "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["2x_Compact_1x3xHxW_dyn-HW_fp32_op17.onnx"]
    # Without network_g the weights' metadata names the network, as for test.py.
    del option["network_g"]
    option_file.write_text(yaml.safe_dump(option), encoding="utf-8")
    assert convert.main(["-opt", str(option_file), "--out", str(out), "--name", "again"]) == 0
    assert (out / "again_1x3xHxW_dyn-HW_fp32_op17.onnx").is_file()


def test_script_runs_as_a_command(tmp_path: Path) -> None:
    weights = saved_weights(tmp_path)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(weights), "--out", str(tmp_path), "--dtype", "fp32"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("PSNR") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.safetensors"], "weights: missing.safetensors does not exist"),
        (["-opt", "missing.yml"], "missing.yml: option file not found"),
        (["WEIGHTS", "--shape", "1xCxHxW"], "onnx.shape: the channel axis must be a number"),
        (["WEIGHTS", "--shape", "1x3xTxHxW"], "5D (video) shape"),
        (["WEIGHTS", "-opt", "x.yml"], "give either a weights file or -opt"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = str(saved_weights(tmp_path))
    argv = [weights if arg == "WEIGHTS" else arg for arg in argv]
    assert convert.main([*argv, "--out", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "onnx").exists()


def test_bf16_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    option_file = tmp_path / "bf16.yml"
    option = {
        "name": "bf16",
        "scale": 2,
        "network_g": {"type": "compact"},
        "path": {"pretrain_network_g": str(saved_weights(tmp_path, "compact"))},
        "onnx": {"dtype": "bf16"},
    }
    option_file.write_text(yaml.safe_dump(option), encoding="utf-8")
    assert convert.main(["-opt", str(option_file), "--out", str(tmp_path / "onnx")]) == 2
    assert "onnx.dtype: bf16 is not supported" in capsys.readouterr().err


def test_arch_the_exporter_cannot_export_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An op without an ONNX translation, in place of a real network's forward.
    net = build_network("compact", 2, {"num_feat": 8, "num_conv": 1})
    monkeypatch.setattr(convert, "build_for_export", lambda request: FftNet(net))
    weights = saved_weights(tmp_path, "compact")
    assert convert.main([str(weights), "--out", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: compact x2 cannot be exported with the TorchScript exporter")


class FftNet(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.fft.rfft2(x).abs()[..., : x.shape[-1]])


@pytest.mark.filterwarnings("ignore:torch.meshgrid")
def test_size_the_tracer_fixed_fails_verification_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # HAT pads to a multiple of its window by Python ints, which the tracer records as
    # constants: right for the traced 32x32, wrong for the 56x40 check image.
    kwargs = {
        "embed_dim": 12,
        "depths": [1],
        "num_heads": [2],
        "window_size": 16,
        "compress_ratio": 3,
        "squeeze_factor": 3,
        "num_feat": 8,
    }
    net = build_network("hat_s", 2, kwargs)
    weights = tmp_path / "hat.safetensors"
    save_network(net.state_dict(), weights, network_metadata("hat_s", 2, kwargs))
    argv = [str(weights), "--out", str(tmp_path), "--dtype", "fp32"]
    assert convert.main(argv) == 1
    # torch's own warnings (HAT's meshgrid) may precede it; ours is one line.
    lines = [line for line in capsys.readouterr().err.splitlines() if "Warning" not in line]
    lines = [line for line in lines if not line.startswith("  ")]
    assert len(lines) == 1 and "the export may have fixed a size" in lines[0]
    assert convert.main([*argv, "--shape", "1x3x40x40"]) == 0
    assert "1x3x40x40_static_fp32" in capsys.readouterr().out


def test_export_survey(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    survey = importlib.import_module("export_survey")
    table = tmp_path / "survey.md"
    assert survey.main(["--archs", "paragonsr2_nano", "--markdown", str(table)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("paragonsr2_nano x2 (") and ": ok: fp32 " in lines[0]
    assert lines[1] == "1 architectures: 1 ok; fp16 exported and ran for 1"
    assert "| paragonsr2_nano | 2 |" in table.read_text(encoding="utf-8")
    assert survey.main(["--archs", "nosuch"]) == 2
    assert "unknown arch 'nosuch'" in capsys.readouterr().err
