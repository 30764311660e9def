"""Saving and loading weights (safetensors with arch metadata) and training states.

Nothing here unpickles arbitrary objects: training states are loaded with
`torch.load(weights_only=True)` and weights are safetensors (or a .pth loaded the
same restricted way).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from traiNNer.utils.atomic import write_atomic
from traiNNer.utils.errors import UserError

METADATA_FORMAT = "traiNNer-auto"


def network_metadata(arch_type: str, scale: int, arch_kwargs: dict[str, Any]) -> dict[str, str]:
    """Hyperparameters stored with the weights so loaders can rebuild the network."""
    return {
        "format": METADATA_FORMAT,
        "arch": arch_type.lower(),
        "scale": str(scale),
        "arch_kwargs": json.dumps(arch_kwargs, sort_keys=True),
    }


def save_network(
    state_dict: dict[str, torch.Tensor],
    path: str | Path,
    metadata: dict[str, str],
    fmt: str = "safetensors",
) -> Path:
    """Write weights atomically; returns the final path (suffix from `fmt`)."""
    path = Path(path).with_suffix(".safetensors" if fmt == "safetensors" else ".pth")
    # safetensors refuses shared storage; contiguous copies are what loaders expect anyway.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    if fmt == "safetensors":
        write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    else:
        write_atomic(path, lambda tmp: torch.save({"params": tensors, "metadata": metadata}, tmp))
    return path


def load_network(
    path: str | Path, param_key: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read weights and their metadata from .safetensors or a .pth/.pt state dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
            return load_file(str(path)), metadata
        except (SafetensorError, OSError) as err:
            raise UserError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{path}: not a readable weights file ({err})") from None
    metadata = data.get("metadata", {}) if isinstance(data, dict) else {}
    for key in (param_key, "params_ema", "params", "state_dict"):
        if key and isinstance(data, dict) and key in data and isinstance(data[key], dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError(f"{path}: no state dict found (param_key_g: {param_key})")
    return {k.removeprefix("module."): v for k, v in data.items()}, metadata


def save_training_state(state: dict[str, Any], path: str | Path) -> None:
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: training state not found") from None
    except Exception as err:
        raise UserError(f"{path}: cannot read training state ({err})") from None


_STATE_NAME = re.compile(r"^(\d+)\.state$")


def latest_training_state(states_dir: str | Path) -> Path | None:
    """The state with the highest iteration in `states_dir`, or None."""
    states_dir = Path(states_dir)
    if not states_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in states_dir.iterdir() if (m := _STATE_NAME.match(p.name))]
    return max(found)[1] if found else None


def prune_training_states(states_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` states (keep <= 0 keeps everything)."""
    if keep <= 0:
        return
    states = sorted(
        (int(m.group(1)), p) for p in Path(states_dir).iterdir() if (m := _STATE_NAME.match(p.name))
    )
    for _, path in states[:-keep]:
        path.unlink(missing_ok=True)
