"""traiNNer-redux option keys that have no field of their own here: translated, noted or refused.

`translate(data)` runs on the plain YAML data before the strict decode. Each upstream key
falls in one of four groups:

- translated: a key whose meaning this project spells another way (`gt_size` is
  `lq_size * scale`; the old `pixel_opt`-style loss blocks are entries of `train.losses`);
- inert: upstream fills it in at run time or it only names a folder (`rank`, `is_train`,
  `path.log`, ...), so it is dropped with one note;
- off: a feature that is not here yet but is switched off in the file (the on-the-fly
  degradation keys with `high_order_degradation: false`, GAN keys without `network_d`),
  dropped with one note;
- on: the same feature switched on, which would change the run: a ConfigError naming the
  key, never a silent drop.
"""

from __future__ import annotations

from typing import Any

from traiNNer.config.compat import note
from traiNNer.utils.errors import ConfigError

# Root keys upstream's own option parser sets from the command line or the machine.
RUNTIME_ROOT_KEYS = frozenset(
    {
        "dist",
        "launcher",
        "rank",
        "world_size",
        "auto_resume",
        "watch",
        "start_iter",
        "is_train",
        "root_path",
        "switch_iter_per_epoch",
        "contents",
    }
)
# path.* folders upstream derives from experiments_root; here they always are.
DERIVED_PATH_KEYS = frozenset(
    {"models", "resume_models", "training_states", "log", "visualization"}
)
# path.* keys of networks that do not exist here: refused when set.
OTHER_NETWORK_PATH_KEYS = frozenset(
    {
        "pretrain_network_g_teacher",
        "pretrain_network_g_path",
        "pretrain_network_ae",
        "pretrain_network_ae_path",
        "pretrain_network_ae_ema",
        "pretrain_network_ae_decoder",
        "pretrain_network_ae_decoder_ema",
        "pretrain_network_g_ema",
    }
)
GAN_PATH_KEYS = frozenset({"pretrain_network_d", "param_key_d", "strict_load_d"})
GAN_TRAIN_KEYS = frozenset(
    {
        "optim_d",
        "scheduler_d",
        "net_d_iters",
        "net_d_init_iters",
        "net_d_start_iter",
        "adaptive_d",
        "adaptive_d_ema_decay",
        "adaptive_d_threshold",
    }
)
# The old one-block-per-loss spelling; each becomes an entry of train.losses.
LEGACY_LOSS_KEYS = (
    "pixel_opt",
    "mssim_opt",
    "ms_ssim_l1_opt",
    "perceptual_opt",
    "contextual_opt",
    "dists_opt",
    "hr_inversion_opt",
    "dinov2_opt",
    "topiq_opt",
    "pd_opt",
    "fd_opt",
    "ldl_opt",
    "hsluv_opt",
    "gan_opt",
    "color_opt",
    "luma_opt",
    "avg_opt",
    "bicubic_opt",
)
# On-the-fly (Real-ESRGAN) degradation keys: root level, then per dataset.
OTF_ROOT_KEYS = frozenset(
    {
        "high_order_degradations_debug",
        "high_order_degradations_debug_limit",
        "dataroot_lq_prob",
        "lq_usm",
        "lq_usm_radius_range",
        "blur_prob",
        "thicklines_prob",
        "resize_prob",
        "resize_mode_list",
        "resize_mode_prob",
        "resize_range",
        "gaussian_noise_prob",
        "noise_range",
        "poisson_scale_range",
        "gray_noise_prob",
        "jpeg_prob",
        "jpeg_range",
        "blur_prob2",
        "resize_prob2",
        "resize_mode_list2",
        "resize_mode_prob2",
        "resize_range2",
        "gaussian_noise_prob2",
        "noise_range2",
        "poisson_scale_range2",
        "gray_noise_prob2",
        "jpeg_prob2",
        "jpeg_range2",
        "resize_mode_list3",
        "resize_mode_prob3",
        "queue_size",
    }
)
OTF_DATASET_KEYS = frozenset(
    {
        "blur_kernel_size",
        "kernel_list",
        "kernel_prob",
        "kernel_range",
        "sinc_prob",
        "blur_sigma",
        "betag_range",
        "betap_range",
        "blur_kernel_size2",
        "kernel_list2",
        "kernel_prob2",
        "kernel_range2",
        "sinc_prob2",
        "blur_sigma2",
        "betag_range2",
        "betap_range2",
        "final_sinc_prob",
        "final_kernel_range",
    }
)
OTF_DATASET_TYPES = frozenset({"realesrgandataset", "realesrganpaireddataset"})
VIDEO_DATASET_TYPES = frozenset({"pairedvideodataset"})
# Per-dataset keys upstream fills in itself (the split and the root scale).
INERT_DATASET_KEYS = frozenset({"phase", "num_prefetch_queue"})
NOT_YET = "is not supported in traiNNer-auto yet"


def _is_set(value: Any) -> bool:
    return value not in (None, False, 0, [], {}, "")


def _drop_inert(block: dict[str, Any], keys: frozenset[str], where: str, why: str) -> None:
    for key in sorted(keys & block.keys()):
        del block[key]
        note(f"{where}{key}: ignored ({why})")


def _refuse_if_set(block: dict[str, Any], keys: frozenset[str], where: str, what: str) -> None:
    for key in sorted(keys & block.keys()):
        if _is_set(block[key]):
            raise ConfigError(f"{where}{key}: {what} {NOT_YET}; remove the key")
        del block[key]


def _translate_root(data: dict[str, Any]) -> None:
    _drop_inert(data, RUNTIME_ROOT_KEYS, "", "set from the command line and the machine here")
    for key in ("input_pixel_format", "output_pixel_format"):
        if key in data:
            if data[key] != "rgb":
                raise ConfigError(f"{key}: {data[key]!r} {NOT_YET} (accepted: rgb); remove the key")
            del data[key]
    for key, what in (
        ("network_g_teacher", "a teacher network (distillation)"),
        ("network_ae", "an autoencoder network"),
    ):
        _refuse_if_set(data, frozenset({key}), "", what)
    if _is_set(data.get("network_d")):
        raise ConfigError(
            "network_d: GAN training (a discriminator) "
            f"{NOT_YET}; train the fidelity template of this architecture instead"
        )
    data.pop("network_d", None)
    if "onnx" in data:
        del data["onnx"]
        note("onnx: ignored by train.py (export with scripts/onnx/convert_to_onnx.py -opt)")


def _translate_otf(data: dict[str, Any]) -> None:
    types = {
        name: str(dataset.get("type", "")).lower()
        for name, dataset in (data.get("datasets") or {}).items()
        if isinstance(dataset, dict)
    }
    for name, type_name in types.items():
        if type_name in OTF_DATASET_TYPES:
            raise ConfigError(
                f"datasets.{name}.type: {type_name} (on-the-fly Real-ESRGAN degradations) "
                f"{NOT_YET}; use pairedimagedataset with prepared LR images"
            )
        if type_name in VIDEO_DATASET_TYPES:
            raise ConfigError(f"datasets.{name}.type: {type_name} (video training) {NOT_YET}")
    if data.get("high_order_degradation"):
        raise ConfigError(
            f"high_order_degradation: on-the-fly degradation {NOT_YET}; "
            "set it to false and give datasets.train.dataroot_lq"
        )
    data.pop("high_order_degradation", None)
    _drop_inert(data, OTF_ROOT_KEYS, "", "on-the-fly degradations are off")
    for name, dataset in (data.get("datasets") or {}).items():
        if isinstance(dataset, dict):
            _drop_inert(
                dataset, OTF_DATASET_KEYS, f"datasets.{name}.", "no on-the-fly degradations"
            )


def _translate_dataset(name: str, dataset: dict[str, Any], scale: Any) -> None:
    where = f"datasets.{name}."
    _drop_inert(dataset, INERT_DATASET_KEYS, where, "the loader here prefetches on its own")
    if dataset.get("prefetch_mode") not in (None, "cpu"):
        note(f"{where}prefetch_mode: ignored (batches are pinned and copied asynchronously here)")
    dataset.pop("prefetch_mode", None)
    if "scale" in dataset:
        if dataset["scale"] is not None and dataset["scale"] != scale:
            raise ConfigError(
                f"{where}scale: {dataset['scale']} differs from the root scale ({scale}); "
                "remove the key"
            )
        del dataset["scale"]
    for key, what in (
        ("mean", "dataset normalisation (mean)"),
        ("std", "dataset normalisation (std)"),
        ("clip_size", "video training (clip_size)"),
        ("lq_resize_mode", "on-the-fly LR synthesis (lq_resize_mode)"),
        ("meta_info", "a meta_info image list"),
    ):
        _refuse_if_set(dataset, frozenset({key}), where, what)
    gt_size = dataset.pop("gt_size", None)
    if gt_size is None:
        return
    if not isinstance(gt_size, int) or not isinstance(scale, int) or gt_size % scale:
        raise ConfigError(f"{where}gt_size: must be a multiple of scale ({scale}), got {gt_size!r}")
    lq_size = dataset.setdefault("lq_size", gt_size // scale)
    if lq_size * scale != gt_size:
        raise ConfigError(
            f"{where}gt_size: {gt_size} disagrees with lq_size {lq_size} at scale {scale}; "
            "keep one of them"
        )


def _translate_path(path: dict[str, Any]) -> None:
    _drop_inert(path, DERIVED_PATH_KEYS, "path.", "folders follow experiments_root here")
    _refuse_if_set(path, OTHER_NETWORK_PATH_KEYS, "path.", "loading this network")
    if path.get("ignore_resume_networks"):
        raise ConfigError(f"path.ignore_resume_networks: {NOT_YET}; remove the key")
    path.pop("ignore_resume_networks", None)
    _drop_inert(path, GAN_PATH_KEYS, "path.", "there is no network_d")


def _translate_train(train: dict[str, Any]) -> None:
    _drop_inert(train, GAN_TRAIN_KEYS, "train.", "there is no network_d")
    _refuse_if_set(train, frozenset({"optim_ae"}), "train.", "an autoencoder optimizer")
    eco = train.pop("eco", None)
    if isinstance(eco, dict) and eco.get("enabled"):
        raise ConfigError(f"train.eco.enabled: ECO training {NOT_YET}; set it to false")
    for key in LEGACY_LOSS_KEYS:
        block = train.pop(key, None)
        if block is None:
            continue
        if not isinstance(block, dict) or "type" not in block:
            raise ConfigError(f"train.{key}: must be a loss block with a type, got {block!r}")
        losses = train.get("losses")
        train["losses"] = [*(losses if isinstance(losses, list) else []), block]


def _translate_logger_and_val(data: dict[str, Any]) -> None:
    logger = data.get("logger")
    if isinstance(logger, dict) and "wandb" in logger:
        wandb = logger.pop("wandb")
        if isinstance(wandb, dict) and wandb.get("project"):
            note("logger.wandb: ignored (runs are logged to TensorBoard here)")
    val = data.get("val")
    if isinstance(val, dict) and "pbar" in val:
        del val["pbar"]
        note("val.pbar: ignored (validation reports one line per set)")


def translate(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of option data with every upstream-only key translated, dropped or refused."""
    data = {
        key: (
            {k: (dict(v) if isinstance(v, dict) else v) for k, v in value.items()}
            if key == "datasets" and isinstance(value, dict)
            else dict(value)
            if isinstance(value, dict)
            else value
        )
        for key, value in data.items()
    }
    _translate_root(data)  # refuses network_d, so GAN keys below are always inert
    _translate_otf(data)
    for name, dataset in (data.get("datasets") or {}).items():
        if isinstance(dataset, dict):
            _translate_dataset(name, dataset, data.get("scale"))
    if isinstance(data.get("path"), dict):
        _translate_path(data["path"])
    if isinstance(data.get("train"), dict):
        _translate_train(data["train"])
    _translate_logger_and_val(data)
    return data
