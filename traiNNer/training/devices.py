"""Choosing the device: CUDA when there is one (and `num_gpu` allows), else the CPU."""

from __future__ import annotations

import torch

from traiNNer.config.schema import Options
from traiNNer.utils.dist import DistInfo
from traiNNer.utils.errors import ConfigError


def select_device(opt: Options, dist: DistInfo) -> torch.device:
    wants_gpu = opt.num_gpu == "auto" or opt.num_gpu > 0
    if wants_gpu and torch.cuda.is_available():
        available = torch.cuda.device_count()
        if opt.num_gpu != "auto" and opt.num_gpu > available:
            raise ConfigError(f"num_gpu: {opt.num_gpu} requested but {available} available")
        return torch.device("cuda", dist.local_rank)
    if opt.num_gpu not in ("auto", 0):
        raise ConfigError(f"num_gpu: {opt.num_gpu} requested but CUDA is not available (use auto)")
    return torch.device("cpu")
