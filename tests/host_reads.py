"""A guard for hot-path tests: any read of a tensor's value on the host fails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy", "__array__")


@contextmanager
def host_reads_forbidden() -> Iterator[None]:
    """Inside the block, reading a device value on the host raises AssertionError."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("device value read on the host")

    saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}
    try:
        for name in HOST_READS:
            setattr(torch.Tensor, name, refuse)
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)
