"""ParagonSR2 for spandrel, so chaiNNer and any tool that opens models with it runs our weights.

    from traiNNer.archs.spandrel_support import register
    register()  # once per process; calling it again does nothing
    model = spandrel.ModelLoader().load_from_file("net_g_1000.safetensors")

`register()` adds `ParagonSR2Arch` to spandrel's `MAIN_REGISTRY` (or the registry it is
given); importing this module changes nothing. Both files `save_network` writes load: the
`.safetensors` and the `.pth` with its `{"params": ..., "metadata": ...}` wrapper (spandrel
unwraps `params` itself). The metadata is never read: chaiNNer users pass bare files.

Detection uses the state dict alone. The keys below occur together in no spandrel
architecture (`detail_gain` and `layer_scale` are ParagonSR2's own names), and the shapes
are checked too. Every hyperparameter comes from shapes and key counts:

* `num_feat`: `conv_in.weight` is `[num_feat, 3, 3, 3]`.
* `scale`: `upsample.0.weight` has `num_feat * scale**2` output channels.
* `num_groups`, `num_blocks`: how many `groups.<g>` and `groups.0.blocks.<b>` there are.
* `ffn_expansion`: `hidden / num_feat`, `hidden` being the out channels of `expand`; that
  is the ratio actually built (2.7 on 12 features builds 32 channels and reads back 32/12).
* `channel_modulation`: whether `modulation.reduce.weight` exists; `modulation_reduction`:
  the value giving its width (4 when 4 does; several values can give the same width, and
  any of them builds the same network).
* `upsampler_alpha` changes the output but no weight: a model built with another value
  than 0.5 carries the tag `upsampler_alpha` (`traiNNer.archs.paragonsr2.alpha_tag`); no
  tag means 0.5. Weights trained with another alpha before the tag existed read as 0.5.
* `layer_scale_init` and `detail_gain` only set initial values, which the weights replace;
  `export_safe` computes the same function, so the plain form is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from spandrel import (
    MAIN_REGISTRY,
    Architecture,
    ArchRegistry,
    ArchSupport,
    ImageModelDescriptor,
    StateDict,
)
from spandrel.util import KeyCondition, get_seq_len
from torch import Tensor

from traiNNer.archs.paragonsr2 import (
    ALPHA_TAG,
    DEFAULT_UPSAMPLER_ALPHA,
    RGB_CHANNELS,
    VARIANTS,
    ParagonSR2,
    alpha_from_tag,
)

ARCH_ID = "ParagonSR2"
DEFAULT_MODULATION_REDUCTION = 4
# The squeeze width never drops below this (ChannelModulation's max(..., 4)).
_MIN_SQUEEZED = 4

_FIRST_BLOCK = "groups.0.blocks.0"
_REQUIRED_KEYS = KeyCondition.has_all(
    "detail_gain",
    "conv_in.weight",
    f"{_FIRST_BLOCK}.layer_scale",
    f"{_FIRST_BLOCK}.expand.weight",
    f"{_FIRST_BLOCK}.depthwise.weight",
    f"{_FIRST_BLOCK}.project.weight",
    "groups.0.conv.weight",
    "conv_body.weight",
    "upsample.0.weight",
    "conv_out.weight",
)


def _shape(state_dict: Mapping[str, object], key: str) -> tuple[int, ...]:
    value = state_dict[key]
    # spandrel types state dicts as Mapping[str, object]; ours hold tensors.
    return tuple(value.shape) if isinstance(value, Tensor) else ()


def detect(state_dict: Mapping[str, object]) -> bool:
    """Whether `state_dict` is ParagonSR2's: its keys, and the shapes that tie them."""
    if not _REQUIRED_KEYS(state_dict):
        return False
    conv_in = _shape(state_dict, "conv_in.weight")
    if len(conv_in) != 4 or conv_in[1:] != (RGB_CHANNELS, 3, 3):
        return False
    num_feat = conv_in[0]
    upsample = _shape(state_dict, "upsample.0.weight")
    if len(upsample) != 4 or upsample[1] != num_feat or upsample[0] % num_feat:
        return False
    ratio = upsample[0] // num_feat
    return (
        _shape(state_dict, "detail_gain") == ()
        and isinstance(state_dict["detail_gain"], Tensor)
        and math.isqrt(ratio) ** 2 == ratio
        and _shape(state_dict, f"{_FIRST_BLOCK}.layer_scale") == (1, num_feat, 1, 1)
        and _shape(state_dict, "conv_out.weight") == (RGB_CHANNELS, num_feat, 3, 3)
    )


def _modulation_reduction(hidden: int, squeezed: int) -> int:
    """A reduction that ChannelModulation(hidden, reduction) squeezes to `squeezed`."""
    candidates = [DEFAULT_MODULATION_REDUCTION, *range(1, hidden + 1)]
    for reduction in candidates:
        if max(hidden // reduction, _MIN_SQUEEZED) == squeezed:
            return reduction
    raise ValueError(
        f"ParagonSR2: no modulation_reduction squeezes {hidden} channels to {squeezed}"
    )


def read_hyperparameters(state_dict: Mapping[str, object]) -> dict[str, Any]:
    """ParagonSR2's keyword arguments that rebuild the network of `state_dict`."""
    num_feat = _shape(state_dict, "conv_in.weight")[0]
    hidden = _shape(state_dict, f"{_FIRST_BLOCK}.expand.weight")[0]
    reduce_key = f"{_FIRST_BLOCK}.modulation.reduce.weight"
    channel_modulation = reduce_key in state_dict
    tag = state_dict.get(ALPHA_TAG)
    return {
        "scale": math.isqrt(_shape(state_dict, "upsample.0.weight")[0] // num_feat),
        "num_feat": num_feat,
        "num_groups": get_seq_len(state_dict, "groups"),
        "num_blocks": get_seq_len(state_dict, "groups.0.blocks"),
        # round(num_feat * hidden / num_feat) == hidden, so this builds `hidden` channels.
        "ffn_expansion": hidden / num_feat,
        "channel_modulation": channel_modulation,
        "modulation_reduction": (
            _modulation_reduction(hidden, _shape(state_dict, reduce_key)[0])
            if channel_modulation
            else DEFAULT_MODULATION_REDUCTION
        ),
        "upsampler_alpha": (
            alpha_from_tag(tag) if isinstance(tag, Tensor) else DEFAULT_UPSAMPLER_ALPHA
        ),
    }


def preset_name(hyperparameters: Mapping[str, Any]) -> str | None:
    """The size preset ('nano' ... 'm') these hyperparameters are, if any."""
    num_feat = hyperparameters["num_feat"]
    hidden = round(num_feat * hyperparameters["ffn_expansion"])
    for name, preset in VARIANTS.items():
        if name == "paragonsr2":  # the generic entry is xs under another name
            continue
        modulation_ok = (
            not preset.channel_modulation
            or hyperparameters["modulation_reduction"] == DEFAULT_MODULATION_REDUCTION
        )
        if (
            modulation_ok
            and (preset.num_feat, preset.num_groups, preset.num_blocks)
            == (
                num_feat,
                hyperparameters["num_groups"],
                hyperparameters["num_blocks"],
            )
            and round(preset.num_feat * preset.ffn_expansion) == hidden
            and preset.channel_modulation == hyperparameters["channel_modulation"]
        ):
            return name.removeprefix("paragonsr2_")
    return None


class ParagonSR2Arch(Architecture[ParagonSR2]):
    """spandrel's view of ParagonSR2: detection and loading from the state dict alone."""

    def __init__(self) -> None:
        super().__init__(id=ARCH_ID, name="ParagonSR2", detect=detect)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[ParagonSR2]:
        hyperparameters = read_hyperparameters(state_dict)
        model = ParagonSR2(**hyperparameters)
        scale = hyperparameters["scale"]
        preset = preset_name(hyperparameters)
        tags = [
            *([preset] if preset else []),
            f"{hyperparameters['num_feat']}nf",
            f"{hyperparameters['num_groups']}ng",
            f"{hyperparameters['num_blocks']}nb",
        ]
        if hyperparameters["upsampler_alpha"] != DEFAULT_UPSAMPLER_ALPHA:
            tags.append(f"alpha{hyperparameters['upsampler_alpha']:g}")
        return ImageModelDescriptor(
            model,
            state_dict,
            architecture=self,
            purpose="SR" if scale > 1 else "Restoration",
            tags=tags,
            # Runs under fp16/bf16 autocast and fully cast; the fixed taps are exact in both.
            supports_half=True,
            supports_bfloat16=True,
            scale=scale,
            input_channels=RGB_CHANNELS,
            output_channels=RGB_CHANNELS,
            # Edge replication works from 1x1 up, and convolutions take any size.
            size_requirements=None,
        )


def register(registry: ArchRegistry = MAIN_REGISTRY) -> ArchSupport:
    """Add ParagonSR2 to `registry` once and return its entry.

    If the registry already has a ParagonSR2 (an earlier call, or a spandrel release or
    plugin that ships one), that one stays and is returned: nothing is replaced.
    """
    existing = registry.get(ARCH_ID)
    if existing is not None:
        return existing
    # Appended, so spandrel's own architectures are tried first; none of them accepts
    # these weights, and ours accepts none of theirs (tests/test_spandrel_support.py).
    support = ArchSupport.from_architecture(ParagonSR2Arch())
    registry.add(support)
    return support


__all__ = ["ARCH_ID", "ParagonSR2Arch", "detect", "read_hyperparameters", "register"]
