"""Datasets, data loaders and image IO.

Importing this package registers the built-in datasets in DATASET_REGISTRY.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from traiNNer.config.schema import DatasetOptions
from traiNNer.data import (  # noqa: F401 - imported to register the datasets
    bicubic_image_dataset,
    paired_image_dataset,
    single_image_dataset,
)
from traiNNer.data.base_dataset import PairedSample, Phase, Sample
from traiNNer.utils.registry import DATASET_REGISTRY

__all__ = ["PairedSample", "Phase", "Sample", "build_dataset"]


def build_dataset(
    opt: DatasetOptions, scale: int, phase: Phase, *, key: str | None = None
) -> Dataset[Sample]:
    """Instantiate the dataset named by `opt.type`.

    `key` is the entry's name under `datasets:` (`train`, `val_1`, ...) and only
    serves error messages such as `datasets.val_1.type: unknown dataset ...`;
    it defaults to the phase.
    """
    prefix = f"datasets.{key or phase}"
    dataset_class = DATASET_REGISTRY.get(opt.type, path=f"{prefix}.type")
    # `key` only when given, so datasets with the plain (opt, scale, phase)
    # signature can be registered too.
    extra = {"key": key} if key is not None else {}
    return dataset_class(opt, scale, phase, **extra)
