"""Shared fixtures: small images on disk and minimal option files."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

torch.set_num_threads(1)


def write_png(path: Path, tensor: torch.Tensor) -> None:
    from traiNNer.data.image_io import write_image

    write_image(tensor, path)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HR training images plus a paired 2x validation set, made from smooth patterns."""
    from traiNNer.data.resize import bicubic_downscale

    root = tmp_path_factory.mktemp("tiny_dataset")
    generator = torch.Generator().manual_seed(0)
    for split, count, size in (("train", 4, 64), ("val", 2, 32)):
        for i in range(count):
            low = torch.rand(3, size // 8, size // 8, generator=generator)
            hr = torch.nn.functional.interpolate(
                low[None], size=(size, size), mode="bicubic", align_corners=False
            )[0].clamp(0, 1)
            write_png(root / split / "hr" / f"img{i}.png", hr)
            if split == "val":
                write_png(root / split / "lr_x2" / f"img{i}.png", bicubic_downscale(hr, 2))
    return root


def base_options(dataset_root: Path, experiments_root: Path) -> dict[str, Any]:
    """A small but complete 2x training config that trains on a CPU in seconds."""
    return copy.deepcopy(
        {
            "name": "unit_run",
            "scale": 2,
            "num_gpu": "auto",
            "manual_seed": 7,
            "datasets": {
                "train": {
                    "type": "bicubicimagedataset",
                    "dataroot_gt": str(dataset_root / "train" / "hr"),
                    "lq_size": 16,
                    "batch_size_per_gpu": 2,
                    "num_worker_per_gpu": 0,
                    "dataset_enlarge_ratio": 4,
                },
                "val": {
                    "name": "tiny_val",
                    "type": "pairedimagedataset",
                    "dataroot_gt": str(dataset_root / "val" / "hr"),
                    "dataroot_lq": str(dataset_root / "val" / "lr_x2"),
                },
            },
            "network_g": {"type": "paragonsr2_nano"},
            "path": {"experiments_root": str(experiments_root / "experiments")},
            "train": {
                "total_iter": 12,
                "optim_g": {"type": "AdamW", "lr": 1e-3, "betas": [0.9, 0.99]},
                "scheduler": {"type": "MultiStepLR", "milestones": [8], "gamma": 0.5},
                "ema_decay": 0.9,
                "losses": [{"type": "l1loss", "loss_weight": 1.0}],
            },
            "val": {
                "val_freq": 4,
                "metrics": {
                    "psnr": {"type": "calculate_psnr", "crop_border": 2},
                    "ssim": {"type": "calculate_ssim", "crop_border": 2},
                },
            },
            "logger": {"print_freq": 4, "save_checkpoint_freq": 4, "use_tb_logger": True},
        }
    )


def write_options(path: Path, options: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(options, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_image_check_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The image-integrity cache of test runs stays out of the user's ~/.cache."""
    import os

    os.environ["TRAINNER_CACHE_DIR"] = str(tmp_path_factory.mktemp("image_check_cache"))
