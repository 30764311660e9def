"""SRModel: a single generator trained with pixel/structural/perceptual losses."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torchvision.utils import make_grid

from traiNNer.automations.config import enabled_automations
from traiNNer.automations.dynamic_loss_scheduling import DynamicLossSchedulingConfig
from traiNNer.config.schema import Options
from traiNNer.data.image_io import write_image
from traiNNer.data.moa import BatchAugment
from traiNNer.data.resize import bicubic_upscale
from traiNNer.losses import build_loss
from traiNNer.losses.dynamic_loss_scheduling import UncertaintyWeighting
from traiNNer.models.base_model import BaseModel
from traiNNer.models.precision import autocast
from traiNNer.schedulers import ReduceLROnPlateau
from traiNNer.training.knobs import Knobs, loss_log_name
from traiNNer.utils.checkpoint import (
    arch_text,
    describe_metadata,
    fit_state_dict,
    load_network,
    network_metadata,
    save_network,
)
from traiNNer.utils.dist import DistInfo
from traiNNer.utils.errors import CheckpointError, UserError
from traiNNer.utils.registry import ARCH_REGISTRY, METRIC_REGISTRY
from traiNNer.utils.tiling import tiled_forward

DEFAULT_OOM_TILE = 256

logger = logging.getLogger(__name__)


def build_network(type_name: str, scale: int, kwargs: dict[str, Any]) -> nn.Module:
    """Instantiate a registered arch; `scale` is injected as in traiNNer-redux."""
    import traiNNer.archs  # noqa: F401  (fills the registry)

    return ARCH_REGISTRY.get(type_name, "network_g.type")(scale=scale, **kwargs)


class LossTerm:
    """One configured loss: the module, its weight and whether it targets bicubic LR."""

    def __init__(self, name: str, module: nn.Module, weight: float) -> None:
        self.name = name
        self.module = module
        self.weight = weight
        # traiNNer-redux meaning of a negative weight: compare with the bicubic upscale
        # of the LR (keeps outputs close to the input), with the weight's magnitude.
        self.targets_lq = weight < 0
        # ldlloss also compares with the EMA model's output (a third argument).
        self.needs_ema_output = bool(getattr(module, "needs_ema_output", False))


class SRModel(BaseModel):
    def __init__(self, opt: Options, device: torch.device, knobs: Knobs, dist: DistInfo) -> None:
        super().__init__(opt, device, knobs, dist)
        arch = dict(opt.network_g)
        self.arch_type: str = arch.pop("type")
        self.arch_kwargs: dict[str, Any] = arch
        net = build_network(self.arch_type, opt.scale, self.arch_kwargs).to(device)
        if opt.path.pretrain_network_g:
            self.load_pretrained(net, opt.path.pretrain_network_g)
        if opt.use_channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net_g = net
        self.loss_terms: list[LossTerm] = []
        # Learned loss weights (dynamic_loss_scheduling mode: uncertainty).
        self.learned_weights: UncertaintyWeighting | None = None
        self.batch_augment: BatchAugment | None = None
        self._good_state: dict[str, Any] | None = None
        # Set by the trainer when train.moa_debug is on.
        self.moa_debug_dir: Path | None = None
        self._moa_debug_batches = 0

    # ----------------------------------------------------------------- setup
    @property
    def network_label(self) -> str:
        """'compact x2': the network the options build, as messages name it."""
        return f"{self.arch_type} x{self.opt.scale}"

    def load_pretrained(self, net: nn.Module, path: str) -> None:
        """path.pretrain_network_g into `net`; a file that does not fit is one line."""
        strict = self.opt.path.strict_load_g
        state, metadata = load_network(path, self.opt.path.param_key_g)
        fitted, warning = fit_state_dict(
            net.state_dict(),
            state,
            strict=strict,
            where=f"path.pretrain_network_g: {path}",
            built=self.network_label,
            saved_by=describe_metadata(metadata),
        )
        net.load_state_dict(fitted, strict=strict)
        if warning:
            logger.warning(warning)

    def setup_training(self, seed: int) -> None:
        train = self.train_opt
        taken: set[str] = set()
        for entry in train.losses:
            kwargs = dict(entry)
            type_name, weight = kwargs.pop("type"), kwargs.pop("loss_weight")
            if weight == 0:
                continue
            module = build_loss(type_name, kwargs).to(self.device)
            self.loss_terms.append(LossTerm(loss_log_name(type_name, taken), module, weight))
        extra_groups: list[dict[str, Any]] = []
        weighting = enabled_automations(train.automations).get("dynamic_loss_scheduling")
        if isinstance(weighting, DynamicLossSchedulingConfig) and weighting.mode == "uncertainty":
            weights = {term.name: term.weight for term in self.loss_terms}
            self.learned_weights = UncertaintyWeighting(weighting, weights, self.device)
            extra_groups.append(self.learned_weights.optimizer_param_group())
        if train.use_moa:
            self.batch_augment = BatchAugment(
                train.moa_augs, train.moa_probs, self.opt.scale, seed=seed
            )
        if self.dist.enabled:
            # No buffer sync in forward: it is a collective inside forward, which a rank
            # that ran out of memory mid-step would miss (see BaseModel._reduce_gradients).
            self.net_g = DistributedDataParallel(
                self.net_g,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                forward_sync_buffers=False,
                find_unused_parameters=self.opt.find_unused_parameters,
            )
        if self.opt.use_compile:
            mode = None if self.opt.compile_mode == "default" else self.opt.compile_mode
            self.net_g = torch.compile(self.net_g, mode=mode)  # type: ignore[assignment]
        self.setup_optimization(extra_groups)

    # --------------------------------------------------------------- losses
    def prepare_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.batch_augment is None or self.knobs.aug_prob <= 0:
            return batch
        lq, gt, name = self.batch_augment(batch["lq"], batch["gt"], self.knobs.aug_prob)
        limit = self.opt.train.moa_debug_limit if self.opt.train is not None else 0
        if self.moa_debug_dir is not None and (limit == 0 or self._moa_debug_batches < limit):
            # As traiNNer-redux names them: each batch before and after its augmentation.
            self._moa_debug_batches += 1
            prefix = self.moa_debug_dir / f"{self._moa_debug_batches:06d}"
            for label, images in (
                ("preauglq", batch["lq"]),
                ("preauggt", batch["gt"]),
                (f"postaug_{name}_lqfinal", lq),
                (f"postaug_{name}_gtfinal", gt),
            ):
                write_image(make_grid(images.float(), padding=0), f"{prefix}_{label}.png")
        return {**batch, "lq": lq, "gt": gt}

    def compute_losses(
        self, chunk: dict[str, torch.Tensor], iteration: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        lq, gt = chunk["lq"], chunk["gt"]
        if self.opt.use_channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
        sr = self.net_g(lq)
        sr_ema = None
        if self.ema is not None and any(t.needs_ema_output for t in self.loss_terms):
            with torch.no_grad():
                sr_ema = self.ema.net(lq).float()
        # Losses run outside autocast in fp32: SSIM/FFT terms are not fp16-safe.
        with torch.autocast(self.device.type, enabled=False):
            sr = sr.float()
            lq_up = (
                bicubic_upscale(lq.float(), self.opt.scale)
                if any(t.targets_lq for t in self.loss_terms)
                else None
            )
            losses = {
                term.name: term.module(
                    sr,
                    lq_up if term.targets_lq else gt,
                    *([sr_ema] if term.needs_ema_output else []),
                )
                for term in self.loss_terms
            }
            if self.learned_weights is not None:
                total = self.learned_weights.weighted_sum(losses)
            else:
                # The loss_weights knob: the option file's weights unless
                # dynamic_loss_scheduling moved them.
                weights = self.knobs.loss_weights
                total = sum(
                    abs(weights.get(t.name, t.weight)) * losses[t.name] for t in self.loss_terms
                )
        assert isinstance(total, torch.Tensor)
        return total, {name: value.detach() for name, value in losses.items()}

    def after_step(self, iteration: int, losses: dict[str, torch.Tensor]) -> None:
        if self.learned_weights is not None:
            self.learned_weights.observe(iteration, losses)

    def learned_loss_weights(self) -> dict[str, float]:
        """The learned effective weights (uncertainty mode; reads the device), else {}."""
        return self.learned_weights.current_weights() if self.learned_weights else {}

    # ------------------------------------------------------------ inference
    @property
    def inference_net(self) -> nn.Module:
        return self.ema.net if self.ema is not None else self.bare_net_g

    @torch.no_grad()
    def infer(self, lq: torch.Tensor, tile_size: int = 0) -> torch.Tensor:
        """The output for `lq`, tiled when `tile_size` > 0 (overlap from val.tile_overlap)."""
        net = self.inference_net
        was_training = net.training
        net.eval()
        lq = lq.to(self.device)
        if self.opt.use_channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)

        def forward(x: torch.Tensor) -> torch.Tensor:
            with autocast(self.device, self.precision):
                return net(x)

        try:
            if tile_size > 0:
                overlap = self.opt.val.tile_overlap if self.opt.val is not None else 16
                out = tiled_forward(forward, lq, self.opt.scale, tile_size, overlap)
            else:
                out = forward(lq)
        finally:
            net.train(was_training)
        return out.float().clamp_(0, 1)

    def validation(
        self,
        loader: DataLoader,
        dataset_name: str,
        iteration: int,
        visualization_dir: Path | None,
        on_oom: Callable[[], bool] | None = None,
        image_callback: Callable[[str, torch.Tensor], None] | None = None,
        image_suffix: str | None = None,
    ) -> dict[str, float]:
        """Mean of each configured metric over the set; images saved when asked.

        Saved images are `<name>_<suffix>.png`; the suffix defaults to `val.suffix`
        or the iteration, and an empty suffix gives `<name>.png`.
        """
        assert self.opt.val is not None
        val = self.opt.val
        sums: dict[str, float] = dict.fromkeys(val.metrics, 0.0)
        count = 0
        self.optimizer_eval_mode()
        try:
            for item in loader:
                lq = item["lq"]
                tile = val.tile_size or (DEFAULT_OOM_TILE if self.knobs.val_tiled else 0)
                try:
                    sr = self.infer(lq, tile)
                except torch.OutOfMemoryError:
                    release_memory(self.device)
                    if on_oom is None or not on_oom():
                        raise
                    sr = self.infer(lq, val.tile_size or DEFAULT_OOM_TILE)
                image_name = Path(item["lq_path"][0]).stem
                if "gt" in item and val.metrics_enabled:
                    gt = item["gt"].to(sr.device)
                    for name, metric in val.metrics.items():
                        fn = METRIC_REGISTRY.get(metric.type)
                        sums[name] += fn(
                            sr[0],
                            gt[0],
                            crop_border=metric.crop_border,
                            test_y_channel=metric.test_y_channel,
                            **metric.network_weights(),
                        )
                if visualization_dir is not None and val.save_img:
                    suffix = image_suffix if image_suffix is not None else val.suffix
                    suffix = str(iteration) if suffix is None else suffix
                    file_name = f"{image_name}_{suffix}.png" if suffix else f"{image_name}.png"
                    target = visualization_dir / dataset_name / file_name
                    write_image(sr[0], target)
                if image_callback is not None and count < 2:
                    image_callback(f"{dataset_name}/{image_name}", sr[0])
                count += 1
        finally:
            self.optimizer_train_mode()
        if count == 0:
            raise UserError(f"datasets.{dataset_name}: validation set has no images")
        return {name: total / count for name, total in sums.items()}

    def feed_plateau_schedule(self, metrics: dict[str, float]) -> None:
        """`scheduler: {type: ReduceLROnPlateau}` is driven by a validation metric."""
        if not isinstance(self.schedule, ReduceLROnPlateau):
            return
        assert self.opt.val is not None
        monitor = self.schedule.monitor or next(iter(self.opt.val.metrics), None)
        if monitor is None or monitor not in metrics:
            raise UserError(
                f"train.scheduler.monitor: metric '{monitor}' is not among the validation "
                f"metrics ({', '.join(k for k in metrics if '/' not in k)})"
            )
        self.schedule.step_metric(metrics[monitor])

    # ----------------------------------------------------- good-state snapshots
    def snapshot_good_state(self) -> None:
        """Remember a state known to be finite (the precision automation asks)."""
        self._good_state = self.snapshot()

    def restore_good_state(self) -> bool:
        """Go back to the last good state if the weights or the optimizer state hold a
        non-finite value (the non-finite counters keep counting); True if it did."""
        if self._good_state is None or self.state_is_finite():
            return False
        self.load_state_dict(self._good_state, keep_counters=True)
        return True

    def state_is_finite(self) -> bool:
        """Every weight and every optimizer state tensor is finite (one host read)."""
        tensors = [p.detach() for p in self.bare_net_g.parameters()]
        if self.optimizer is not None:
            for state in self.optimizer.state.values():
                tensors += [
                    v for v in state.values() if torch.is_tensor(v) and v.is_floating_point()
                ]
        flags = torch.stack([t.isfinite().all() for t in tensors])
        return bool(flags.all())

    # -------------------------------------------------------------- saving
    def save_network(self, models_dir: Path, label: str | int) -> Path:
        """Save the weights users run (EMA when enabled) with arch metadata."""
        self.optimizer_eval_mode()
        try:
            metadata = network_metadata(self.arch_type, self.opt.scale, self.arch_kwargs)
            return save_network(
                self.inference_net.state_dict(),
                models_dir / f"net_g_{label}",
                metadata,
                self.opt.logger.save_checkpoint_format,
            )
        finally:
            self.optimizer_train_mode()

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "learned_loss_weights": (
                self.learned_weights.state_dict() if self.learned_weights is not None else None
            ),
            "arch": json.dumps({"type": self.arch_type, **self.arch_kwargs}, sort_keys=True),
            "scale": self.opt.scale,
        }

    def check_training_state(
        self, state: dict[str, Any], where: str = "the training state"
    ) -> None:
        """Refuse, in one line naming `where`, a model state saved for another network
        (network_g, scale, or weights of other shapes) than the options build."""
        saved = json.loads(state["arch"])
        current = json.loads(json.dumps({"type": self.arch_type, **self.arch_kwargs}))
        scale = state.get("scale", self.opt.scale)  # states before the scale was saved
        if saved != current or scale != self.opt.scale:
            raise CheckpointError(
                f"{where} was saved by {arch_text(saved, scale)}; the option file builds "
                f"{arch_text(current, self.opt.scale)}: network_g and scale must stay as "
                "they were to resume (path.pretrain_network_g starts from its weights instead)"
            )
        fit_state_dict(
            self.bare_net_g.state_dict(),
            state["net_g"],
            strict=True,
            where=where,
            built=self.network_label,
        )

    def load_state_dict(self, state: dict[str, Any], *, keep_counters: bool = False) -> None:
        self.check_training_state(state)
        super().load_state_dict(state, keep_counters=keep_counters)
        learned = state.get("learned_loss_weights")
        if self.learned_weights is not None and learned is not None:
            self.learned_weights.load_state_dict(learned)


def release_memory(device: torch.device) -> None:
    """Give cached blocks back after an OOM so a retry can succeed."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
