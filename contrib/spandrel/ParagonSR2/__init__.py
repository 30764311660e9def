from __future__ import annotations

import math

from typing_extensions import override

from spandrel.util import KeyCondition, get_seq_len

from ...__helpers.model_descriptor import Architecture, ImageModelDescriptor, StateDict
from .__arch.paragonsr2 import (
    ALPHA_TAG,
    DEFAULT_UPSAMPLER_ALPHA,
    RGB_CHANNELS,
    ParagonSR2,
    alpha_from_tag,
)

# traiNNer-auto's size presets: (num_feat, num_groups, num_blocks, hidden, modulation).
_PRESETS: dict[tuple[int, int, int, int, bool], str] = {
    (12, 1, 1, 72, False): "nano",
    (16, 1, 2, 32, False): "micro",
    (24, 2, 2, 48, False): "tiny",
    (32, 2, 3, 64, False): "xs",
    (48, 3, 4, 96, False): "s",
    (64, 4, 6, 240, True): "m",
}


def _modulation_reduction(hidden: int, squeezed: int) -> int:
    # Several reductions can give the same squeeze width; they build the same network.
    for reduction in (4, *range(1, hidden + 1)):
        if max(hidden // reduction, 4) == squeezed:
            return reduction
    raise ValueError(
        f"No modulation_reduction squeezes {hidden} channels to {squeezed}"
    )


class ParagonSR2Arch(Architecture[ParagonSR2]):
    def __init__(self) -> None:
        super().__init__(
            id="ParagonSR2",
            detect=KeyCondition.has_all(
                "detail_gain",
                "conv_in.weight",
                "groups.0.blocks.0.layer_scale",
                "groups.0.blocks.0.expand.weight",
                "groups.0.blocks.0.depthwise.weight",
                "groups.0.blocks.0.project.weight",
                "groups.0.conv.weight",
                "conv_body.weight",
                "upsample.0.weight",
                "conv_out.weight",
            ),
        )

    @override
    def load(self, state_dict: StateDict) -> ImageModelDescriptor[ParagonSR2]:
        num_feat: int = state_dict["conv_in.weight"].shape[0]
        num_groups = get_seq_len(state_dict, "groups")
        num_blocks = get_seq_len(state_dict, "groups.0.blocks")
        hidden: int = state_dict["groups.0.blocks.0.expand.weight"].shape[0]
        # The ratio that builds `hidden` channels: round(num_feat * ratio) == hidden.
        ffn_expansion = hidden / num_feat
        scale = math.isqrt(state_dict["upsample.0.weight"].shape[0] // num_feat)

        reduce_key = "groups.0.blocks.0.modulation.reduce.weight"
        channel_modulation = reduce_key in state_dict
        modulation_reduction = 4
        if channel_modulation:
            modulation_reduction = _modulation_reduction(
                hidden, state_dict[reduce_key].shape[0]
            )

        # The base path's blend is in no weight; models with a non-default one carry it.
        upsampler_alpha = DEFAULT_UPSAMPLER_ALPHA
        if ALPHA_TAG in state_dict:
            upsampler_alpha = alpha_from_tag(state_dict[ALPHA_TAG])

        model = ParagonSR2(
            scale=scale,
            num_feat=num_feat,
            num_groups=num_groups,
            num_blocks=num_blocks,
            ffn_expansion=ffn_expansion,
            channel_modulation=channel_modulation,
            modulation_reduction=modulation_reduction,
            upsampler_alpha=upsampler_alpha,
        )

        preset = _PRESETS.get(
            (num_feat, num_groups, num_blocks, hidden, channel_modulation)
        )
        if preset == "m" and modulation_reduction != 4:
            preset = None
        tags = [f"{num_feat}nf", f"{num_groups}ng", f"{num_blocks}nb"]
        if preset is not None:
            tags.insert(0, preset)
        if upsampler_alpha != DEFAULT_UPSAMPLER_ALPHA:
            tags.append(f"alpha{upsampler_alpha:g}")

        return ImageModelDescriptor(
            model,
            state_dict,
            architecture=self,
            purpose="Restoration" if scale == 1 else "SR",
            tags=tags,
            supports_half=True,
            supports_bfloat16=True,
            scale=scale,
            input_channels=RGB_CHANNELS,
            output_channels=RGB_CHANNELS,
        )


__all__ = ["ParagonSR2Arch", "ParagonSR2"]
