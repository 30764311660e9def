"""Reading images into float tensors and writing them back as PNG.

Every image becomes a float32 CHW RGB tensor in [0, 1]:
- 8-bit files are divided by 255, 16-bit files by 65535 (precision is kept);
- grayscale is replicated to three channels;
- an alpha channel is dropped (not composited): super-resolution pairs are
  compared pixel by pixel, and compositing onto an arbitrary background would
  invent colours that neither file contains.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, encode_png

from traiNNer.utils.errors import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})

# Pillow modes holding 16-bit samples; everything else it can convert to RGB.
_PIL_16BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | Path) -> Tensor:
    """Read `path` as a float32 (3, H, W) RGB tensor in [0, 1]."""
    path = Path(path)
    decoded = _decode(path)
    _check_layout(decoded, path)
    return _to_rgb_float(decoded)


def verify_image(path: str | Path) -> tuple[int, int]:
    """Decode `path` in full as `read_image` would and return (height, width).

    Raises the DataError `read_image` would; skips the float conversion, which
    cannot fail, so a check over a whole dataset costs only the decoding.
    """
    path = Path(path)
    decoded = _decode(path)
    _check_layout(decoded, path)
    return decoded.shape[-2], decoded.shape[-1]


def _decode(path: Path) -> Tensor:
    """The file's samples as a uint8/uint16 (C, H, W) tensor, channels as stored."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read image '{path}': {err.strerror or err}") from None
    try:
        decoded = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED
        )
    except (RuntimeError, ValueError):
        # torchvision decodes PNG/JPEG/WebP/GIF; BMP and TIFF go through Pillow.
        decoded = _decode_with_pillow(path)
    return decoded


def _decode_with_pillow(path: Path) -> Tensor:
    try:
        with Image.open(path) as image:
            if image.mode in _PIL_16BIT_MODES:
                array = np.asarray(image).astype(np.int32).clip(0, 65535).astype(np.uint16)
                return torch.from_numpy(array)[None]
            if image.mode not in ("L", "LA", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot decode image '{path}': {err}") from None
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def _check_layout(decoded: Tensor, path: Path) -> None:
    channels = decoded.shape[0]
    if channels not in (1, 2, 3, 4):
        raise DataError(f"cannot decode image '{path}': unsupported {channels}-channel layout")
    if decoded.dtype not in (torch.uint8, torch.uint16):
        raise DataError(f"cannot decode image '{path}': unsupported sample type {decoded.dtype}")


def _to_rgb_float(decoded: Tensor) -> Tensor:
    """A decoded tensor that passed `_check_layout` as float RGB in [0, 1]."""
    channels = decoded.shape[0]
    if channels in (2, 4):  # gray+alpha or RGBA: drop alpha, see module docstring
        decoded = decoded[: channels - 1]
    if decoded.shape[0] == 1:
        decoded = decoded.expand(3, -1, -1)
    scale = 255.0 if decoded.dtype == torch.uint8 else 65535.0
    return decoded.to(torch.float32).div_(scale).contiguous()


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise DataError(f"cannot read image '{path}': file not found") from None
    except UnidentifiedImageError as err:
        raise DataError(f"cannot decode image '{path}': {err}") from None
    except OSError as err:  # permission denied, a folder, an I/O error: not the file's content
        what = "read" if err.errno is not None else "decode"
        raise DataError(f"cannot {what} image '{path}': {err.strerror or err}") from None
    return height, width


def to_uint8(image: Tensor) -> Tensor:
    """Float [0, 1] -> uint8 with rounding (not truncation) so a round trip is exact."""
    return image.detach().clamp(0, 1).mul(255).round().to(torch.uint8)


def write_image(image: Tensor, path: str | Path) -> None:
    """Write a float (C, H, W) or (1, C, H, W) tensor in [0, 1] as an 8-bit PNG.

    The file appears atomically: readers never see a half-written PNG, even if
    the process is killed while writing.
    """
    path = Path(path)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"write_image expects (C, H, W) with C in (1, 3), got {tuple(image.shape)}"
        )
    encoded = encode_png(to_uint8(image.cpu()))
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique hidden name in the same folder (so os.replace is a rename, and
    # dataset scans skip it); opened with "x" rather than mkstemp so the file
    # gets the usual umask permissions instead of owner-only.
    tmp_path = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp_path, "xb") as handle:
            handle.write(encoded.numpy().tobytes())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
