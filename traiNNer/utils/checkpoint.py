"""Saving and loading weights (safetensors with arch metadata) and training states.

Nothing here unpickles arbitrary objects: training states are loaded with
`torch.load(weights_only=True)` and weights are safetensors (or a .pth loaded the
same restricted way); a file that needs more is refused, never retried unsafely.
Every loading failure is one CheckpointError line naming the option and the file.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from traiNNer.utils.atomic import write_atomic
from traiNNer.utils.errors import CheckpointError, did_you_mean

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


# What a .pth holds its state dict under when path.param_key_g is not given, in the
# order traiNNer-redux (spandrel's canonicalize_state_dict) tries them.
UNWRAP_KEYS = (
    "model_state_dict",
    "state_dict",
    "params_ema",
    "params-ema",
    "params",
    "model",
    "net",
)
# Prefixes of wrapped networks (DDP, ESRGAN's netG) dropped when every key has one.
_COMMON_PREFIXES = ("module.", "netG.")
# What Trainer.load_checkpoint and SRModel.load_state_dict read without a default.
STATE_KEYS = (
    "iteration",
    "next_val_iter",
    "seed",
    "model",
    "automations",
    "batches",
    "best_metrics",
    "rng",
)
MODEL_STATE_KEYS = (
    "net_g",
    "net_g_ema",
    "optimizer_type",
    "optimizer",
    "schedule",
    "scaler",
    "nonfinite",
    "arch",
)
# torch's own refusal advises weights_only=False, which would run the file's code.
REFUSED = (
    "refused: it contains Python objects that are not plain tensors and numbers (it may "
    "run code when loaded); re-save it from trusted code as .safetensors"
)
_STATE_HINT = (
    "path.resume_state takes a training_states/<iteration>.state file (weights go in "
    "path.pretrain_network_g)"
)
# safetensors refuses headers above 100 MB; a larger length is not a safetensors file.
_MAX_SAFETENSORS_HEADER = 100_000_000
_KINDS = {
    "empty": "an empty file",
    "text": "a text file",
    "unknown": "neither safetensors nor a PyTorch file",
}


def _where(key: str, path: Path) -> str:
    return f"{key}: {path}" if key else str(path)


def _names(items: Sequence[str], limit: int = 3) -> str:
    """'a, b, c and 4 more': the first few of `items` for a one-line message."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _sniff(path: Path) -> str:
    """What the first bytes say the file is: safetensors, torch (zip or legacy
    pickle), empty, text or unknown, so a wrong file is named before any loader runs."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        return "empty"
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= _MAX_SAFETENSORS_HEADER:
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return "torch"
    if all(byte >= 32 or byte in (9, 10, 13) for byte in head):
        return "text"
    return "unknown"


def _first_sentence(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(". ")[0].removeprefix("Error while deserializing header: ")


def _torch_load(path: Path, where: str, damaged_hint: str = "") -> Any:
    """torch.load(weights_only=True) with its failures as one-line CheckpointErrors."""
    # A cut zip loses its directory at the end; torch then fails with a bare OSError.
    with open(path, "rb") as handle:
        is_zip = handle.read(4) == b"PK\x03\x04"
    if is_zip and not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{where} is truncated or damaged (the end of its zip archive is missing){damaged_hint}"
        )
    try:
        # torch warns about pickle protocols of files it then refuses: the error says it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if path.suffix != ".safetensors":  # by name: torch's errors are clearer then
                return torch.load(path, map_location="cpu", weights_only=True)
            # A file object: torch.load would read a path ending in .safetensors as one.
            with open(path, "rb") as handle:
                return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" in str(err).lower() or "WeightsUnpickler" in str(err):
            raise CheckpointError(f"{where}: {REFUSED}") from None
        raise CheckpointError(
            f"{where} is truncated or damaged ({_first_sentence(err)}){damaged_hint}"
        ) from None
    except Exception as err:  # zip, EOF and pickle errors of a cut or corrupted file
        raise CheckpointError(
            f"{where} is truncated or damaged ({_first_sentence(err)}){damaged_hint}"
        ) from None


def _is_training_state(data: dict[str, Any]) -> str | None:
    """'traiNNer-auto' / 'traiNNer-redux' when `data` is a training state, else None."""
    if "model" in data and "iteration" in data:
        return "traiNNer-auto"
    if "iter" in data and "optimizers" in data:
        return "traiNNer-redux"
    return None


def _all_tensors(data: dict[str, Any]) -> bool:
    return bool(data) and all(isinstance(v, torch.Tensor) for v in data.values())


def _strip_common_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _COMMON_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def load_network(
    path: str | Path, param_key: str | None = None, *, key: str = "path.pretrain_network_g"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read weights and their metadata from .safetensors or a .pth/.pt state dict.

    The format comes from the file's content, not its name. Every failure is one
    CheckpointError line naming `key` (the option that names the file) and the file.
    `param_key` picks the state dict inside a .pth that wraps it; a flat file has
    nothing to pick and loads as it is (as in traiNNer-redux).
    """
    path = Path(path)
    where = _where(key, path)
    if not path.is_file():
        raise CheckpointError(f"{where} {'is a folder' if path.is_dir() else 'does not exist'}")
    kind = _sniff(path)
    if kind == "safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
            return _strip_common_prefix(load_file(str(path))), metadata
        except (SafetensorError, OSError) as err:
            raise CheckpointError(
                f"{where} is truncated or damaged (safetensors: {_first_sentence(err)})"
            ) from None
    if kind != "torch":
        raise CheckpointError(f"{where} is not a weights file: it is {_KINDS[kind]}")
    data = _torch_load(path, where)
    if not isinstance(data, dict):
        raise CheckpointError(f"{where} holds a {type(data).__name__}, not a state dict")
    state = _state_dict_in(data, path, where, param_key)
    raw_metadata = data.get("metadata")
    metadata = (
        {str(k): str(v) for k, v in raw_metadata.items()} if isinstance(raw_metadata, dict) else {}
    )
    return _strip_common_prefix(state), metadata


def _state_dict_in(
    data: dict[str, Any], path: Path, where: str, param_key: str | None
) -> dict[str, torch.Tensor]:
    """The state dict a loaded .pth holds (under `param_key`, a known key, or flat)."""
    saved_by = _is_training_state(data)
    if saved_by == "traiNNer-auto":
        iteration = data.get("iteration", "<iteration>")
        weights = path.parent.parent / "models" / f"net_g_{iteration}.safetensors"
        raise CheckpointError(
            f"{where} is a training state (iteration {iteration}), not weights: resume it "
            f"with path.resume_state, or start from the weights saved with it ({weights})"
        )
    if saved_by == "traiNNer-redux":
        raise CheckpointError(
            f"{where} is a traiNNer-redux training state, which holds no weights: start from "
            f"the run's models/net_g_{data.get('iter', '<iteration>')}.safetensors"
        )
    keys = [str(k) for k in data]
    label = "the file"
    if param_key and param_key in data:
        chosen, label = data[param_key], f"'{param_key}'"
    elif param_key and not _all_tensors(data):
        raise CheckpointError(
            f"path.param_key_g: '{param_key}' is not in {path}; it holds {_names(keys, 8)}"
            f"{did_you_mean(param_key, keys)}"
        )
    elif param_key is None and (
        found := next((k for k in UNWRAP_KEYS if isinstance(data.get(k), dict)), None)
    ):
        chosen, label = data[found], f"'{found}'"
    elif len(data) == 1 and isinstance(next(iter(data.values())), dict):
        label = f"'{keys[0]}'"
        chosen = next(iter(data.values()))
    else:
        chosen = data
    if not isinstance(chosen, dict):
        raise CheckpointError(
            f"{where}: {label} holds a {type(chosen).__name__}, not a state dict "
            f"(the file holds {_names(keys, 8)}; path.param_key_g picks one)"
        )
    if not chosen:
        raise CheckpointError(f"{where}: {label} is an empty state dict")
    for name, value in chosen.items():
        if not isinstance(value, torch.Tensor):
            what = "the file" if label == "the file" else f"its {label}"
            raise CheckpointError(
                f"{where}: {what} is not a state dict of tensors ({name}: "
                f"{type(value).__name__}); the file holds {_names(keys, 8)}, and "
                "path.param_key_g picks the one with the weights"
            )
    return {str(k): v for k, v in chosen.items()}


def arch_text(arch: dict[str, Any], scale: object) -> str:
    """'compact(num_conv=2, num_feat=8) x2' from {'type': ..., **kwargs} and a scale."""
    kwargs = ", ".join(f"{k}={v!r}" for k, v in sorted(arch.items()) if k != "type")
    return f"{arch.get('type')}({kwargs}) x{scale}" if kwargs else f"{arch.get('type')} x{scale}"


def describe_metadata(metadata: dict[str, str]) -> str:
    """The network the metadata saved with the weights names, or '' when it has none."""
    if "arch" not in metadata:
        return ""
    try:
        kwargs = json.loads(metadata.get("arch_kwargs", "{}"))
    except json.JSONDecodeError:
        kwargs = {}
    arch = {**kwargs, "type": metadata["arch"]} if isinstance(kwargs, dict) else {}
    return arch_text(arch or {"type": metadata["arch"]}, metadata.get("scale", "?"))


def fit_state_dict(
    network: dict[str, torch.Tensor],
    loaded: dict[str, torch.Tensor],
    *,
    strict: bool,
    where: str,
    built: str,
    saved_by: str = "",
) -> tuple[dict[str, torch.Tensor], str | None]:
    """The tensors of `loaded` to give `load_state_dict` of a network whose state dict
    is `network` (`built` names it, e.g. 'compact x2'), and a warning line for what was
    left out, or None.

    strict: every name and shape must match, else one CheckpointError line lists the
    first few differences. Not strict (traiNNer-redux's strict_load_g: false): names
    only on one side are ignored and same-named tensors of another shape are skipped,
    with the warning listing them; nothing fitting at all is still an error, since
    the pretrain would then have no effect (redux meant to refuse it too).
    """
    shapes = [
        (k, list(loaded[k].shape), list(v.shape))
        for k, v in network.items()
        if k in loaded and loaded[k].shape != v.shape
    ]
    missing = [k for k in network if k not in loaded]
    unexpected = [k for k in loaded if k not in network]
    fitting = len(network) - len(missing) - len(shapes)
    shape_text = "; ".join(f"{k} is {a} in the file, {b} here" for k, a, b in shapes[:2])
    if len(shapes) > 2:
        shape_text += f" (and {len(shapes) - 2} more)"
    parts = [shape_text] if shapes else []
    if missing:
        parts.append(f"the file lacks {len(missing)} of its {len(network)} ({_names(missing)})")
    if unexpected:
        parts.append(f"the file has {len(unexpected)} it does not ({_names(unexpected)})")
    header = f"{where} does not fit {built}" + (f" (saved by {saved_by})" if saved_by else "")
    question = "is it another architecture, scale or size?"
    if strict and parts:
        # Worth suggesting when most of it fits (a changed head, an added block).
        enough = fitting >= len(network) / 2
        hint = f" (path.strict_load_g: false loads the {fitting} that fit)" if enough else ""
        raise CheckpointError(f"{header}: {'; '.join(parts)}; {question}{hint}")
    if fitting == 0:
        raise CheckpointError(f"{header}: none of its tensors fit ({'; '.join(parts)}); {question}")
    if not parts:
        return dict(loaded), None
    skipped = {k for k, _, _ in shapes}
    fitted = {k: v for k, v in loaded.items() if k in network and k not in skipped}
    notes = []
    if shapes:
        notes.append(f"skipped {len(shapes)} of another shape ({shape_text})")
    if missing:
        notes.append(
            f"{len(missing)} not in the file keep their initial values ({_names(missing)})"
        )
    if unexpected:
        notes.append(f"ignored {len(unexpected)} {built} does not have ({_names(unexpected)})")
    warning = (
        f"{where}: path.strict_load_g is false: loaded {fitting} of the {len(network)} "
        f"tensors of {built}; {'; '.join(notes)}"
    )
    return fitted, warning


def save_training_state(state: dict[str, Any], path: str | Path) -> None:
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path, key: str = "path.resume_state") -> dict[str, Any]:
    """A training state written by `save_training_state`, checked for what resuming
    reads; anything else (weights, a truncated or foreign file) is one CheckpointError
    line naming `key` (path.resume_state or --auto_resume) and the file."""
    path = Path(path)
    where = _where(key, path)
    if not path.is_file():
        raise CheckpointError(f"{where} {'is a folder' if path.is_dir() else 'does not exist'}")
    kind = _sniff(path)
    if kind == "safetensors":
        raise CheckpointError(f"{where} is a safetensors weights file; {_STATE_HINT}")
    if kind != "torch":
        raise CheckpointError(f"{where} is not a training state: it is {_KINDS[kind]}")
    # --auto_resume picks the newest state itself; the one before it may be intact.
    hint = "; delete it to resume from the state before it" if key == "--auto_resume" else ""
    state = _torch_load(path, where, hint)
    problem = _training_state_problem(state)
    if problem:
        raise CheckpointError(f"{where} {problem}")
    return state


def _training_state_problem(state: Any) -> str | None:
    if not isinstance(state, dict):
        return f"is not a training state: it holds a {type(state).__name__}"
    saved_by = _is_training_state(state)
    if saved_by == "traiNNer-redux":
        return (
            f"is a traiNNer-redux training state (iteration {state.get('iter')}), which "
            "traiNNer-auto cannot resume; start from the weights saved with it "
            "(models/net_g_<iteration>.safetensors) with path.pretrain_network_g"
        )
    # 'model' and 'net' are left out: a traiNNer-auto state has 'model' too.
    weights_keys = [k for k in UNWRAP_KEYS if k not in ("model", "net")]
    if saved_by is None and (_all_tensors(state) or any(k in state for k in weights_keys)):
        return f"is a weights file, not a training state; {_STATE_HINT}"
    lacking = [k for k in STATE_KEYS if k not in state]
    model = state.get("model")
    if isinstance(model, dict):
        lacking += [f"model.{k}" for k in MODEL_STATE_KEYS if k not in model]
    elif "model" not in lacking:
        lacking.append("model")
    if lacking:
        return f"is not a complete traiNNer-auto training state (it lacks {_names(lacking)})"
    return None


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
