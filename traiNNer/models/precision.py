"""Autocast and gradient scaling for the configured precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from traiNNer.automations.base import Precision

AMP_DTYPES: dict[Precision, torch.dtype | None] = {
    "fp32": None,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def configured_precision(use_amp: bool, amp_bf16: bool) -> Precision:
    if not use_amp:
        return "fp32"
    return "bf16" if amp_bf16 else "fp16"


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision) -> Iterator[None]:
    dtype = AMP_DTYPES[precision]
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


def make_scaler(device: torch.device, precision: Precision) -> torch.amp.GradScaler:
    """A GradScaler only matters for fp16; bf16 and fp32 get a disabled one."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
