"""Faults injected into one DDP rank of a `train.py` run (tests/test_ddp.py).

Python imports `sitecustomize` at start-up from the first folder on PYTHONPATH that has
one, so the test puts this folder there and describes the faults in TRAINNER_TEST_FAULTS:
`{"rank": 1, "oom_at": [5], "nan_at": [9]}` raises one out-of-memory error at iteration 5
and gives a NaN loss at iteration 9, on rank 1 only.
"""

from __future__ import annotations

import json
import os
from typing import Any

FAULTS = json.loads(os.environ.get("TRAINNER_TEST_FAULTS", "{}"))

if FAULTS and int(os.environ.get("RANK", "0")) == FAULTS["rank"]:
    import torch

    from traiNNer.models.sr_model import SRModel

    original = SRModel.compute_losses
    pending_oom = set(FAULTS.get("oom_at", []))

    def compute_losses(model: SRModel, chunk: Any, iteration: int) -> Any:
        if iteration in pending_oom:
            pending_oom.discard(iteration)
            raise torch.OutOfMemoryError("CUDA out of memory (injected on one rank)")
        total, losses = original(model, chunk, iteration)
        if iteration in FAULTS.get("nan_at", []):
            total = total * torch.nan
        return total, losses

    SRModel.compute_losses = compute_losses  # type: ignore[method-assign]
