"""A tiny dataset built from the photographs scikit-image ships in its wheel.

Nothing is downloaded: every photo below is a file inside the scikit-image
package (checked to load offline). Layout under `root` (e.g. datasets/demo):

    train/hr/*.png          training photos, longest side at most 512 px
    val/hr/*.png            three 192x192 crops of photos kept out of training
    val/lr_x{scale}/*.png   their bicubic downscales (made per requested scale)
    demo.json               manifest; its presence marks a complete dataset

Everything is written into a temporary folder first and renamed into place,
so an interrupted run never leaves a half-built dataset behind.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from traiNNer.data.image_io import read_image, write_image
from traiNNer.data.resize import bicubic_downscale, quantize_8bit
from traiNNer.data.transforms import mod_crop
from traiNNer.utils.errors import DataError

MANIFEST = "demo.json"
MANIFEST_VERSION = 1
TRAIN_MAX_SIDE = 512  # keeps PNG decoding cheap in every training iteration
VAL_CROP = 192  # three crops at x2 validate in about a second on a CPU
MAX_SCALE = 8

TRAIN_PHOTOS = (
    "astronaut",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle_left",
)
# Held out of training entirely, so validation measures generalisation.
VAL_PHOTOS = ("chelsea", "coffee", "rocket")


@dataclass(frozen=True)
class DemoPaths:
    root: Path
    train_hr: Path
    val_hr: Path
    val_lr: Path
    scale: int


def _photo_loaders() -> dict[str, Callable[[], Any]]:
    try:
        from skimage import data
    except ImportError:
        raise DataError(
            "the demo dataset needs scikit-image: pip install 'traiNNer-auto[demo]'"
        ) from None
    return {
        "astronaut": data.astronaut,
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "hubble_deep_field": data.hubble_deep_field,
        "immunohistochemistry": data.immunohistochemistry,
        "retina": data.retina,
        "motorcycle_left": lambda: data.stereo_motorcycle()[0],
    }


def _load_photo(loaders: dict[str, Callable[[], Any]], name: str) -> Tensor:
    array = np.asarray(loaders[name]())
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise RuntimeError(f"skimage photo '{name}' is not 8-bit RGB: {array.dtype} {array.shape}")
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255)


def _limit_size(image: Tensor, max_side: int) -> Tensor:
    height, width = image.shape[-2:]
    factor = max_side / max(height, width)
    if factor >= 1:
        return image
    size = (round(height * factor), round(width * factor))
    small = F.interpolate(image[None], size=size, mode="bicubic", antialias=True)[0]
    return quantize_8bit(small)


def _center_crop(image: Tensor, size: int) -> Tensor:
    height, width = image.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size]


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        return None
    return manifest


def _is_complete(root: Path) -> bool:
    manifest = _read_manifest(root)
    if manifest is None:
        return False
    return all((root / "train" / "hr" / f).is_file() for f in manifest["train_hr"]) and all(
        (root / "val" / "hr" / f).is_file() for f in manifest["val_hr"]
    )


def _write_base(folder: Path) -> None:
    loaders = _photo_loaders()
    train_files, val_files = [], []
    for name in TRAIN_PHOTOS:
        image = _limit_size(_load_photo(loaders, name), TRAIN_MAX_SIDE)
        write_image(image, folder / "train" / "hr" / f"{name}.png")
        train_files.append(f"{name}.png")
    for name in VAL_PHOTOS:
        write_image(
            _center_crop(_load_photo(loaders, name), VAL_CROP),
            folder / "val" / "hr" / f"{name}.png",
        )
        val_files.append(f"{name}.png")
    manifest = {"version": MANIFEST_VERSION, "train_hr": train_files, "val_hr": val_files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _publish(tmp: Path, target: Path, is_done: Callable[[], bool]) -> None:
    """Rename `tmp` to `target`; a concurrent builder that won the race is fine."""
    try:
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_done():
            raise


def _build_in_temp(target: Path, fill: Callable[[Path], None], is_done: Callable[[], bool]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # mkdir (not mkdtemp, which is owner-only) so the published folder gets
    # the usual permissions; pid + random suffix keeps concurrent builders apart.
    tmp = target.parent / f".{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish(tmp, target, is_done)


def _write_lr(val_hr: Path, names: list[str], scale: int, folder: Path) -> None:
    for name in names:
        hr = mod_crop(read_image(val_hr / name), scale)
        write_image(bicubic_downscale(hr, scale), folder / name)


def ensure_demo_dataset(root: Path, scale: int = 2) -> DemoPaths:
    """Build the demo dataset under `root` unless it is already there.

    Idempotent and cheap when complete: existing files are left untouched and
    only a missing `val/lr_x{scale}` folder is added.
    """
    if not 1 <= scale <= MAX_SCALE:
        raise DataError(f"demo dataset scale must be between 1 and {MAX_SCALE}, got {scale}")
    root = Path(root)
    if not _is_complete(root):
        if root.exists() and any(root.iterdir()):
            raise DataError(
                f"'{root}' exists but is not a complete demo dataset "
                f"(no valid {MANIFEST}); delete it or choose another folder"
            )
        if root.exists():
            root.rmdir()  # empty: replaced by the finished folder
        _build_in_temp(root, _write_base, lambda: _is_complete(root))
    manifest = _read_manifest(root)
    assert manifest is not None
    names: list[str] = manifest["val_hr"]
    val_hr = root / "val" / "hr"
    val_lr = root / "val" / f"lr_x{scale}"

    def lr_done() -> bool:
        return all((val_lr / name).is_file() for name in names)

    if not lr_done():
        if val_lr.exists():
            raise DataError(
                f"'{val_lr}' is missing some of {', '.join(names)}; delete that folder "
                "so it is rebuilt"
            )
        _build_in_temp(val_lr, lambda tmp: _write_lr(val_hr, names, scale, tmp), lr_done)
    return DemoPaths(root, root / "train" / "hr", val_hr, val_lr, scale)
