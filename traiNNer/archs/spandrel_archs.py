"""Architectures built from spandrel's classes, under traiNNer-redux's registry names.

Each factory returns the spandrel module itself (no wrapper), so a saved
`state_dict()` is recognised by `spandrel.ModelLoader().load_from_state_dict` with
the same architecture and scale. `scale` is mapped to the class's own keyword.
Defaults are spandrel's, except where traiNNer-redux overrides them for the same
name (noted inline) so that its option files build the same network here.

`supported_scales` lists the scales at which the module builds *and* spandrel
detects the scale back from the weights (e.g. ESRGAN at 3x is read back as 2x).

Not offered: spandrel's RCAN, whose forward scales its input tensor in place
(`x *= rgb_range`) and whose "frozen" mean-shift convs are in fact trainable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

from spandrel.architectures.Compact import Compact
from spandrel.architectures.DAT import DAT
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.MoSR import MoSR
from spandrel.architectures.OmniSR import OmniSR
from spandrel.architectures.PLKSR import PLKSR, RealPLKSR
from spandrel.architectures.SAFMN import SAFMN
from spandrel.architectures.SPAN import SPAN

from traiNNer.utils.errors import ConfigError
from traiNNer.utils.registry import ARCH_REGISTRY

FactoryT = TypeVar("FactoryT", bound=Callable[..., object])

COMMON_SCALES: tuple[int, ...] = (1, 2, 3, 4, 8)
# RRDBNet builds 3x with one x3 stage, which spandrel reads back as 2x.
ESRGAN_SCALES: tuple[int, ...] = (1, 2, 4, 8)


def _register(name: str, scales: tuple[int, ...]) -> Callable[[FactoryT], FactoryT]:
    """Register `factory` under `name` and record the scales it supports."""

    def decorator(factory: FactoryT) -> FactoryT:
        factory.supported_scales = scales  # type: ignore[attr-defined]
        ARCH_REGISTRY.add(name, factory)
        return factory

    return decorator


def _check_scale(name: str, scale: int, scales: tuple[int, ...]) -> None:
    if scale not in scales:
        raise ConfigError(
            f"scale: {name} does not support scale {scale} "
            f"(accepted: {', '.join(map(str, scales))})"
        )


def _check_positive(name: str, **values: int | float) -> None:
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"network_g.{key}: must be positive for {name}, got {value}")


# --------------------------------------------------------------------------- SPAN


@_register("span", COMMON_SCALES)
def span(
    *,
    scale: int = 4,
    num_in_ch: int = 3,
    num_out_ch: int = 3,
    feature_channels: int = 48,
    bias: bool = True,
    norm: bool = True,
    img_range: float = 255.0,
) -> SPAN:
    """SPAN (Swift Parameter-free Attention Network)."""
    _check_scale("span", scale, COMMON_SCALES)
    _check_positive("span", feature_channels=feature_channels)
    return SPAN(
        num_in_ch=num_in_ch,
        num_out_ch=num_out_ch,
        feature_channels=feature_channels,
        upscale=scale,
        bias=bias,
        norm=norm,
        img_range=img_range,
    )


# ------------------------------------------------------------ Compact (SRVGGNet)

CompactActivation = Literal["relu", "prelu", "leakyrelu"]


def _compact(
    name: str,
    scale: int,
    num_in_ch: int,
    num_out_ch: int,
    num_feat: int,
    num_conv: int,
    act_type: CompactActivation,
) -> Compact:
    _check_scale(name, scale, COMMON_SCALES)
    _check_positive(name, num_feat=num_feat, num_conv=num_conv)
    return Compact(
        num_in_ch=num_in_ch,
        num_out_ch=num_out_ch,
        num_feat=num_feat,
        num_conv=num_conv,
        upscale=scale,
        act_type=act_type,
    )


@_register("compact", COMMON_SCALES)
def compact(
    *,
    scale: int = 4,
    num_in_ch: int = 3,
    num_out_ch: int = 3,
    num_feat: int = 64,
    num_conv: int = 16,
    act_type: CompactActivation = "prelu",
) -> Compact:
    """Real-ESRGAN SRVGGNetCompact."""
    return _compact("compact", scale, num_in_ch, num_out_ch, num_feat, num_conv, act_type)


@_register("ultracompact", COMMON_SCALES)
def ultracompact(
    *,
    scale: int = 4,
    num_in_ch: int = 3,
    num_out_ch: int = 3,
    num_feat: int = 64,
    num_conv: int = 8,
    act_type: CompactActivation = "prelu",
) -> Compact:
    """SRVGGNetCompact with half the body convolutions."""
    return _compact("ultracompact", scale, num_in_ch, num_out_ch, num_feat, num_conv, act_type)


@_register("superultracompact", COMMON_SCALES)
def superultracompact(
    *,
    scale: int = 4,
    num_in_ch: int = 3,
    num_out_ch: int = 3,
    num_feat: int = 24,
    num_conv: int = 8,
    act_type: CompactActivation = "prelu",
) -> Compact:
    """SRVGGNetCompact with 24 features and 8 body convolutions."""
    return _compact("superultracompact", scale, num_in_ch, num_out_ch, num_feat, num_conv, act_type)


# ---------------------------------------------------------------- ESRGAN (RRDB)


def _esrgan(
    name: str,
    scale: int,
    in_nc: int,
    out_nc: int,
    num_filters: int,
    num_blocks: int,
    plus: bool,
) -> ESRGAN:
    _check_scale(name, scale, ESRGAN_SCALES)
    _check_positive(name, num_filters=num_filters, num_blocks=num_blocks)
    return ESRGAN(
        in_nc=in_nc,
        out_nc=out_nc,
        num_filters=num_filters,
        num_blocks=num_blocks,
        scale=scale,
        plus=plus,
    )


@_register("esrgan", ESRGAN_SCALES)
def esrgan(
    *,
    scale: int = 4,
    in_nc: int = 3,
    out_nc: int = 3,
    num_filters: int = 64,
    num_blocks: int = 23,
    plus: bool = False,
) -> ESRGAN:
    """ESRGAN RRDBNet (old-arch key layout, as spandrel builds it)."""
    return _esrgan("esrgan", scale, in_nc, out_nc, num_filters, num_blocks, plus)


@_register("esrgan_lite", ESRGAN_SCALES)
def esrgan_lite(
    *,
    scale: int = 4,
    in_nc: int = 3,
    out_nc: int = 3,
    num_filters: int = 32,
    num_blocks: int = 12,
    plus: bool = False,
) -> ESRGAN:
    """RRDBNet with 32 filters and 12 blocks."""
    return _esrgan("esrgan_lite", scale, in_nc, out_nc, num_filters, num_blocks, plus)


# ------------------------------------------------------------------ PLKSR family

CCMType = Literal["CCM", "ICCM", "DCCM"]


def _plksr(
    name: str,
    scale: int,
    dim: int,
    n_blocks: int,
    kernel_size: int,
    split_ratio: float,
    use_ea: bool,
    ccm_type: CCMType,
) -> PLKSR:
    _check_scale(name, scale, COMMON_SCALES)
    _check_positive(name, dim=dim, n_blocks=n_blocks, split_ratio=split_ratio)
    if kernel_size % 2 != 1:
        raise ConfigError(f"network_g.kernel_size: must be odd for {name}, got {kernel_size}")
    return PLKSR(
        dim=dim,
        n_blocks=n_blocks,
        upscaling_factor=scale,
        ccm_type=ccm_type,
        kernel_size=kernel_size,
        split_ratio=split_ratio,
        use_ea=use_ea,
    )


@_register("plksr", COMMON_SCALES)
def plksr(
    *,
    scale: int = 4,
    dim: int = 64,
    n_blocks: int = 28,
    kernel_size: int = 17,
    split_ratio: float = 0.25,
    use_ea: bool = True,
    ccm_type: CCMType = "CCM",
) -> PLKSR:
    """PLKSR (Partial Large Kernel CNN)."""
    return _plksr("plksr", scale, dim, n_blocks, kernel_size, split_ratio, use_ea, ccm_type)


@_register("plksr_tiny", COMMON_SCALES)
def plksr_tiny(
    *,
    scale: int = 4,
    dim: int = 64,
    n_blocks: int = 12,
    kernel_size: int = 13,
    split_ratio: float = 0.25,
    use_ea: bool = False,
    ccm_type: CCMType = "CCM",
) -> PLKSR:
    """PLKSR-tiny: 12 blocks, 13x13 kernels, no element-wise attention."""
    return _plksr("plksr_tiny", scale, dim, n_blocks, kernel_size, split_ratio, use_ea, ccm_type)


RealPLKSRUpsampler = Literal["pixelshuffle", "dysample"]


def _realplksr(
    name: str,
    scale: int,
    dim: int,
    n_blocks: int,
    kernel_size: int,
    split_ratio: float,
    use_ea: bool,
    norm_groups: int,
    dropout: float,
    upsampler: RealPLKSRUpsampler,
    layer_norm: bool,
) -> RealPLKSR:
    _check_scale(name, scale, COMMON_SCALES)
    _check_positive(name, dim=dim, n_blocks=n_blocks, split_ratio=split_ratio)
    if kernel_size % 2 != 1:
        raise ConfigError(f"network_g.kernel_size: must be odd for {name}, got {kernel_size}")
    if not layer_norm and (norm_groups < 1 or dim % norm_groups != 0):
        raise ConfigError(
            f"network_g.norm_groups: must divide dim ({dim}) for {name}, got {norm_groups}"
        )
    return RealPLKSR(
        dim=dim,
        n_blocks=n_blocks,
        upscaling_factor=scale,
        kernel_size=kernel_size,
        split_ratio=split_ratio,
        use_ea=use_ea,
        norm_groups=norm_groups,
        dropout=dropout,
        dysample=upsampler == "dysample",
        layer_norm=layer_norm,
    )


# traiNNer-redux defaults layer_norm to True (spandrel: False); without it the
# GroupNorm variant is not fp16-safe.


@_register("realplksr", COMMON_SCALES)
def realplksr(
    *,
    scale: int = 4,
    dim: int = 64,
    n_blocks: int = 28,
    kernel_size: int = 17,
    split_ratio: float = 0.25,
    use_ea: bool = True,
    norm_groups: int = 4,
    dropout: float = 0.0,
    upsampler: RealPLKSRUpsampler = "pixelshuffle",
    layer_norm: bool = True,
) -> RealPLKSR:
    """RealPLKSR (PLKSR tuned for real-world degradations)."""
    return _realplksr(
        "realplksr",
        scale,
        dim,
        n_blocks,
        kernel_size,
        split_ratio,
        use_ea,
        norm_groups,
        dropout,
        upsampler,
        layer_norm,
    )


@_register("realplksr_tiny", COMMON_SCALES)
def realplksr_tiny(
    *,
    scale: int = 4,
    dim: int = 64,
    n_blocks: int = 12,
    kernel_size: int = 13,
    split_ratio: float = 0.25,
    use_ea: bool = False,
    norm_groups: int = 4,
    dropout: float = 0.0,
    upsampler: RealPLKSRUpsampler = "pixelshuffle",
    layer_norm: bool = True,
) -> RealPLKSR:
    """RealPLKSR with 12 blocks, 13x13 kernels and no element-wise attention."""
    return _realplksr(
        "realplksr_tiny",
        scale,
        dim,
        n_blocks,
        kernel_size,
        split_ratio,
        use_ea,
        norm_groups,
        dropout,
        upsampler,
        layer_norm,
    )


@_register("realplksr_large", COMMON_SCALES)
def realplksr_large(
    *,
    scale: int = 4,
    dim: int = 96,
    n_blocks: int = 28,
    kernel_size: int = 17,
    split_ratio: float = 0.25,
    use_ea: bool = True,
    norm_groups: int = 4,
    dropout: float = 0.0,
    upsampler: RealPLKSRUpsampler = "pixelshuffle",
    layer_norm: bool = True,
) -> RealPLKSR:
    """RealPLKSR with 96 features."""
    return _realplksr(
        "realplksr_large",
        scale,
        dim,
        n_blocks,
        kernel_size,
        split_ratio,
        use_ea,
        norm_groups,
        dropout,
        upsampler,
        layer_norm,
    )


# ------------------------------------------------------------------------ OmniSR


@_register("omnisr", COMMON_SCALES)
def omnisr(
    *,
    scale: int = 4,
    num_in_ch: int = 3,
    num_out_ch: int = 3,
    num_feat: int = 64,
    res_num: int = 5,  # traiNNer-redux default (spandrel: 1)
    block_num: int = 1,
    window_size: int = 8,
    pe: bool = True,
    bias: bool = True,
) -> OmniSR:
    """Omni-SR (omni self-attention)."""
    _check_scale("omnisr", scale, COMMON_SCALES)
    _check_positive(
        "omnisr", num_feat=num_feat, res_num=res_num, block_num=block_num, window_size=window_size
    )
    return OmniSR(
        num_in_ch=num_in_ch,
        num_out_ch=num_out_ch,
        num_feat=num_feat,
        block_num=block_num,
        pe=pe,
        window_size=window_size,
        res_num=res_num,
        up_scale=scale,
        bias=bias,
    )


# ------------------------------------------------------------------------- SAFMN


def _safmn(name: str, scale: int, dim: int, n_blocks: int, ffn_scale: float) -> SAFMN:
    _check_scale(name, scale, COMMON_SCALES)
    _check_positive(name, dim=dim, n_blocks=n_blocks, ffn_scale=ffn_scale)
    if dim % 4 != 0:
        # SAFM splits the features into four frequency levels.
        raise ConfigError(f"network_g.dim: must be a multiple of 4 for {name}, got {dim}")
    return SAFMN(dim=dim, n_blocks=n_blocks, ffn_scale=ffn_scale, upscaling_factor=scale)


@_register("safmn", COMMON_SCALES)
def safmn(*, scale: int = 4, dim: int = 36, n_blocks: int = 8, ffn_scale: float = 2.0) -> SAFMN:
    """SAFMN (spatially-adaptive feature modulation); inputs a multiple of 8 px."""
    return _safmn("safmn", scale, dim, n_blocks, ffn_scale)


@_register("safmn_l", COMMON_SCALES)
def safmn_l(*, scale: int = 4, dim: int = 128, n_blocks: int = 16, ffn_scale: float = 2.0) -> SAFMN:
    """SAFMN-L: 128 features, 16 blocks."""
    return _safmn("safmn_l", scale, dim, n_blocks, ffn_scale)


# -------------------------------------------------------------------------- MoSR

MoSRUpsampler = Literal["pixelshuffle", "dysample", "geoensemblepixelshuffle"]
# traiNNer-redux spells the upsamplers out; spandrel's MoSR takes short codes.
_MOSR_UPSAMPLER_CODES: dict[str, str] = {
    "pixelshuffle": "ps",
    "dysample": "dys",
    "geoensemblepixelshuffle": "gps",
}


def _mosr(
    name: str,
    scale: int,
    in_ch: int,
    out_ch: int,
    n_block: int,
    dim: int,
    upsampler: MoSRUpsampler,
    drop_path: float,
    kernel_size: int,
    expansion_ratio: float,
    conv_ratio: float,
) -> MoSR:
    _check_scale(name, scale, COMMON_SCALES)
    _check_positive(
        name, n_block=n_block, dim=dim, expansion_ratio=expansion_ratio, conv_ratio=conv_ratio
    )
    return MoSR(
        in_ch=in_ch,
        out_ch=out_ch,
        upscale=scale,
        n_block=n_block,
        dim=dim,
        upsampler=_MOSR_UPSAMPLER_CODES[upsampler],
        drop_path=drop_path,
        kernel_size=kernel_size,
        expansion_ratio=expansion_ratio,
        conv_ratio=conv_ratio,
    )


@_register("mosr", COMMON_SCALES)
def mosr(
    *,
    scale: int = 4,
    in_ch: int = 3,
    out_ch: int = 3,
    n_block: int = 24,
    dim: int = 64,
    upsampler: MoSRUpsampler = "pixelshuffle",
    drop_path: float = 0.0,
    kernel_size: int = 7,
    expansion_ratio: float = 1.5,
    conv_ratio: float = 1.0,
) -> MoSR:
    """MoSR (MambaOut-style gated CNN)."""
    return _mosr(
        "mosr",
        scale,
        in_ch,
        out_ch,
        n_block,
        dim,
        upsampler,
        drop_path,
        kernel_size,
        expansion_ratio,
        conv_ratio,
    )


@_register("mosr_t", COMMON_SCALES)
def mosr_t(
    *,
    scale: int = 4,
    in_ch: int = 3,
    out_ch: int = 3,
    n_block: int = 5,
    dim: int = 48,
    upsampler: MoSRUpsampler = "pixelshuffle",
    drop_path: float = 0.0,
    kernel_size: int = 7,
    expansion_ratio: float = 1.5,
    conv_ratio: float = 1.0,
) -> MoSR:
    """MoSR-T: 5 blocks, 48 features."""
    return _mosr(
        "mosr_t",
        scale,
        in_ch,
        out_ch,
        n_block,
        dim,
        upsampler,
        drop_path,
        kernel_size,
        expansion_ratio,
        conv_ratio,
    )


# --------------------------------------------------------------------------- DAT

DATResidual = Literal["1conv", "3conv"]
DATUpsampler = Literal["pixelshuffle", "pixelshuffledirect"]


def _dat(
    name: str,
    scale: int,
    img_size: int,
    embed_dim: int,
    split_size: tuple[int, int],
    depth: tuple[int, ...],
    num_heads: tuple[int, ...],
    expansion_factor: float,
    qkv_bias: bool,
    drop_path_rate: float,
    resi_connection: DATResidual,
    upsampler: DATUpsampler,
) -> DAT:
    _check_scale(name, scale, COMMON_SCALES)
    _check_positive(name, img_size=img_size, expansion_factor=expansion_factor)
    if embed_dim < 16:
        # The spatial-interaction branch squeezes features to embed_dim // 16.
        raise ConfigError(f"network_g.embed_dim: must be at least 16 for {name}, got {embed_dim}")
    if not depth or len(depth) != len(num_heads):
        raise ConfigError(
            f"network_g.num_heads: needs one entry per residual group in depth for {name} "
            f"(depth has {len(depth)}, num_heads has {len(num_heads)})"
        )
    if any(heads < 1 or embed_dim % heads != 0 for heads in num_heads):
        raise ConfigError(
            f"network_g.num_heads: every entry must divide embed_dim ({embed_dim}) for {name}, "
            f"got {list(num_heads)}"
        )
    return DAT(
        img_size=img_size,
        embed_dim=embed_dim,
        split_size=list(split_size),
        depth=list(depth),
        num_heads=list(num_heads),
        expansion_factor=expansion_factor,
        qkv_bias=qkv_bias,
        drop_path_rate=drop_path_rate,
        upscale=scale,
        resi_connection=resi_connection,
        upsampler=upsampler,
    )


# DAT's spatial-interaction branch uses BatchNorm on pooled features, so training
# needs a batch of at least 2. The presets follow the DAT paper.


@_register("dat", COMMON_SCALES)
def dat(
    *,
    scale: int = 4,
    img_size: int = 64,
    embed_dim: int = 180,
    split_size: tuple[int, int] = (8, 32),
    depth: tuple[int, ...] = (6, 6, 6, 6, 6, 6),
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6),
    expansion_factor: float = 4.0,
    qkv_bias: bool = True,
    drop_path_rate: float = 0.1,
    resi_connection: DATResidual = "1conv",
    upsampler: DATUpsampler = "pixelshuffle",
) -> DAT:
    """DAT (dual aggregation transformer)."""
    return _dat(
        "dat",
        scale,
        img_size,
        embed_dim,
        split_size,
        depth,
        num_heads,
        expansion_factor,
        qkv_bias,
        drop_path_rate,
        resi_connection,
        upsampler,
    )


@_register("dat_s", COMMON_SCALES)
def dat_s(
    *,
    scale: int = 4,
    img_size: int = 64,
    embed_dim: int = 180,
    split_size: tuple[int, int] = (8, 16),
    depth: tuple[int, ...] = (6, 6, 6, 6, 6, 6),
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6),
    expansion_factor: float = 2.0,
    qkv_bias: bool = True,
    drop_path_rate: float = 0.1,
    resi_connection: DATResidual = "1conv",
    upsampler: DATUpsampler = "pixelshuffle",
) -> DAT:
    """DAT-S: 8x16 windows, FFN expansion 2."""
    return _dat(
        "dat_s",
        scale,
        img_size,
        embed_dim,
        split_size,
        depth,
        num_heads,
        expansion_factor,
        qkv_bias,
        drop_path_rate,
        resi_connection,
        upsampler,
    )


@_register("dat_2", COMMON_SCALES)
def dat_2(
    *,
    scale: int = 4,
    img_size: int = 64,
    embed_dim: int = 180,
    split_size: tuple[int, int] = (8, 32),
    depth: tuple[int, ...] = (6, 6, 6, 6, 6, 6),
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6),
    expansion_factor: float = 2.0,
    qkv_bias: bool = True,
    drop_path_rate: float = 0.1,
    resi_connection: DATResidual = "1conv",
    upsampler: DATUpsampler = "pixelshuffle",
) -> DAT:
    """DAT-2: 8x32 windows, FFN expansion 2."""
    return _dat(
        "dat_2",
        scale,
        img_size,
        embed_dim,
        split_size,
        depth,
        num_heads,
        expansion_factor,
        qkv_bias,
        drop_path_rate,
        resi_connection,
        upsampler,
    )


@_register("dat_light", COMMON_SCALES)
def dat_light(
    *,
    scale: int = 4,
    img_size: int = 64,
    embed_dim: int = 60,
    split_size: tuple[int, int] = (8, 32),
    depth: tuple[int, ...] = (18,),
    num_heads: tuple[int, ...] = (6,),
    expansion_factor: float = 2.0,
    qkv_bias: bool = True,
    drop_path_rate: float = 0.1,
    resi_connection: DATResidual = "3conv",
    upsampler: DATUpsampler = "pixelshuffledirect",
) -> DAT:
    """DAT-light: one 18-block group, 60 features, direct pixel-shuffle upsampler."""
    return _dat(
        "dat_light",
        scale,
        img_size,
        embed_dim,
        split_size,
        depth,
        num_heads,
        expansion_factor,
        qkv_bias,
        drop_path_rate,
        resi_connection,
        upsampler,
    )
