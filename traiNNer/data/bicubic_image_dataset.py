"""HR images only; the LR is made on the fly by bicubic downscaling."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from traiNNer.config.schema import DatasetOptions
from traiNNer.data.base_dataset import ImageDataset, PairedSample, Phase
from traiNNer.data.folders import root_list, scan_images
from traiNNer.data.image_io import read_image
from traiNNer.data.resize import bicubic_downscale
from traiNNer.data.transforms import height_width, mod_crop, random_crop
from traiNNer.utils.errors import DataError
from traiNNer.utils.registry import DATASET_REGISTRY


class BicubicImageDataset(ImageDataset):
    """`dataroot_gt` folder(s) of HR images; `lq_path` repeats the HR path.

    Training crops the HR patch first and downscales only the patch: the cost
    no longer depends on the photo size, and the pair is still exact because
    the LR is computed from precisely that HR patch.
    """

    def __init__(
        self, opt: DatasetOptions, scale: int, phase: Phase, *, key: str | None = None
    ) -> None:
        super().__init__(opt, scale, phase, key=key)
        self.gt_key = f"{self.prefix}.dataroot_gt"
        self.paths: list[Path] = []
        for root in root_list(opt.dataroot_gt, self.gt_key, "bicubicimagedataset"):
            self.paths += scan_images(root, self.gt_key)
        self.lq_size = self.required_lq_size() if phase == "train" else None
        self.gt_size = self.lq_size * scale if self.lq_size is not None else scale
        for path in self.paths:
            self._check_size(path, self.header_size(path, self.gt_key))

    def _check_size(self, path: Path, hw: tuple[int, int]) -> None:
        if min(hw) < self.gt_size:
            what = "the HR crop size lq_size*scale" if self.lq_size is not None else "the scale"
            raise DataError(
                f"{self.prefix}: HR '{path}' is {hw[0]}x{hw[1]}, smaller than "
                f"{what} ({self.gt_size})"
            )

    def image_files(self) -> list[tuple[tuple[str, Path], ...]]:
        """Per item, its file with the option it comes from (see data/integrity.py)."""
        return [((self.gt_key, path),) for path in self.paths]

    def keep_items(self, indices: Sequence[int]) -> None:
        self.paths = [self.paths[i] for i in indices]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> PairedSample:
        path = self.paths[index]
        gt = read_image(path)
        self._check_size(path, height_width(gt))
        if self.lq_size is not None:
            gt = random_crop(gt, self.gt_size, random)
            lq = bicubic_downscale(gt, self.scale)
            lq, gt = self.augment(lq, gt)
        else:
            gt = mod_crop(gt, self.scale)
            lq = bicubic_downscale(gt, self.scale)
        return {
            "lq": self.convert_color(lq).contiguous(),
            "gt": self.convert_color(gt).contiguous(),
            "lq_path": str(path),
            "gt_path": str(path),
        }


# Registered with add() rather than the decorator so the name keeps its class
# type for type checkers (the decorator returns a plain Callable).
DATASET_REGISTRY.add("bicubicimagedataset", BicubicImageDataset)
