"""The option file's structure: strict msgspec structs, unknown keys rejected.

Key names follow traiNNer-redux so option files move between the two.
Registered-type kwargs (network_g, losses, optim_g, scheduler) are plain dicts
here and checked against the chosen type's signature in `config.loader`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from traiNNer.automations.config import AutomationsOptions
from traiNNer.automations.dynamic_loss_scheduling import DynamicLossSchedulingConfig

PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]
UnitFloat = Annotated[float, Meta(ge=0, le=1)]


class StrictStruct(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for every option struct: unknown keys are errors."""


class DatasetOptions(StrictStruct):
    """One entry of `datasets` (train or val)."""

    type: Annotated[str, Meta(description="Registered dataset name, e.g. pairedimagedataset.")]
    name: str = ""
    dataroot_gt: str | list[str] | None = None
    dataroot_lq: str | list[str] | None = None
    lq_size: (
        Annotated[
            int, Meta(ge=4, description="Crop size on the LR side; HR crop is lq_size*scale.")
        ]
        | None
    ) = None
    use_hflip: bool = True
    use_rot: bool = True
    batch_size_per_gpu: PositiveInt = 8
    accum_iter: PositiveInt = 1
    num_worker_per_gpu: NonNegativeInt = 4
    dataset_enlarge_ratio: Literal["auto"] | PositiveInt = "auto"
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: PositiveInt = 2
    color: Literal["y"] | None = None
    filename_tmpl: str = "{}"
    io_backend: Annotated[
        dict[str, Any] | None,
        Meta(
            description="traiNNer-redux's image backend; {type: disk}, the default, is the one here."
        ),
    ] = None
    skip_corrupt_images: Annotated[
        bool,
        Meta(
            description="Every image is decoded once before training; false: a file that does "
            "not decode is an error, true: it (and its LR/HR partner) is left out with one "
            "warning listing them."
        ),
    ] = False


class NetworkOptions(StrictStruct):
    """Kept for the JSON schema; network_g is validated against the arch signature."""

    type: str


class PathOptions(StrictStruct):
    pretrain_network_g: str | None = None
    strict_load_g: bool = True
    param_key_g: str | None = None
    resume_state: str | None = None
    experiments_root: str | None = None
    results_root: str | None = None


class LossOptions(StrictStruct):
    """Only `type` and `loss_weight` are fixed; other keys go to the loss."""

    type: str
    loss_weight: float = 1.0


class TrainOptions(StrictStruct):
    total_iter: PositiveInt
    warmup_iter: Annotated[int, Meta(ge=-1)] = -1
    optim_g: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "AdamW", "lr": 1e-4})
    scheduler: dict[str, Any] | None = None
    losses: list[dict[str, Any]] = msgspec.field(
        default_factory=lambda: [{"type": "l1loss", "loss_weight": 1.0}]
    )
    ema_decay: Annotated[float, Meta(ge=0, lt=1)] = 0.0
    ema_update_after_step: NonNegativeInt = 0
    ema_power: Annotated[
        float,
        Meta(
            gt=0,
            description="EMA warm-up as traiNNer-redux (ema-pytorch) has it: after "
            "ema_update_after_step, the decay at step k is min(ema_decay, 1 - (1 + k)^-power); "
            "0.75 warms up over about 10k steps, the default 10 not at all.",
        ),
    ] = 10.0
    ema_switch_iter: Annotated[
        NonNegativeInt,
        Meta(
            description="Every this many iterations the EMA weights replace the trained ones (0: never)."
        ),
    ] = 0
    restart_scheduler: Annotated[
        bool,
        Meta(
            description="On resume, true builds the schedule from this file; false (as in "
            "traiNNer-redux) keeps the one the run was saved with."
        ),
    ] = False
    grad_clip: bool = False
    grad_clip_max_norm: Annotated[float, Meta(gt=0)] = 1.0
    max_nonfinite_steps: Annotated[
        int,
        Meta(ge=1, description="Stop with an error after this many non-finite losses in a row."),
    ] = 10
    # Mixture of augmentations (MoA), applied per batch to LR and HR together.
    use_moa: bool = False
    moa_augs: list[Literal["none", "mixup", "cutmix", "resizemix", "cutblur"]] = msgspec.field(
        default_factory=lambda: ["none", "mixup", "cutmix", "resizemix", "cutblur"]
    )
    moa_probs: list[UnitFloat] = msgspec.field(
        default_factory=lambda: [0.4, 0.084, 0.084, 0.084, 0.348]
    )
    moa_debug: Annotated[
        bool,
        Meta(
            description="Save each augmented batch before and after MoA to "
            "experiments/<name>/visualization/moa_debug, for a visual check."
        ),
    ] = False
    moa_debug_limit: Annotated[
        NonNegativeInt,
        Meta(description="moa_debug saves the first this many batches; 0: every batch."),
    ] = 100
    automations: AutomationsOptions | None = None
    # Accepted here as before; the loader moves it to automations.dynamic_loss_scheduling.
    dynamic_loss_scheduling: DynamicLossSchedulingConfig | None = None


class MetricOptions(StrictStruct):
    type: str
    crop_border: NonNegativeInt = 0
    test_y_channel: bool = False
    better: Literal["higher", "lower"] | None = None
    weights_path: Annotated[
        str | None,
        Meta(
            description="Learned metrics (lpips, dists, topiq): the metric's own weights file; "
            "null: the file of that name in pyiqa's cache (<torch hub dir>/pyiqa/). Never "
            "downloaded."
        ),
    ] = None
    backbone_weights_path: Annotated[
        str | None,
        Meta(
            description="lpips and dists: torchvision's ImageNet AlexNet / VGG16 weights; null: "
            "the file of that name in torchvision's cache (<torch hub dir>/checkpoints/). "
            "Never downloaded."
        ),
    ] = None

    def network_weights(self) -> dict[str, str]:
        """The weight-file keys that are set, as keyword arguments for the metric function."""
        given = {
            "weights_path": self.weights_path,
            "backbone_weights_path": self.backbone_weights_path,
        }
        return {key: value for key, value in given.items() if value is not None}


class ValOptions(StrictStruct):
    val_enabled: bool = True
    val_freq: PositiveInt = 1000
    save_img: bool = False
    tile_size: Annotated[int, Meta(ge=0)] = 0
    tile_overlap: NonNegativeInt = 16
    suffix: str | None = None
    metrics_enabled: bool = True
    metrics: dict[str, MetricOptions] = msgspec.field(default_factory=dict)


class LoggerOptions(StrictStruct):
    print_freq: PositiveInt = 100
    save_checkpoint_freq: PositiveInt = 1000
    save_checkpoint_format: Literal["safetensors", "pth"] = "safetensors"
    use_tb_logger: bool = True
    keep_last_states: Annotated[
        int, Meta(ge=0, description="Training states kept on disk; 0 keeps all.")
    ] = 0
    progress_bar: bool = True
    signal_trace: Annotated[
        bool,
        Meta(
            description="Write experiments/<name>/signals.jsonl: every step's losses, "
            "gradient norms and loss scale, and every validation's metrics, for "
            "scripts/automations/replay.py."
        ),
    ] = False


class DistParams(StrictStruct):
    backend: Literal["nccl", "gloo"] | None = None
    port: PositiveInt = 29500


class Options(StrictStruct):
    """Root of a training or test option file."""

    name: str
    scale: Annotated[int, Meta(ge=1, le=8)]
    num_gpu: Literal["auto"] | NonNegativeInt = "auto"
    manual_seed: int | None = None
    deterministic: bool = False
    use_amp: bool = False
    amp_bf16: bool = False
    use_channels_last: bool = False
    use_compile: bool = False
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = "default"
    fast_matmul: bool = False
    find_unused_parameters: Annotated[
        bool,
        Meta(
            description="DDP: allow parameters that get no gradient in a step (slower; only "
            "for networks with unused branches)."
        ),
    ] = False
    detect_anomaly: bool = False
    datasets: dict[str, DatasetOptions] = msgspec.field(default_factory=dict)
    network_g: dict[str, Any] = msgspec.field(default_factory=dict)
    path: PathOptions = msgspec.field(default_factory=PathOptions)
    train: TrainOptions | None = None
    val: ValOptions | None = None
    logger: LoggerOptions = msgspec.field(default_factory=LoggerOptions)
    dist_params: DistParams = msgspec.field(default_factory=DistParams)
