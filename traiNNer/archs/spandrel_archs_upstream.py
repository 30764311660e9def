"""More of traiNNer-redux's architectures, built from spandrel's classes under its names.

The same scheme as `traiNNer.archs.spandrel_archs`: each factory returns spandrel's module
itself, so `spandrel.ModelLoader().load_from_state_dict(net.state_dict())` recognises
the weights as the same architecture and scale. Here the config keys are the keyword
arguments of traiNNer-redux's own factories for these names, and each row's defaults are
that factory's, so its option files build the same network. The few keys traiNNer-redux
accepts that spandrel's class cannot honour (or that break the round trip) are kept and
accept only the value that works, so such a file fails with a line naming the key.

A family's `supported_scales` are those some setting builds *and* spandrel reads back;
where the upsampler narrows them (SwinIR's `nearest+conv`, no upsampler at all), the
builder says so naming `network_g.upsampler`.

Arguments YAML cannot spell (a `norm_layer` class, RCAN's `conv` function) are not keys;
the modules use spandrel's default for them, as traiNNer-redux's option files do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from spandrel.architectures.ATD import ATD
from spandrel.architectures.CRAFT import CRAFT
from spandrel.architectures.DCTLSA import DCTLSA
from spandrel.architectures.DITN import DITN
from spandrel.architectures.DRCT import DRCT
from spandrel.architectures.FDAT import FDAT
from spandrel.architectures.GRL import GRL
from spandrel.architectures.HAT import HAT
from spandrel.architectures.MoESR import MoESR
from spandrel.architectures.RCAN import RCAN
from spandrel.architectures.RealCUGAN import UpCunet2x, UpCunet2x_fast, UpCunet3x, UpCunet4x
from spandrel.architectures.RGT import RGT
from spandrel.architectures.SeemoRe import SeemoRe
from spandrel.architectures.SPAN import SPAN
from spandrel.architectures.Swin2SR import Swin2SR
from spandrel.architectures.SwinIR import SwinIR

from traiNNer.archs.checkpointing import checkpoint_each
from traiNNer.archs.spandrel_archs import COMMON_SCALES, _check_positive, _without
from traiNNer.archs.variants import Family, Variant, register_variants
from traiNNer.utils.errors import ConfigError

REALCUGAN_SCALES: tuple[int, ...] = (2, 3, 4)

# Only "1conv" builds in spandrel's HAT, DRCT and CRAFT (their "3conv" branch is missing).
OneConv = Literal["1conv"]
Residual = Literal["1conv", "3conv"]
SwinIRUpsampler = Literal["pixelshuffle", "pixelshuffledirect", "nearest+conv", ""]
Swin2SRUpsampler = Literal[
    "pixelshuffle_hf", "pixelshuffle", "pixelshuffle_aux", "pixelshuffledirect", "nearest+conv", ""
]
GRLUpsampler = SwinIRUpsampler
GRLConv = Literal["1conv", "3conv", "1conv1x1", "linear"]
GRLQKVProjection = Literal["linear", "separable_conv"]
GRLAnchorProjection = Literal["avgpool", "maxpool", "conv2d", "separable_conv", "patchmerging"]
GRLOutProjection = Literal["linear", "conv2d"]
DITNLayerNorm = Literal["WithBias", "BiasFree"]
SeemoReLRSpace = Literal["linear", "exp", "double"]
RCANActivation = Literal["relu", "leaky_relu", "elu", "silu", "gelu", "none"]
FDATUpsampler = Literal[
    "conv",
    "pixelshuffledirect",
    "pixelshuffle",
    "nearest+conv",
    "dysample",
    "transpose+conv",
    "lda",
    "pa_up",
]
MoESRUpsampler = Literal["conv", "pixelshuffledirect", "pixelshuffle", "nearest+conv", "dysample"]

# Scales at which each upsampler builds and spandrel reads the scale back ("": none,
# the denoising / artefact-removal layout).
_UPSAMPLER_SCALES: dict[str, tuple[int, ...]] = {
    "pixelshuffle": COMMON_SCALES,
    "pixelshuffledirect": COMMON_SCALES,
    "pixelshuffle_aux": COMMON_SCALES,
    "nearest+conv": (4,),
    "": (1,),
}
# SwinIR's nearest+conv also has 2x and 8x layouts; GRL's pixelshuffle has no 1x one.
_SWINIR_UPSAMPLER_SCALES = {**_UPSAMPLER_SCALES, "nearest+conv": (2, 4, 8)}
_GRL_UPSAMPLER_SCALES = {**_UPSAMPLER_SCALES, "pixelshuffle": (2, 3, 4, 8)}

_SIX_BY = {n: (6,) * n for n in (4, 6, 8, 12, 14)}


# --------------------------------------------------------------- hyperparameters
# Field names follow traiNNer-redux's factories; defaults are its middle (or only)
# variant's, the other rows override them.


@dataclass(frozen=True, kw_only=True)
class SwinParams:
    """What HAT, SwinIR and Swin2SR share."""

    img_size: int = 64
    patch_size: int = 1
    in_chans: int = 3
    embed_dim: int = 180
    depths: tuple[int, ...] = _SIX_BY[6]
    num_heads: tuple[int, ...] = _SIX_BY[6]
    window_size: int = 8
    mlp_ratio: float = 2.0
    qkv_bias: bool = True


@dataclass(frozen=True, kw_only=True)
class HATParams(SwinParams):
    window_size: int = 16
    compress_ratio: int = 3
    squeeze_factor: int = 30
    conv_scale: float = 0.01
    overlap_ratio: float = 0.5
    qk_scale: float | None = None
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    ape: bool = False
    patch_norm: bool = True
    # traiNNer-redux's key; spandrel's HAT ignores it, traiNNer/archs/checkpointing.py does it.
    use_checkpoint: bool = False
    img_range: float = 1.0
    upsampler: Literal["pixelshuffle"] = "pixelshuffle"
    resi_connection: OneConv = "1conv"
    num_feat: int = 64


@dataclass(frozen=True, kw_only=True)
class SwinIRParams(SwinParams):
    img_size: int = 48
    qk_scale: float | None = None
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    ape: bool = False
    patch_norm: bool = True
    use_checkpoint: bool = False
    img_range: float = 1.0
    upsampler: SwinIRUpsampler = "pixelshuffle"
    resi_connection: Residual = "1conv"
    # traiNNer-redux's key; spandrel cannot read the weights back unless it is 1.
    start_unshuffle: int = 1


@dataclass(frozen=True, kw_only=True)
class Swin2SRParams(SwinParams):
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    ape: bool = False
    patch_norm: bool = True
    use_checkpoint: bool = False
    img_range: float = 1.0
    upsampler: Swin2SRUpsampler = "pixelshuffle"
    resi_connection: Residual = "1conv"


@dataclass(frozen=True, kw_only=True)
class DRCTParams:
    in_chans: int = 3
    img_size: int = 64
    window_size: int = 16
    img_range: float = 1.0
    depths: tuple[int, ...] = _SIX_BY[6]
    embed_dim: int = 180
    num_heads: tuple[int, ...] = _SIX_BY[6]
    mlp_ratio: float = 2.0
    upsampler: Literal["pixelshuffle"] = "pixelshuffle"
    resi_connection: OneConv = "1conv"
    # traiNNer-redux's key: spandrel's DRCT has no activation checkpointing.
    use_checkpoint: bool = False


@dataclass(frozen=True, kw_only=True)
class ATDParams:
    in_chans: int = 3
    img_size: int = 96
    embed_dim: int = 210
    depths: tuple[int, ...] = _SIX_BY[6]
    num_heads: tuple[int, ...] = _SIX_BY[6]
    window_size: int = 16
    category_size: int = 256
    num_tokens: int = 128
    reducted_dim: int = 20
    convffn_kernel_size: int = 5
    img_range: float = 1.0
    mlp_ratio: int = 2
    upsampler: SwinIRUpsampler = "pixelshuffle"
    resi_connection: Residual = "1conv"


@dataclass(frozen=True, kw_only=True)
class RGTParams:
    img_size: int = 64
    in_chans: int = 3
    embed_dim: int = 180
    depth: tuple[int, ...] = _SIX_BY[8]
    num_heads: tuple[int, ...] = _SIX_BY[8]
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    qk_scale: float | None = None
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    use_chk: bool = False
    img_range: float = 1.0
    resi_connection: Residual = "1conv"
    split_size: tuple[int, int] = (8, 32)
    c_ratio: float = 0.5


@dataclass(frozen=True, kw_only=True)
class GRLParams:
    img_size: int = 64
    in_channels: int = 3
    out_channels: int = 3
    embed_dim: int = 128
    img_range: float = 1.0
    upsampler: GRLUpsampler = "pixelshuffle"
    depths: tuple[int, ...] = (4, 4, 4, 4)
    num_heads_window: tuple[int, ...] = (2, 2, 2, 2)
    num_heads_stripe: tuple[int, ...] = (2, 2, 2, 2)
    window_size: int = 32
    stripe_size: tuple[int, int] = (64, 64)
    stripe_groups: tuple[int | None, int | None] = (None, None)
    stripe_shift: bool = True
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    qkv_proj_type: GRLQKVProjection = "linear"
    anchor_proj_type: GRLAnchorProjection = "avgpool"
    anchor_one_stage: bool = True
    anchor_window_down_factor: int = 4
    out_proj_type: GRLOutProjection = "linear"
    local_connection: bool = False
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    pretrained_window_size: tuple[int, int] = (0, 0)
    pretrained_stripe_size: tuple[int, int] = (0, 0)
    conv_type: GRLConv = "1conv"
    init_method: str = "n"
    # Needs the fairscale package, which is not a dependency here.
    fairscale_checkpoint: bool = False
    offload_to_cpu: bool = False
    euclidean_dist: bool = False


@dataclass(frozen=True, kw_only=True)
class CRAFTParams:
    window_size: int = 16
    embed_dim: int = 48
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (6, 6, 6, 6)
    split_size_0: int = 4
    split_size_1: int = 16
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    qk_scale: float | None = None
    img_range: float = 1.0
    resi_connection: OneConv = "1conv"


@dataclass(frozen=True, kw_only=True)
class RealCUGANParams:
    pro: bool = False
    fast: bool = False
    in_channels: int = 3
    out_channels: int = 3


@dataclass(frozen=True, kw_only=True)
class DCTLSAParams:
    in_nc: int = 3
    nf: int = 55
    # spandrel's DCTLSA always has six blocks; the key stays for traiNNer-redux's files.
    num_modules: int = 6
    out_nc: int = 3
    num_head: int = 5


@dataclass(frozen=True, kw_only=True)
class DITNParams:
    inp_channels: int = 3
    dim: int = 60
    ITL_blocks: int = 4
    SAL_blocks: int = 4
    UFONE_blocks: int = 1
    ffn_expansion_factor: int = 2
    bias: bool = False
    LayerNorm_type: DITNLayerNorm = "WithBias"
    patch_size: int = 8


@dataclass(frozen=True, kw_only=True)
class SeemoReParams:
    in_chans: int = 3
    num_experts: int = 3
    num_layers: int = 6
    embedding_dim: int = 36
    img_range: float = 1.0
    use_shuffle: bool = True
    global_kernel_size: int = 11
    recursive: int = 2
    lr_space: SeemoReLRSpace = "exp"
    topk: int = 1


@dataclass(frozen=True, kw_only=True)
class SPANSParams:
    num_in_ch: int = 3
    num_out_ch: int = 3
    feature_channels: int = 48
    # spandrel 0.4's SPAN always has six blocks.
    num_blocks: int = 6
    bias: bool = True
    norm: bool = False
    img_range: float = 255.0
    rgb_mean: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)


@dataclass(frozen=True, kw_only=True)
class RCANParams:
    n_resgroups: int = 10
    n_resblocks: int = 20
    n_feats: int = 64
    n_colors: int = 3
    rgb_range: int = 255
    norm: bool = False
    kernel_size: int = 3
    reduction: int = 16
    res_scale: float = 1.0
    act_mode: RCANActivation = "relu"
    unshuffle_mod: bool = False


@dataclass(frozen=True, kw_only=True)
class FDATParams:
    num_in_ch: int = 3
    num_out_ch: int = 3
    embed_dim: int = 120
    num_groups: int = 4
    depth_per_group: int = 3
    num_heads: int = 4
    window_size: int = 8
    ffn_expansion_ratio: float = 2.0
    aim_reduction_ratio: int = 8
    # None is spatial then channel attention, the only pattern spandrel reads back.
    group_block_pattern: tuple[str, ...] | None = None
    drop_path_rate: float = 0.1
    upsampler_type: FDATUpsampler = "transpose+conv"
    img_range: float = 1.0
    unshuffle_mod: bool = False


@dataclass(frozen=True, kw_only=True)
class MoESR2Params:
    in_ch: int = 3
    out_ch: int = 3
    dim: int = 64
    n_blocks: int = 9
    n_block: int = 4
    expansion_factor: float = 8 / 3
    expansion_msg: float = 1.5
    upsampler: MoESRUpsampler = "pixelshuffledirect"
    upsample_dim: int = 64


# ---------------------------------------------------------------------- checks


def _only(name: str, key: str, value: object, accepted: object, why: str) -> None:
    """A traiNNer-redux key that works here with one value only."""
    if value != accepted:
        raise ConfigError(f"network_g.{key}: only {accepted!r} is supported for {name} ({why})")


def _check_odd(name: str, key: str, value: int) -> None:
    if value < 1 or value % 2 != 1:
        raise ConfigError(f"network_g.{key}: must be odd for {name}, got {value}")


def _check_groups(
    name: str,
    depths: tuple[int, ...],
    heads: dict[str, tuple[int, ...]],
    channels: int,
    depths_key: str = "depths",
    channels_key: str = "embed_dim",
) -> None:
    """One head count per residual group, each dividing the attention `channels`."""
    if not depths or any(d < 1 for d in depths):
        raise ConfigError(
            f"network_g.{depths_key}: needs at least one group of at least one block for "
            f"{name}, got {list(depths)}"
        )
    for key, counts in heads.items():
        if len(counts) != len(depths):
            raise ConfigError(
                f"network_g.{key}: needs one entry per residual group in {depths_key} for "
                f"{name} ({depths_key} has {len(depths)}, {key} has {len(counts)})"
            )
        if any(h < 1 or channels % h != 0 for h in counts):
            raise ConfigError(
                f"network_g.{key}: every entry must divide {channels_key} ({channels}) for "
                f"{name}, got {list(counts)}"
            )


def _check_upsampler(
    name: str, scale: int, upsampler: str, scales: dict[str, tuple[int, ...]]
) -> None:
    accepted = scales[upsampler]
    if scale not in accepted:
        label = repr(upsampler) if upsampler else "'' (no upsampler)"
        raise ConfigError(
            f"network_g.upsampler: {label} builds {name} at scale "
            f"{', '.join(map(str, accepted))} only, not {scale}"
        )


def _check_swin(name: str, p: SwinParams) -> None:
    _check_positive(
        name,
        img_size=p.img_size,
        patch_size=p.patch_size,
        embed_dim=p.embed_dim,
        window_size=p.window_size,
        mlp_ratio=p.mlp_ratio,
    )
    _check_groups(name, p.depths, {"num_heads": p.num_heads}, p.embed_dim)


def _lists(*keys: str, p: object) -> dict[str, Any]:
    """The sequence hyperparameters as the lists spandrel's classes are written for."""
    return {key: list(getattr(p, key)) for key in keys}


# ---------------------------------------------------------------------- builders


def build_hat(name: str, scale: int, p: HATParams) -> HAT:
    _check_swin(name, p)
    _check_positive(
        name,
        num_feat=p.num_feat,
        compress_ratio=p.compress_ratio,
        squeeze_factor=p.squeeze_factor,
        overlap_ratio=p.overlap_ratio,
    )
    # The channel-attention block squeezes embed_dim by both ratios.
    for key in ("compress_ratio", "squeeze_factor"):
        if p.embed_dim < getattr(p, key):
            raise ConfigError(
                f"network_g.{key}: must not exceed embed_dim ({p.embed_dim}) for {name}, "
                f"got {getattr(p, key)}"
            )
    sequences = _lists("depths", "num_heads", p=p)
    model = HAT(upscale=scale, **sequences, **_without(p, *sequences, "use_checkpoint"))
    if p.use_checkpoint:  # spandrel's HAT takes the key but never checkpoints
        checkpoint_each(model.layers)
    return model


def build_swinir(name: str, scale: int, p: SwinIRParams) -> SwinIR:
    _check_swin(name, p)
    _check_upsampler(name, scale, p.upsampler, _SWINIR_UPSAMPLER_SCALES)
    _only(name, "start_unshuffle", p.start_unshuffle, 1, "spandrel reads other values back wrong")
    sequences = _lists("depths", "num_heads", p=p)
    return SwinIR(upscale=scale, **sequences, **_without(p, *sequences))


def build_swin2sr(name: str, scale: int, p: Swin2SRParams) -> Swin2SR:
    _check_swin(name, p)
    if p.upsampler == "pixelshuffle_hf":
        raise ConfigError(
            f"network_g.upsampler: 'pixelshuffle_hf' is not supported for {name} "
            "(its forward returns three images, training needs one)"
        )
    _check_upsampler(name, scale, p.upsampler, _UPSAMPLER_SCALES)
    sequences = _lists("depths", "num_heads", p=p)
    return Swin2SR(upscale=scale, **sequences, **_without(p, *sequences))


def build_drct(name: str, scale: int, p: DRCTParams) -> DRCT:
    _check_positive(
        name,
        img_size=p.img_size,
        embed_dim=p.embed_dim,
        window_size=p.window_size,
        mlp_ratio=p.mlp_ratio,
    )
    _check_groups(name, p.depths, {"num_heads": p.num_heads}, p.embed_dim)
    sequences = _lists("depths", "num_heads", p=p)
    model = DRCT(upscale=scale, **sequences, **_without(p, *sequences, "use_checkpoint"))
    if p.use_checkpoint:  # spandrel's DRCT has no checkpointing of its own
        checkpoint_each(model.layers)
    return model


def build_atd(name: str, scale: int, p: ATDParams) -> ATD:
    _check_positive(
        name,
        img_size=p.img_size,
        embed_dim=p.embed_dim,
        window_size=p.window_size,
        category_size=p.category_size,
        num_tokens=p.num_tokens,
        reducted_dim=p.reducted_dim,
        mlp_ratio=p.mlp_ratio,
    )
    _check_groups(name, p.depths, {"num_heads": p.num_heads}, p.embed_dim)
    if p.depths[0] < 2:
        # spandrel recognises ATD by the first group's non-final layer.
        raise ConfigError(
            f"network_g.depths: the first group needs at least 2 layers for {name} "
            f"(spandrel cannot recognise the weights otherwise), got {list(p.depths)}"
        )
    _check_odd(name, "convffn_kernel_size", p.convffn_kernel_size)
    _check_upsampler(name, scale, p.upsampler, _UPSAMPLER_SCALES)
    sequences = _lists("depths", "num_heads", p=p)
    return ATD(upscale=scale, **sequences, **_without(p, *sequences))


def build_rgt(name: str, scale: int, p: RGTParams) -> RGT:
    _check_positive(
        name,
        img_size=p.img_size,
        embed_dim=p.embed_dim,
        mlp_ratio=p.mlp_ratio,
        c_ratio=p.c_ratio,
    )
    _check_groups(name, p.depth, {"num_heads": p.num_heads}, p.embed_dim, depths_key="depth")
    if min(p.split_size) < 1:
        raise ConfigError(
            f"network_g.split_size: both sides must be positive for {name}, "
            f"got {list(p.split_size)}"
        )
    sequences = _lists("depth", "num_heads", "split_size", p=p)
    return RGT(upscale=scale, **sequences, **_without(p, *sequences))


def build_grl(name: str, scale: int, p: GRLParams) -> GRL:
    _check_positive(
        name,
        img_size=p.img_size,
        embed_dim=p.embed_dim,
        window_size=p.window_size,
        mlp_ratio=p.mlp_ratio,
        anchor_window_down_factor=p.anchor_window_down_factor,
    )
    if p.embed_dim % 2 != 0:
        raise ConfigError(f"network_g.embed_dim: must be even for {name}, got {p.embed_dim}")
    # Window and stripe attention each get half the channels.
    heads = {"num_heads_window": p.num_heads_window, "num_heads_stripe": p.num_heads_stripe}
    _check_groups(name, p.depths, heads, p.embed_dim // 2, channels_key="embed_dim / 2")
    if min(p.stripe_size) < 1:
        raise ConfigError(
            f"network_g.stripe_size: both sides must be positive for {name}, "
            f"got {list(p.stripe_size)}"
        )
    if p.local_connection and p.embed_dim < 18:
        # Its channel attention squeezes embed_dim 18 times.
        raise ConfigError(
            f"network_g.embed_dim: must be at least 18 with local_connection for {name}, "
            f"got {p.embed_dim}"
        )
    _only(name, "fairscale_checkpoint", p.fairscale_checkpoint, False, "fairscale is not installed")
    _check_upsampler(name, scale, p.upsampler, _GRL_UPSAMPLER_SCALES)
    sequences = _lists(
        "depths",
        "num_heads_window",
        "num_heads_stripe",
        "stripe_size",
        "stripe_groups",
        "pretrained_window_size",
        "pretrained_stripe_size",
        p=p,
    )
    return GRL(upscale=scale, **sequences, **_without(p, *sequences))


def build_craft(name: str, scale: int, p: CRAFTParams) -> CRAFT:
    _check_positive(
        name,
        window_size=p.window_size,
        embed_dim=p.embed_dim,
        split_size_0=p.split_size_0,
        split_size_1=p.split_size_1,
        mlp_ratio=p.mlp_ratio,
    )
    _check_groups(name, p.depths, {"num_heads": p.num_heads}, p.embed_dim)
    sequences = _lists("depths", "num_heads", p=p)
    return CRAFT(upscale=scale, **sequences, **_without(p, *sequences))


def build_realcugan(
    name: str, scale: int, p: RealCUGANParams
) -> UpCunet2x | UpCunet2x_fast | UpCunet3x | UpCunet4x:
    _check_positive(name, in_channels=p.in_channels, out_channels=p.out_channels)
    channels = {"in_channels": p.in_channels, "out_channels": p.out_channels}
    if p.fast:
        if scale != 2:
            raise ConfigError(f"network_g.fast: {name} has a fast variant at scale 2 only")
        if p.pro:
            raise ConfigError(f"network_g.pro: {name} has no pro variant of the fast one")
        return UpCunet2x_fast(**channels)
    up = {2: UpCunet2x, 3: UpCunet3x, 4: UpCunet4x}[scale]
    return up(pro=p.pro, **channels)


def build_dctlsa(name: str, scale: int, p: DCTLSAParams) -> DCTLSA:
    _check_positive(name, in_nc=p.in_nc, out_nc=p.out_nc, nf=p.nf, num_head=p.num_head)
    _only(name, "num_modules", p.num_modules, 6, "spandrel's DCTLSA has six blocks")
    if p.nf % p.num_head != 0:
        raise ConfigError(
            f"network_g.num_head: must divide nf ({p.nf}) for {name}, got {p.num_head}"
        )
    return DCTLSA(upscale=scale, **asdict(p))


def build_ditn(name: str, scale: int, p: DITNParams) -> DITN:
    _check_positive(
        name,
        dim=p.dim,
        ITL_blocks=p.ITL_blocks,
        SAL_blocks=p.SAL_blocks,
        UFONE_blocks=p.UFONE_blocks,
        ffn_expansion_factor=p.ffn_expansion_factor,
        patch_size=p.patch_size,
    )
    return DITN(upscale=scale, **asdict(p))


def build_seemore(name: str, scale: int, p: SeemoReParams) -> SeemoRe:
    _check_positive(
        name,
        num_experts=p.num_experts,
        num_layers=p.num_layers,
        embedding_dim=p.embedding_dim,
        recursive=p.recursive,
        topk=p.topk,
    )
    _check_odd(name, "global_kernel_size", p.global_kernel_size)
    if p.topk > p.num_experts:
        raise ConfigError(
            f"network_g.topk: must not exceed num_experts ({p.num_experts}) for {name}, "
            f"got {p.topk}"
        )
    return SeemoRe(scale=scale, **asdict(p))


def build_span_s(name: str, scale: int, p: SPANSParams) -> SPAN:
    _check_positive(name, feature_channels=p.feature_channels)
    _only(name, "num_blocks", p.num_blocks, 6, "spandrel's SPAN has six blocks")
    return SPAN(upscale=scale, **_without(p, "num_blocks"))


def build_rcan(name: str, scale: int, p: RCANParams) -> RCAN:
    _check_positive(
        name,
        n_resgroups=p.n_resgroups,
        n_resblocks=p.n_resblocks,
        n_feats=p.n_feats,
        reduction=p.reduction,
    )
    _check_odd(name, "kernel_size", p.kernel_size)
    if p.n_feats < p.reduction:
        raise ConfigError(
            f"network_g.reduction: must not exceed n_feats ({p.n_feats}) for {name}, "
            f"got {p.reduction}"
        )
    # With norm, spandrel's forward multiplies the caller's tensor in place by rgb_range
    # and its "fixed" mean-shift convs train.
    _only(name, "norm", p.norm, False, "spandrel's RCAN then rescales its input in place")
    if scale == 1 and not p.unshuffle_mod:
        raise ConfigError(f"network_g.unshuffle_mod: {name} builds scale 1 only with it on")
    return RCAN(scale=scale, **asdict(p))


def build_fdat(name: str, scale: int, p: FDATParams) -> FDAT:
    _check_positive(
        name,
        embed_dim=p.embed_dim,
        num_groups=p.num_groups,
        depth_per_group=p.depth_per_group,
        window_size=p.window_size,
        ffn_expansion_ratio=p.ffn_expansion_ratio,
        aim_reduction_ratio=p.aim_reduction_ratio,
    )
    if p.num_heads < 1 or p.embed_dim % p.num_heads:
        raise ConfigError(
            f"network_g.num_heads: must divide embed_dim ({p.embed_dim}) for {name}, "
            f"got {p.num_heads}"
        )
    if p.group_block_pattern not in (None, ("spatial", "channel")):
        _only(
            name,
            "group_block_pattern",
            list(p.group_block_pattern),
            ["spatial", "channel"],
            "spandrel reads FDAT's weights back with that pattern only",
        )
    # "conv" has no upsampling layer; transpose+conv's layout stops at 4x.
    upsampler_scales = {"conv": (1,), "transpose+conv": (1, 2, 3, 4)}
    accepted = upsampler_scales.get(p.upsampler_type, COMMON_SCALES)
    if scale not in accepted:
        raise ConfigError(
            f"network_g.upsampler_type: {p.upsampler_type!r} builds {name} at scale "
            f"{', '.join(map(str, accepted))} only, not {scale}"
        )
    if p.upsampler_type == "dysample" and not torch.cuda.is_available():
        raise ConfigError(
            f"network_g.upsampler_type: 'dysample' runs on CUDA only in spandrel's {name}; "
            "pick another upsampler on this machine"
        )
    return FDAT(
        scale=scale,
        **_without(p, "group_block_pattern"),
        group_block_pattern=["spatial", "channel"],
    )


def build_moesr2(name: str, scale: int, p: MoESR2Params) -> MoESR:
    _check_positive(
        name,
        dim=p.dim,
        n_blocks=p.n_blocks,
        n_block=p.n_block,
        expansion_factor=p.expansion_factor,
        expansion_msg=p.expansion_msg,
        upsample_dim=p.upsample_dim,
    )
    if p.upsampler == "conv" and scale != 1:
        raise ConfigError(f"network_g.upsampler: 'conv' builds {name} at scale 1 only, not {scale}")
    return MoESR(scale=scale, **asdict(p))


# ---------------------------------------------------------------------- families

HAT_FAMILY = Family(HATParams, build_hat, COMMON_SCALES)
SWINIR_FAMILY = Family(SwinIRParams, build_swinir, COMMON_SCALES)
SWIN2SR_FAMILY = Family(Swin2SRParams, build_swin2sr, COMMON_SCALES)
DRCT_FAMILY = Family(DRCTParams, build_drct, COMMON_SCALES)
ATD_FAMILY = Family(ATDParams, build_atd, COMMON_SCALES)
RGT_FAMILY = Family(RGTParams, build_rgt, COMMON_SCALES)
GRL_FAMILY = Family(GRLParams, build_grl, COMMON_SCALES)
CRAFT_FAMILY = Family(CRAFTParams, build_craft, COMMON_SCALES)
REALCUGAN_FAMILY = Family(RealCUGANParams, build_realcugan, REALCUGAN_SCALES)
DCTLSA_FAMILY = Family(DCTLSAParams, build_dctlsa, COMMON_SCALES)
DITN_FAMILY = Family(DITNParams, build_ditn, COMMON_SCALES)
SEEMORE_FAMILY = Family(SeemoReParams, build_seemore, COMMON_SCALES)
SPAN_S_FAMILY = Family(SPANSParams, build_span_s, COMMON_SCALES)
RCAN_FAMILY = Family(RCANParams, build_rcan, COMMON_SCALES)
FDAT_FAMILY = Family(FDATParams, build_fdat, COMMON_SCALES)
MOESR2_FAMILY = Family(MoESR2Params, build_moesr2, COMMON_SCALES)

# --------------------------------------------------------------------- variants

_SWIN_S = {"embed_dim": 60, "depths": _SIX_BY[4], "num_heads": _SIX_BY[4]}
_SWIN_L = {
    "embed_dim": 240,
    "depths": (6,) * 9,
    "num_heads": (8,) * 9,
    "upsampler": "nearest+conv",
    "resi_connection": "3conv",
}
_WINDOWS = "input sides a multiple of window_size."

VARIANTS: dict[str, Variant] = {
    "hat_s": Variant(
        HAT_FAMILY,
        "HAT-S (hybrid attention transformer): 144 features, compress and squeeze ratio 24.",
        {"embed_dim": 144, "compress_ratio": 24, "squeeze_factor": 24},
    ),
    "hat_m": Variant(HAT_FAMILY, "HAT (hybrid attention transformer): 6 groups of 6 blocks."),
    "hat_l": Variant(
        HAT_FAMILY,
        "HAT-L: 12 groups of 6 blocks.",
        {"depths": _SIX_BY[12], "num_heads": _SIX_BY[12]},
    ),
    "swinir_s": Variant(
        SWINIR_FAMILY,
        "SwinIR, lightweight: 60 features, 4 groups, direct pixel-shuffle upsampler.",
        {**_SWIN_S, "img_size": 64, "upsampler": "pixelshuffledirect"},
    ),
    "swinir_m": Variant(SWINIR_FAMILY, "SwinIR (classical): 180 features, 6 groups of 6 blocks."),
    "swinir_l": Variant(
        SWINIR_FAMILY,
        "SwinIR, real-world large: 240 features, 9 groups, nearest+conv upsampler (2x, 4x, 8x).",
        {**_SWIN_L, "img_size": 64},
    ),
    "swin2sr_s": Variant(
        SWIN2SR_FAMILY,
        "Swin2SR, lightweight: 60 features, 4 groups, direct pixel-shuffle upsampler.",
        {**_SWIN_S, "upsampler": "pixelshuffledirect"},
    ),
    "swin2sr_m": Variant(SWIN2SR_FAMILY, "Swin2SR: 180 features, 6 groups of 6 blocks."),
    "swin2sr_l": Variant(
        SWIN2SR_FAMILY,
        "Swin2SR, real-world large: 240 features, 9 groups, nearest+conv upsampler (4x).",
        _SWIN_L,
    ),
    # spandrel's DRCT does not pad its input (traiNNer-redux's does).
    "drct": Variant(
        DRCT_FAMILY,
        "DRCT (dense-residual connected transformer): 6 groups; " + _WINDOWS,
    ),
    "drct_l": Variant(
        DRCT_FAMILY,
        "DRCT-L: 12 groups; " + _WINDOWS,
        {"depths": _SIX_BY[12], "num_heads": _SIX_BY[12]},
    ),
    "drct_xl": Variant(
        DRCT_FAMILY,
        "DRCT-XL: 14 groups; " + _WINDOWS,
        {"depths": _SIX_BY[14], "num_heads": _SIX_BY[14]},
    ),
    "atd": Variant(ATD_FAMILY, "ATD (adaptive token dictionary transformer)."),
    "rgt": Variant(RGT_FAMILY, "RGT (recursive-generalization transformer): 8 groups."),
    "rgt_s": Variant(
        RGT_FAMILY, "RGT-S: 6 groups.", {"depth": _SIX_BY[6], "num_heads": _SIX_BY[6]}
    ),
    "grl_b": Variant(
        GRL_FAMILY,
        "GRL-B (global, regional and local attention): 180 features, 7 stages.",
        {
            "embed_dim": 180,
            "depths": (4, 4, 8, 8, 8, 4, 4),
            "num_heads_window": (3,) * 7,
            "num_heads_stripe": (3,) * 7,
            "local_connection": True,
        },
    ),
    "grl_s": Variant(GRL_FAMILY, "GRL-S: 128 features, 4 stages."),
    "grl_t": Variant(
        GRL_FAMILY,
        "GRL-T: 64 features, 4 stages, direct pixel-shuffle upsampler.",
        {"embed_dim": 64, "upsampler": "pixelshuffledirect"},
    ),
    "craft": Variant(CRAFT_FAMILY, "CRAFT (cross-refinement adaptive feature transformer)."),
    "realcugan": Variant(
        REALCUGAN_FAMILY,
        "Real-CUGAN (UpCunet) at 2x, 3x or 4x; inputs of at least 20 px (40 px with fast).",
    ),
    "dctlsa": Variant(DCTLSA_FAMILY, "DCTLSA (dual-branch local/self attention network)."),
    "ditn_real": Variant(
        DITN_FAMILY, "DITN-Real (deployment-friendly inception transformer network)."
    ),
    "seemore_t": Variant(SEEMORE_FAMILY, "SeemoRe-T (mixture of low-rank experts), tiny."),
    "span_s": Variant(
        SPAN_S_FAMILY,
        "SPAN-S: 48 features, no input normalisation.",
        notes={"norm": "False, as in traiNNer-redux (spandrel: True)"},
    ),
    "rcan": Variant(
        RCAN_FAMILY,
        "RCAN (residual channel attention network): 10 groups of 20 blocks.",
        notes={"norm": "False, as in traiNNer-redux; True is not supported here"},
    ),
    "rcan_unshuffle": Variant(
        RCAN_FAMILY,
        "RCAN with a pixel-unshuffled input at scales 1 and 2 (faster, lighter).",
        {"unshuffle_mod": True},
        notes={"norm": "False, as in traiNNer-redux; True is not supported here"},
    ),
    "fdat_tiny": Variant(
        FDAT_FAMILY,
        "FDAT-tiny (fast dual aggregation transformer): 96 features, 2 groups of 2.",
        {
            "embed_dim": 96,
            "num_groups": 2,
            "depth_per_group": 2,
            "num_heads": 3,
            "ffn_expansion_ratio": 1.5,
            "drop_path_rate": 0.05,
        },
    ),
    "fdat_light": Variant(
        FDAT_FAMILY,
        "FDAT-light: 108 features, 3 groups of 2.",
        {"embed_dim": 108, "num_groups": 3, "depth_per_group": 2, "drop_path_rate": 0.08},
    ),
    "fdat_medium": Variant(FDAT_FAMILY, "FDAT-medium: 120 features, 4 groups of 3."),
    "fdat_medium_aligned": Variant(
        FDAT_FAMILY, "FDAT-medium with 128 features (aligned for tensor cores).", {"embed_dim": 128}
    ),
    "fdat_large": Variant(
        FDAT_FAMILY,
        "FDAT-large: 180 features, 4 groups of 4, 6 heads.",
        {"embed_dim": 180, "depth_per_group": 4, "num_heads": 6},
    ),
    "fdat_xl": Variant(
        FDAT_FAMILY,
        "FDAT-XL: 180 features, 6 groups of 6, 6 heads.",
        {"embed_dim": 180, "num_groups": 6, "depth_per_group": 6, "num_heads": 6},
    ),
    "moesr2": Variant(
        MOESR2_FAMILY, "MoESR2 (MambaOut excitation SR): 64 features, 9 blocks of 4."
    ),
}

FACTORIES = register_variants(VARIANTS)
