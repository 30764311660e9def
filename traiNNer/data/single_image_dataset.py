"""LR images only, for inference: items carry `lq` and `lq_path`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from traiNNer.config.schema import DatasetOptions
from traiNNer.data.base_dataset import ImageDataset, Phase, Sample
from traiNNer.data.folders import root_list, scan_images
from traiNNer.data.image_io import read_image
from traiNNer.utils.errors import ConfigError
from traiNNer.utils.registry import DATASET_REGISTRY


class SingleImageDataset(ImageDataset):
    """`dataroot_lq` folder(s); whole images, no cropping or augmentation."""

    def __init__(
        self, opt: DatasetOptions, scale: int, phase: Phase, *, key: str | None = None
    ) -> None:
        super().__init__(opt, scale, phase, key=key)
        if phase == "train":
            raise ConfigError(
                f"{self.prefix}.type: singleimagedataset has no HR images and cannot be "
                "used for training (accepted there: pairedimagedataset, bicubicimagedataset)"
            )
        self.lq_key = f"{self.prefix}.dataroot_lq"
        self.paths: list[Path] = []
        for root in root_list(opt.dataroot_lq, self.lq_key, "singleimagedataset"):
            self.paths += scan_images(root, self.lq_key)

    def image_files(self) -> list[tuple[tuple[str, Path], ...]]:
        """Per item, its file with the option it comes from (see data/integrity.py)."""
        return [((self.lq_key, path),) for path in self.paths]

    def keep_items(self, indices: Sequence[int]) -> None:
        self.paths = [self.paths[i] for i in indices]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        path = self.paths[index]
        return {"lq": self.convert_color(read_image(path)).contiguous(), "lq_path": str(path)}


# Registered with add() rather than the decorator so the name keeps its class
# type for type checkers (the decorator returns a plain Callable).
DATASET_REGISTRY.add("singleimagedataset", SingleImageDataset)
