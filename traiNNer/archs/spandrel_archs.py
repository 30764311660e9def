"""Architectures built from spandrel's classes, under traiNNer-redux's registry names.

Each factory returns the spandrel module itself (no wrapper), so a saved
`state_dict()` is recognised by `spandrel.ModelLoader().load_from_state_dict` with
the same architecture and scale. `scale` is mapped to the class's own keyword.

Each family is a keyword-only dataclass of hyperparameters (its fields are the
config keys; names are spandrel's keywords, defaults are spandrel's or, where it
has none that fits, the paper's model) and a builder that checks them and makes
the module; most builders only check that some sizes are positive. `VARIANTS`
lists the registered names and the defaults each changes, with a note where
traiNNer-redux departs from spandrel for the same name so that its option files
build the same network here.

`supported_scales` lists the scales at which the module builds *and* spandrel
detects the scale back from the weights (e.g. ESRGAN at 3x is read back as 2x).

spandrel's RCAN is offered only without `norm` (traiNNer-redux's `rcan` default, in
`spandrel_archs_upstream`): with it, its forward scales its input tensor in place
(`x *= rgb_range`) and its "frozen" mean-shift convs are in fact trainable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from spandrel.architectures.Compact import Compact
from spandrel.architectures.DAT import DAT
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.MoSR import MoSR
from spandrel.architectures.OmniSR import OmniSR
from spandrel.architectures.PLKSR import PLKSR, RealPLKSR
from spandrel.architectures.SAFMN import SAFMN
from spandrel.architectures.SPAN import SPAN
from torch import nn

from traiNNer.archs.variants import Family, Variant, register_variants
from traiNNer.utils.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

COMMON_SCALES: tuple[int, ...] = (1, 2, 3, 4, 8)
# RRDBNet builds 3x with one x3 stage, which spandrel reads back as 2x.
ESRGAN_SCALES: tuple[int, ...] = (1, 2, 4, 8)

CompactActivation = Literal["relu", "prelu", "leakyrelu"]
CCMType = Literal["CCM", "ICCM", "DCCM"]
RealPLKSRUpsampler = Literal["pixelshuffle", "dysample"]
MoSRUpsampler = Literal["pixelshuffle", "dysample", "geoensemblepixelshuffle"]
DATResidual = Literal["1conv", "3conv"]
DATUpsampler = Literal["pixelshuffle", "pixelshuffledirect"]

# traiNNer-redux spells the upsamplers out; spandrel's MoSR takes short codes.
_MOSR_UPSAMPLER_CODES: dict[str, str] = {
    "pixelshuffle": "ps",
    "dysample": "dys",
    "geoensemblepixelshuffle": "gps",
}


# --------------------------------------------------------------- hyperparameters
# Keyword-only frozen dataclasses: their signature is the family's.


@dataclass(frozen=True, kw_only=True)
class ChannelParams:
    """Image channels in and out, under the names SPAN, Compact and OmniSR share."""

    num_in_ch: int = 3
    num_out_ch: int = 3


@dataclass(frozen=True, kw_only=True)
class SPANParams(ChannelParams):
    feature_channels: int = 48
    bias: bool = True
    norm: bool = True
    img_range: float = 255.0


@dataclass(frozen=True, kw_only=True)
class CompactParams(ChannelParams):
    num_feat: int = 64
    num_conv: int = 16
    act_type: CompactActivation = "prelu"


@dataclass(frozen=True, kw_only=True)
class ESRGANParams:
    in_nc: int = 3
    out_nc: int = 3
    num_filters: int = 64
    num_blocks: int = 23
    plus: bool = False
    # traiNNer-redux's key: at scales 1 and 2 the input is pixel-unshuffled (Real-ESRGAN's
    # x1/x2 layout): faster and lighter, slightly lower quality. No effect above 2.
    use_pixel_unshuffle: bool = True


@dataclass(frozen=True, kw_only=True)
class PLKParams:
    """What PLKSR and RealPLKSR share (and check alike)."""

    dim: int = 64
    n_blocks: int = 28
    kernel_size: int = 17
    split_ratio: float = 0.25
    use_ea: bool = True


@dataclass(frozen=True, kw_only=True)
class PLKSRParams(PLKParams):
    ccm_type: CCMType = "CCM"


@dataclass(frozen=True, kw_only=True)
class RealPLKSRParams(PLKParams):
    norm_groups: int = 4
    dropout: float = 0.0
    upsampler: RealPLKSRUpsampler = "pixelshuffle"
    layer_norm: bool = False


@dataclass(frozen=True, kw_only=True)
class OmniSRParams(ChannelParams):
    num_feat: int = 64
    res_num: int = 1
    block_num: int = 1
    window_size: int = 8
    pe: bool = True
    bias: bool = True


@dataclass(frozen=True, kw_only=True)
class SAFMNParams:
    dim: int = 36
    n_blocks: int = 8
    ffn_scale: float = 2.0


@dataclass(frozen=True, kw_only=True)
class MoSRParams:
    in_ch: int = 3
    out_ch: int = 3
    n_block: int = 24
    dim: int = 64
    upsampler: MoSRUpsampler = "pixelshuffle"
    drop_path: float = 0.0
    kernel_size: int = 7
    expansion_ratio: float = 1.5
    conv_ratio: float = 1.0


# DAT's spatial-interaction branch uses BatchNorm on pooled features, so training
# needs a batch of at least 2.
@dataclass(frozen=True, kw_only=True)
class DATParams:
    img_size: int = 64
    embed_dim: int = 180
    split_size: tuple[int, int] = (8, 32)
    depth: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    expansion_factor: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.1
    resi_connection: DATResidual = "1conv"
    upsampler: DATUpsampler = "pixelshuffle"
    use_chk: bool = False  # activation checkpointing inside DAT (traiNNer-redux's key)


# ---------------------------------------------------------------------- builders
# Each gets the variant name (for its errors) and an already checked scale.


def _check_positive(name: str, **values: int | float) -> None:
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"network_g.{key}: must be positive for {name}, got {value}")


def _without(params: DataclassInstance, *keys: str) -> dict[str, Any]:
    """The hyperparameters as keywords, less those a builder passes itself."""
    return {key: value for key, value in asdict(params).items() if key not in keys}


def _passthrough(
    module: type[nn.Module], scale_keyword: str, *positive: str
) -> Callable[[str, int, DataclassInstance], nn.Module]:
    """A builder that checks the `positive` sizes and passes every field on as is."""

    # `p: Any`: the family signature resolves these hints at runtime.
    def build(name: str, scale: int, p: Any) -> nn.Module:
        _check_positive(name, **{key: getattr(p, key) for key in positive})
        return module(**{scale_keyword: scale}, **asdict(p))

    # The registered factories' signatures name the module class they return.
    build.__annotations__ = {**build.__annotations__, "return": module}
    build.__qualname__ = build.__name__ = f"build_{module.__name__.lower()}"
    return build


def _check_plk(name: str, p: PLKParams) -> None:
    _check_positive(name, dim=p.dim, n_blocks=p.n_blocks, split_ratio=p.split_ratio)
    if p.kernel_size % 2 != 1:
        raise ConfigError(f"network_g.kernel_size: must be odd for {name}, got {p.kernel_size}")


def build_plksr(name: str, scale: int, p: PLKSRParams) -> PLKSR:
    _check_plk(name, p)
    return PLKSR(upscaling_factor=scale, **asdict(p))


def build_realplksr(name: str, scale: int, p: RealPLKSRParams) -> RealPLKSR:
    _check_plk(name, p)
    if not p.layer_norm and (p.norm_groups < 1 or p.dim % p.norm_groups != 0):
        raise ConfigError(
            f"network_g.norm_groups: must divide dim ({p.dim}) for {name}, got {p.norm_groups}"
        )
    dysample = p.upsampler == "dysample"
    return RealPLKSR(upscaling_factor=scale, dysample=dysample, **_without(p, "upsampler"))


def build_safmn(name: str, scale: int, p: SAFMNParams) -> SAFMN:
    _check_positive(name, dim=p.dim, n_blocks=p.n_blocks, ffn_scale=p.ffn_scale)
    if p.dim % 4 != 0:
        # SAFM splits the features into four frequency levels.
        raise ConfigError(f"network_g.dim: must be a multiple of 4 for {name}, got {p.dim}")
    return SAFMN(upscaling_factor=scale, **asdict(p))


def build_mosr(name: str, scale: int, p: MoSRParams) -> MoSR:
    sizes = ("n_block", "dim", "expansion_ratio", "conv_ratio")
    _check_positive(name, **{key: getattr(p, key) for key in sizes})
    upsampler = _MOSR_UPSAMPLER_CODES[p.upsampler]
    return MoSR(upscale=scale, upsampler=upsampler, **_without(p, "upsampler"))


def build_esrgan(name: str, scale: int, p: ESRGANParams) -> ESRGAN:
    _check_positive(name, num_filters=p.num_filters, num_blocks=p.num_blocks)
    factor = {1: 4, 2: 2}.get(scale) if p.use_pixel_unshuffle else None
    if factor is None:
        return ESRGAN(scale=scale, **_without(p, "use_pixel_unshuffle"))
    # spandrel's RRDBNet takes the unshuffled channel count and the overall upscale.
    return ESRGAN(
        in_nc=p.in_nc * factor * factor,
        out_nc=p.out_nc,
        num_filters=p.num_filters,
        num_blocks=p.num_blocks,
        plus=p.plus,
        scale=scale * factor,
        shuffle_factor=factor,
    )


def build_dat(name: str, scale: int, p: DATParams) -> DAT:
    _check_positive(name, img_size=p.img_size, expansion_factor=p.expansion_factor)
    if p.embed_dim < 16:
        # The spatial-interaction branch squeezes features to embed_dim // 16.
        raise ConfigError(f"network_g.embed_dim: must be at least 16 for {name}, got {p.embed_dim}")
    if not p.depth or len(p.depth) != len(p.num_heads):
        raise ConfigError(
            f"network_g.num_heads: needs one entry per residual group in depth for {name} "
            f"(depth has {len(p.depth)}, num_heads has {len(p.num_heads)})"
        )
    if any(heads < 1 or p.embed_dim % heads != 0 for heads in p.num_heads):
        raise ConfigError(
            f"network_g.num_heads: every entry must divide embed_dim ({p.embed_dim}) for {name}, "
            f"got {list(p.num_heads)}"
        )
    # spandrel's DAT takes lists.
    sequences = {key: list(getattr(p, key)) for key in ("split_size", "depth", "num_heads")}
    return DAT(upscale=scale, **sequences, **_without(p, *sequences))


# ---------------------------------------------------------------------- families

OMNISR_SIZES = ("num_feat", "res_num", "block_num", "window_size")

SPAN_FAMILY = Family(SPANParams, _passthrough(SPAN, "upscale", "feature_channels"), COMMON_SCALES)
COMPACT_FAMILY = Family(
    CompactParams, _passthrough(Compact, "upscale", "num_feat", "num_conv"), COMMON_SCALES
)
ESRGAN_FAMILY = Family(ESRGANParams, build_esrgan, ESRGAN_SCALES)
PLKSR_FAMILY = Family(PLKSRParams, build_plksr, COMMON_SCALES)
REALPLKSR_FAMILY = Family(RealPLKSRParams, build_realplksr, COMMON_SCALES)
OMNISR_FAMILY = Family(OmniSRParams, _passthrough(OmniSR, "up_scale", *OMNISR_SIZES), COMMON_SCALES)
SAFMN_FAMILY = Family(SAFMNParams, build_safmn, COMMON_SCALES)
MOSR_FAMILY = Family(MoSRParams, build_mosr, COMMON_SCALES)
DAT_FAMILY = Family(DATParams, build_dat, COMMON_SCALES)

# --------------------------------------------------------------------- variants

# traiNNer-redux turns RealPLKSR's layer norm on: the GroupNorm variant is not fp16-safe.
_REALPLKSR_REDUX: dict[str, object] = {"layer_norm": True}
_REALPLKSR_NOTES = {"layer_norm": "True, as in traiNNer-redux (GroupNorm is not fp16-safe)"}
_TINY_PLK: dict[str, object] = {"n_blocks": 12, "kernel_size": 13, "use_ea": False}

VARIANTS: dict[str, Variant] = {
    "span": Variant(SPAN_FAMILY, "SPAN (Swift Parameter-free Attention Network)."),
    "compact": Variant(COMPACT_FAMILY, "Real-ESRGAN SRVGGNetCompact."),
    "ultracompact": Variant(
        COMPACT_FAMILY, "SRVGGNetCompact with half the body convolutions.", {"num_conv": 8}
    ),
    "superultracompact": Variant(
        COMPACT_FAMILY,
        "SRVGGNetCompact with 24 features and 8 body convolutions.",
        {"num_feat": 24, "num_conv": 8},
    ),
    "esrgan": Variant(
        ESRGAN_FAMILY, "ESRGAN RRDBNet (old-arch key layout, as spandrel builds it)."
    ),
    "esrgan_lite": Variant(
        ESRGAN_FAMILY,
        "RRDBNet with 32 filters and 12 blocks.",
        {"num_filters": 32, "num_blocks": 12},
    ),
    "plksr": Variant(PLKSR_FAMILY, "PLKSR (Partial Large Kernel CNN)."),
    "plksr_tiny": Variant(
        PLKSR_FAMILY, "PLKSR-tiny: 12 blocks, 13x13 kernels, no element-wise attention.", _TINY_PLK
    ),
    "realplksr": Variant(
        REALPLKSR_FAMILY,
        "RealPLKSR (PLKSR tuned for real-world degradations).",
        _REALPLKSR_REDUX,
        notes=_REALPLKSR_NOTES,
    ),
    "realplksr_tiny": Variant(
        REALPLKSR_FAMILY,
        "RealPLKSR with 12 blocks, 13x13 kernels and no element-wise attention.",
        {**_TINY_PLK, **_REALPLKSR_REDUX},
        notes=_REALPLKSR_NOTES,
    ),
    "realplksr_large": Variant(
        REALPLKSR_FAMILY,
        "RealPLKSR with 96 features.",
        {"dim": 96, **_REALPLKSR_REDUX},
        notes=_REALPLKSR_NOTES,
    ),
    "omnisr": Variant(
        OMNISR_FAMILY,
        "Omni-SR (omni self-attention).",
        {"res_num": 5},
        notes={"res_num": "5, as in traiNNer-redux (spandrel: 1)"},
    ),
    "safmn": Variant(
        SAFMN_FAMILY, "SAFMN (spatially-adaptive feature modulation); inputs a multiple of 8 px."
    ),
    "safmn_l": Variant(
        SAFMN_FAMILY, "SAFMN-L: 128 features, 16 blocks.", {"dim": 128, "n_blocks": 16}
    ),
    "mosr": Variant(MOSR_FAMILY, "MoSR (MambaOut-style gated CNN)."),
    "mosr_t": Variant(MOSR_FAMILY, "MoSR-T: 5 blocks, 48 features.", {"n_block": 5, "dim": 48}),
    # The DAT presets follow the DAT paper.
    "dat": Variant(DAT_FAMILY, "DAT (dual aggregation transformer)."),
    "dat_s": Variant(
        DAT_FAMILY,
        "DAT-S: 8x16 windows, FFN expansion 2.",
        {"split_size": (8, 16), "expansion_factor": 2.0},
    ),
    "dat_2": Variant(
        DAT_FAMILY, "DAT-2: 8x32 windows, FFN expansion 2.", {"expansion_factor": 2.0}
    ),
    "dat_light": Variant(
        DAT_FAMILY,
        "DAT-light: one 18-block group, 60 features, direct pixel-shuffle upsampler.",
        {
            "embed_dim": 60,
            "depth": (18,),
            "num_heads": (6,),
            "expansion_factor": 2.0,
            "resi_connection": "3conv",
            "upsampler": "pixelshuffledirect",
        },
    ),
}

FACTORIES = register_variants(VARIANTS)
