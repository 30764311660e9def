"""What the image datasets share: option checks, augmentation, colour handling."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal, TypedDict

from torch import Tensor
from torch.utils.data import Dataset

from traiNNer.config.schema import DatasetOptions
from traiNNer.data.image_io import image_size
from traiNNer.data.transforms import random_flip_rotate, rgb_to_y
from traiNNer.utils.errors import DataError

Phase = Literal["train", "val"]


class Sample(TypedDict):
    """An item of every dataset: the LR image (C, H, W) and its file."""

    lq: Tensor
    lq_path: str


class PairedSample(Sample):
    """An item of datasets with HR targets (`gt_path` is the HR file)."""

    gt: Tensor
    gt_path: str


class ImageDataset(Dataset[Sample]):
    """Base for the registered datasets.

    `key` is the dataset's key under `datasets:` in the option file (`train`,
    `val_1`, ...), used only to name options in error messages; it defaults to
    the phase.
    """

    def __init__(
        self, opt: DatasetOptions, scale: int, phase: Phase, *, key: str | None = None
    ) -> None:
        if phase not in ("train", "val"):
            raise ValueError(f"phase must be 'train' or 'val', got {phase!r}")
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.opt = opt
        self.scale = scale
        self.phase: Phase = phase
        self.prefix = f"datasets.{key or phase}"

    def required_lq_size(self) -> int:
        """The LR crop size, which training cannot do without."""
        if self.opt.lq_size is None:
            raise DataError(
                f"{self.prefix}.lq_size: required for training "
                "(LR crop size in pixels, e.g. 64; the HR crop is lq_size*scale)"
            )
        return self.opt.lq_size

    def header_size(self, path: Path, key: str) -> tuple[int, int]:
        """(height, width) from `path`'s header; an error names the option `key` too."""
        try:
            return image_size(path)
        except DataError as err:
            raise DataError(f"{key}: {err}") from None

    def augment(self, lq: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
        """Random flips/rotations, identical on LR and HR (training only)."""
        # The `random` module, not a private Random: PyTorch reseeds it per worker.
        lq, gt = random_flip_rotate([lq, gt], self.opt.use_hflip, self.opt.use_rot, random)
        return lq, gt

    def convert_color(self, image: Tensor) -> Tensor:
        return rgb_to_y(image) if self.opt.color == "y" else image
