"""Mixture of augmentations (MoA) for super-resolution batches.

Yoo et al., "Rethinking Data Augmentation for Image Super-resolution" (CVPR 2020):
augmentations that destroy pixels hurt SR, while mixing whole images or regions of
them helps, mostly large models and real-world data. One augmentation is chosen per
batch with probabilities `moa_probs` over `moa_augs`, and it is applied to the LR
batch and the HR batch consistently: a region (top, left, height, width) on the LR
side is (top, left, height, width) x `scale` on the HR side.

- mixup: every sample is blended with a partner from the same batch by one factor
  drawn from Beta(mixup_alpha, mixup_alpha), the same for LR and HR.
- cutmix: a region of every sample is replaced by the same region of its partner.
- resizemix: the whole partner, shrunk to a random fraction of the size, is pasted
  into a region (LR and HR shrunk separately to matching sizes).
- cutblur: CutBlur mixes degraded and clean content of the same image so the model
  learns where (and how much) to restore. When the model's output is larger than its
  input, clean content can only enter the input at LR size, so the region (or,
  half of the time, everything outside it) of the LR input is replaced by the HR image
  box-filtered down by `scale`; the HR target stays as it is.
- none: the batch is unchanged.

Partners are the batch rolled by a random non-zero offset, so every sample gets a
different image and no index tensor has to be copied to the device. Mixing
augmentations need a batch of at least 2; with a single sample they are skipped.
All randomness comes from a seeded `random.Random`: no device value is read.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from traiNNer.utils.errors import ConfigError, did_you_mean

MoaName = Literal["none", "mixup", "cutmix", "resizemix", "cutblur"]
MOA_AUGS: tuple[str, ...] = ("none", "mixup", "cutmix", "resizemix", "cutblur")
MIXING_AUGS = frozenset({"mixup", "cutmix", "resizemix"})  # need a partner in the batch


def validate_moa(augs: Sequence[str], probs: Sequence[float]) -> None:
    """ConfigError naming `train.moa_augs` / `train.moa_probs` when they do not fit."""
    for name in augs:
        if name not in MOA_AUGS:
            raise ConfigError(
                f"train.moa_augs: unknown augmentation '{name}'{did_you_mean(name, MOA_AUGS)} "
                f"(accepted: {', '.join(MOA_AUGS)})"
            )
    if len(augs) != len(probs):
        raise ConfigError(
            f"train.moa_probs: has {len(probs)} entries but train.moa_augs has {len(augs)}; "
            "give one probability per augmentation"
        )
    if any(not math.isfinite(p) or p < 0 for p in probs):
        raise ConfigError(
            f"train.moa_probs: every probability must be finite and >= 0, got {list(probs)}"
        )
    if sum(probs) <= 0:
        raise ConfigError("train.moa_probs: the probabilities sum to 0; at least one must be > 0")


@dataclass(frozen=True)
class Region:
    """A rectangle in pixel coordinates."""

    top: int
    left: int
    height: int
    width: int

    def scaled(self, scale: int) -> Region:
        return Region(self.top * scale, self.left * scale, self.height * scale, self.width * scale)

    @property
    def rows(self) -> slice:
        return slice(self.top, self.top + self.height)

    @property
    def cols(self) -> slice:
        return slice(self.left, self.left + self.width)


class BatchAugment:
    """Applies one MoA augmentation per batch to LR and HR consistently.

    `__call__(lq, gt, apply_prob)` first decides with probability `apply_prob` (the
    `aug_prob` knob of the augmentation_scheduling automation; 1.0 without it) whether
    to augment at all, then draws the augmentation from `probs`.
    """

    def __init__(
        self,
        augs: Sequence[str],
        probs: Sequence[float],
        scale: int,
        *,
        seed: int | None = None,
        mixup_alpha: float = 1.2,
        cut_ratio: tuple[float, float] = (0.2, 0.7),
        resize_ratio: tuple[float, float] = (0.1, 0.8),
    ) -> None:
        validate_moa(augs, probs)
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.augs = list(augs)
        self.probs = [float(p) for p in probs]
        self.scale = scale
        self.mixup_alpha = mixup_alpha
        self.cut_ratio = cut_ratio
        self.resize_ratio = resize_ratio
        self.rng = random.Random(seed)
        # The last region used on the LR side (for debugging images and tests).
        self.last_region: Region | None = None

    def __call__(
        self, lq: Tensor, gt: Tensor, apply_prob: float = 1.0
    ) -> tuple[Tensor, Tensor, str]:
        self._check_shapes(lq, gt)
        self.last_region = None
        if apply_prob <= 0 or self.rng.random() >= apply_prob:
            return lq, gt, "none"
        name = self.rng.choices(self.augs, weights=self.probs)[0]
        if name in MIXING_AUGS and lq.shape[0] < 2:
            return lq, gt, "none"
        with torch.no_grad():
            if name == "mixup":
                lq, gt = self._mixup(lq, gt)
            elif name == "cutmix":
                lq, gt = self._cutmix(lq, gt)
            elif name == "resizemix":
                lq, gt = self._resizemix(lq, gt)
            elif name == "cutblur":
                lq = self._cutblur(lq, gt)
        return lq, gt, name

    # -- augmentations -------------------------------------------------------------

    def _partner_shift(self, batch: int) -> int:
        return self.rng.randint(1, batch - 1)

    def _mixup(self, lq: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
        weight = self.rng.betavariate(self.mixup_alpha, self.mixup_alpha)
        shift = self._partner_shift(lq.shape[0])
        mixed_lq = weight * lq + (1.0 - weight) * lq.roll(shift, dims=0)
        mixed_gt = weight * gt + (1.0 - weight) * gt.roll(shift, dims=0)
        return mixed_lq, mixed_gt

    def _cutmix(self, lq: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
        region = self._random_region(lq.shape[-2], lq.shape[-1], self.cut_ratio)
        shift = self._partner_shift(lq.shape[0])
        return self._paste(lq, lq.roll(shift, dims=0), region), self._paste(
            gt, gt.roll(shift, dims=0), region.scaled(self.scale)
        )

    def _resizemix(self, lq: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
        region = self._random_region(lq.shape[-2], lq.shape[-1], self.resize_ratio)
        shift = self._partner_shift(lq.shape[0])
        hr_region = region.scaled(self.scale)
        # Antialiased resampling with the same geometry on both sides, so the two
        # shrunken partners show the same content at LR and HR resolution.
        small_lq = F.interpolate(
            lq.roll(shift, dims=0),
            size=(region.height, region.width),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        small_gt = F.interpolate(
            gt.roll(shift, dims=0),
            size=(hr_region.height, hr_region.width),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        out_lq, out_gt = lq.clone(), gt.clone()
        out_lq[..., region.rows, region.cols] = small_lq
        out_gt[..., hr_region.rows, hr_region.cols] = small_gt
        return out_lq, out_gt

    def _cutblur(self, lq: Tensor, gt: Tensor) -> Tensor:
        clean = F.avg_pool2d(gt, self.scale) if self.scale > 1 else gt
        clean = clean.to(lq.dtype)
        region = self._random_region(lq.shape[-2], lq.shape[-1], self.cut_ratio)
        if self.rng.random() < 0.5:
            return self._paste(lq, clean, region)  # clean content inside the region
        return self._paste(clean, lq, region)  # degraded inside, clean outside

    # -- helpers -------------------------------------------------------------------

    def _random_region(self, height: int, width: int, ratio: tuple[float, float]) -> Region:
        fraction = self.rng.uniform(*ratio)
        cut_h = min(height, max(1, round(height * fraction)))
        cut_w = min(width, max(1, round(width * fraction)))
        top = self.rng.randint(0, height - cut_h)
        left = self.rng.randint(0, width - cut_w)
        self.last_region = Region(top, left, cut_h, cut_w)
        return self.last_region

    @staticmethod
    def _paste(base: Tensor, source: Tensor, region: Region) -> Tensor:
        out = base.clone()
        out[..., region.rows, region.cols] = source[..., region.rows, region.cols]
        return out

    def _check_shapes(self, lq: Tensor, gt: Tensor) -> None:
        expected = (lq.shape[-2] * self.scale, lq.shape[-1] * self.scale)
        if lq.dim() != 4 or gt.dim() != 4 or tuple(gt.shape[-2:]) != expected:
            raise ValueError(
                f"MoA needs NCHW batches with HR = LR x {self.scale}; got LR "
                f"{tuple(lq.shape)} and HR {tuple(gt.shape)}"
            )
        if lq.shape[:2] != gt.shape[:2]:
            raise ValueError(
                f"MoA needs LR and HR with the same batch and channels; got {tuple(lq.shape)} "
                f"and {tuple(gt.shape)}"
            )

    # -- resume --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {"version": version, "internal": list(internal), "gauss": gauss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate((state["version"], tuple(state["internal"]), state["gauss"]))
