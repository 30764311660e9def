"""HR/LR pairs read from two folders, matched by file name."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from traiNNer.config.schema import DatasetOptions
from traiNNer.data.base_dataset import ImageDataset, PairedSample, Phase
from traiNNer.data.folders import check_filename_tmpl, pair_folders, root_list
from traiNNer.data.image_io import read_image
from traiNNer.data.transforms import height_width, paired_random_crop
from traiNNer.utils.errors import DataError
from traiNNer.utils.registry import DATASET_REGISTRY


class PairedImageDataset(ImageDataset):
    """`dataroot_gt` (HR) and `dataroot_lq` (LR) folders, or equally long lists.

    HR 'sub/0001.png' pairs with LR 'sub/<filename_tmpl with 0001>.*'. Each LR
    must be the HR size divided by `scale`, rounded down; an HR with a
    remainder is cropped at the bottom/right to match (as SR benchmarks do).
    Sizes are checked from file headers when the dataset is built, so mistakes
    surface before training starts.
    """

    def __init__(
        self, opt: DatasetOptions, scale: int, phase: Phase, *, key: str | None = None
    ) -> None:
        super().__init__(opt, scale, phase, key=key)
        gt_key, lq_key = f"{self.prefix}.dataroot_gt", f"{self.prefix}.dataroot_lq"
        gt_roots = root_list(opt.dataroot_gt, gt_key, "pairedimagedataset")
        lq_roots = root_list(opt.dataroot_lq, lq_key, "pairedimagedataset")
        if len(gt_roots) != len(lq_roots):
            raise DataError(
                f"{lq_key}: {len(lq_roots)} folder(s) given but dataroot_gt has "
                f"{len(gt_roots)}; give one LR folder per HR folder, in the same order"
            )
        check_filename_tmpl(opt.filename_tmpl, f"{self.prefix}.filename_tmpl")
        self.lq_size = self.required_lq_size() if phase == "train" else None
        self.pairs: list[tuple[Path, Path]] = []
        for gt_root, lq_root in zip(gt_roots, lq_roots, strict=True):
            self.pairs += pair_folders(gt_root, lq_root, opt.filename_tmpl, gt_key, lq_key)
        self.keys = (lq_key, gt_key)
        for lq_path, gt_path in self.pairs:
            lq_hw, gt_hw = self.header_size(lq_path, lq_key), self.header_size(gt_path, gt_key)
            self._check_sizes(lq_path, lq_hw, gt_path, gt_hw)

    def _check_sizes(
        self, lq_path: Path, lq_hw: tuple[int, int], gt_path: Path, gt_hw: tuple[int, int]
    ) -> None:
        expected = (gt_hw[0] // self.scale, gt_hw[1] // self.scale)
        if lq_hw != expected or 0 in expected:
            raise DataError(
                f"{self.prefix}: LR '{lq_path}' is {lq_hw[0]}x{lq_hw[1]} but HR '{gt_path}' "
                f"is {gt_hw[0]}x{gt_hw[1]}; with scale {self.scale} the LR must be "
                f"{expected[0]}x{expected[1]} (height x width)"
            )
        if self.lq_size is not None and min(lq_hw) < self.lq_size:
            raise DataError(
                f"{self.prefix}.lq_size: LR '{lq_path}' is {lq_hw[0]}x{lq_hw[1]}, "
                f"smaller than the crop size {self.lq_size}"
            )

    def image_files(self) -> list[tuple[tuple[str, Path], ...]]:
        """Per item, its files with the option each comes from (see data/integrity.py)."""
        lq_key, gt_key = self.keys
        return [((lq_key, lq), (gt_key, gt)) for lq, gt in self.pairs]

    def keep_items(self, indices: Sequence[int]) -> None:
        self.pairs = [self.pairs[i] for i in indices]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> PairedSample:
        lq_path, gt_path = self.pairs[index]
        lq, gt = read_image(lq_path), read_image(gt_path)
        # Re-checked on the pixels in case a file changed after the dataset was built.
        self._check_sizes(lq_path, height_width(lq), gt_path, height_width(gt))
        lq_h, lq_w = height_width(lq)
        gt = gt[..., : lq_h * self.scale, : lq_w * self.scale]
        if self.lq_size is not None:
            lq, gt = paired_random_crop(lq, gt, self.lq_size, self.scale, random)
            lq, gt = self.augment(lq, gt)
        return {
            "lq": self.convert_color(lq).contiguous(),
            "gt": self.convert_color(gt).contiguous(),
            "lq_path": str(lq_path),
            "gt_path": str(gt_path),
        }


# Registered with add() rather than the decorator so the name keeps its class
# type for type checkers (the decorator returns a plain Callable).
DATASET_REGISTRY.add("pairedimagedataset", PairedImageDataset)
