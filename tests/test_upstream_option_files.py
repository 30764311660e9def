"""Option files in traiNNer-redux's vocabulary (tests/upstream_options/, written here from
what upstream's templates carry) train with train.py and run with test.py unchanged but
for their folders, architecture and length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import spandrel
import yaml

import train
from tests.conftest import write_png
from tests.test_option_files import _load_test_script
from traiNNer.data.image_io import read_image
from traiNNer.data.resize import bicubic_downscale

OPTIONS = Path(__file__).parent / "upstream_options"
# Architectures of upstream's fidelity templates, with the spandrel id their weights load as.
ARCHS = {"span": "SPAN", "compact": "Compact", "esrgan": "ESRGAN", "fdat_tiny": "FDAT"}


@pytest.fixture(scope="module")
def paired_dataset(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_dataset's training images with their 2x bicubic LR, as upstream's paired sets."""
    root = tmp_path_factory.mktemp("paired")
    for hr_path in sorted((tiny_dataset / "train" / "hr").glob("*.png")):
        hr = read_image(hr_path)
        write_png(root / "hr" / hr_path.name, hr)
        write_png(root / "lr" / hr_path.name, bicubic_downscale(hr, 2))
    return root


def filled(name: str, **values: Any) -> dict[str, Any]:
    data = yaml.safe_load((OPTIONS / name).read_text(encoding="utf-8"))
    for section, value in values.items():
        data[section] = value if not isinstance(value, dict) else {**data[section], **value}
    return data


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHS))
def test_upstream_vocabulary_trains_and_its_weights_run_in_test_py(
    arch: str,
    paired_dataset: Path,
    tiny_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    val = tiny_dataset / "val"
    data = filled("fidelity.yml", network_g={"type": arch})
    data["datasets"]["train"].update(
        dataroot_gt=[str(paired_dataset / "hr")], dataroot_lq=[str(paired_dataset / "lr")]
    )
    data["datasets"]["val"].update(dataroot_gt=[str(val / "hr")], dataroot_lq=[str(val / "lr_x2")])
    option_file = tmp_path / "train.yml"
    option_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert train.main(["-opt", str(option_file)]) == 0

    weights = tmp_path / "experiments" / data["name"] / "models" / "net_g_4.safetensors"
    descriptor = spandrel.ModelLoader().load_from_file(weights)
    assert (descriptor.architecture.id, descriptor.scale) == (ARCHS[arch], 2)

    test_data = filled(
        "test.yml",
        network_g={"type": arch},
        path={"pretrain_network_g": str(weights)},
    )
    test_data["datasets"]["val"]["dataroot_lq"] = [str(val / "lr_x2")]
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump(test_data), encoding="utf-8")
    assert _load_test_script().main(["-opt", str(test_file)]) == 0
    outputs = sorted((tmp_path / "results" / test_data["name"] / "visualization").rglob("*.png"))
    assert len(outputs) == len(list((val / "lr_x2").glob("*.png")))
    lr = read_image(next((val / "lr_x2").glob("*.png")))
    assert read_image(outputs[0]).shape[-2:] == (lr.shape[-2] * 2, lr.shape[-1] * 2)
