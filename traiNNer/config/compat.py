"""traiNNer-redux keys that decode here but cannot do anything yet, and the notes about them.

The loader accepts such a key only where ignoring it cannot change the run a user asked
for (a metric that will not be computed, the default disk backend) and records one note
per key; `train.py` and `test.py` write the notes to the run's log once (`drain_notes`).
Anything that would change the run is a ConfigError instead.
"""

from __future__ import annotations

# Upstream metrics not available here: (direction, why). calculate_topiq, calculate_lpips
# and calculate_dists are registered (traiNNer.metrics.networks).
UNAVAILABLE_METRICS: dict[str, tuple[str, str]] = {
    "calculate_topiq_nr": ("higher", "no-reference TOPIQ is not supported yet"),
}

# Every generator and discriminator name traiNNer-redux's templates use (network_g/d.type).
# One that is not registered here gets "not available yet", not a did-you-mean.
UPSTREAM_ARCHS: frozenset[str] = frozenset(
    {
        "artcnn_r16f96",
        "artcnn_r8f64",
        "atd",
        "cascadedgaze",
        "compact",
        "craft",
        "dat",
        "dat_2",
        "dat_light",
        "dat_s",
        "dctlsa",
        "dis_balanced",
        "dis_fast",
        "ditn_real",
        "docres_base",
        "docres_discriminator",
        "drct",
        "drct_l",
        "drct_xl",
        "dunet",
        "dwt",
        "dwt_s",
        "eimn_a",
        "eimn_l",
        "elan",
        "elan_light",
        "emt",
        "escrealm",
        "escrealm_xl",
        "esrgan",
        "esrgan_lite",
        "fdat_large",
        "fdat_light",
        "fdat_medium",
        "fdat_tiny",
        "fdat_xl",
        "flexnet",
        "gaterv3_r",
        "gaterv3_s",
        "grl_b",
        "grl_s",
        "grl_t",
        "hat_l",
        "hat_m",
        "hat_s",
        "hit_sir",
        "hit_sng",
        "hit_srf",
        "lkfmixer_b",
        "lkfmixer_l",
        "lkfmixer_t",
        "lmlt_base",
        "lmlt_large",
        "lmlt_tiny",
        "man",
        "man_light",
        "man_tiny",
        "metaflexnet",
        "moesr2",
        "mosr",
        "mosr_t",
        "mosrv2",
        "omnisr",
        "plksr",
        "plksr_tiny",
        "rcan",
        "rcan_unshuffle",
        "realcugan",
        "realplksr",
        "realplksr_tiny",
        "rgt",
        "rgt_s",
        "rtmosr",
        "rtmosr_l",
        "rtmosr_ul",
        "safmn",
        "safmn_l",
        "scunet_aaf6aa",
        "sebica",
        "seemore_t",
        "span",
        "span_s",
        "spanplus",
        "spanplus_s",
        "spanplus_st",
        "spanplus_sts",
        "srformer",
        "srformer_light",
        "superultracompact",
        "swin2sr_l",
        "swin2sr_m",
        "swin2sr_s",
        "swinir_l",
        "swinir_m",
        "swinir_s",
        "temporalspan",
        "temporalspanv2",
        "tfdat",
        "tscunet",
        "ultracompact",
    }
)

_pending: list[str] = []


def note(text: str) -> None:
    """Record one note for the run's log (duplicates are dropped)."""
    if text not in _pending:
        _pending.append(text)


def drain_notes() -> list[str]:
    """The notes recorded since the last call, in order."""
    notes = list(_pending)
    _pending.clear()
    return notes
