"""MoA batch augmentations: LR and HR stay consistent; choice follows the probabilities."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from tests.host_reads import host_reads_forbidden
from traiNNer.data.moa import BatchAugment, validate_moa
from traiNNer.utils.errors import ConfigError

SCALE = 2


def batch(n: int = 4, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random LR and its exact nearest-neighbour HR: any consistent edit keeps that link."""
    generator = torch.Generator().manual_seed(seed)
    lq = torch.rand(n, 3, size, size, generator=generator)
    return lq, F.interpolate(lq, scale_factor=SCALE, mode="nearest")


def only(name: str, seed: int = 0) -> BatchAugment:
    return BatchAugment([name], [1.0], SCALE, seed=seed)


def upscale(mask: torch.Tensor) -> torch.Tensor:
    return F.interpolate(mask.float(), scale_factor=SCALE, mode="nearest").bool()


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_regions_scale_by_scale(seed: int) -> None:
    lq, gt = batch(seed=seed)
    augment = only("cutmix", seed)
    out_lq, out_gt, name = augment(lq, gt)
    assert name == "cutmix"
    # The HR is still exactly the nearest upscale of the LR: the HR region is the LR
    # region times the scale, taken from the same partner.
    assert torch.equal(out_gt, F.interpolate(out_lq, scale_factor=SCALE, mode="nearest"))
    region = augment.last_region
    assert region is not None
    changed = (out_lq != lq).any(dim=1, keepdim=True)
    assert changed.any()
    assert not changed[..., : region.top, :].any() and not changed[..., :, : region.left].any()
    assert torch.equal((out_gt != gt).any(dim=1, keepdim=True), upscale(changed))


def smooth_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth content seen at LR and at HR resolution (one underlying image each)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(4, 3, 4, 4, generator=generator)
    lq = F.interpolate(coarse, size=(12, 12), mode="bilinear", align_corners=False)
    gt = F.interpolate(coarse, size=(24, 24), mode="bilinear", align_corners=False)
    return lq, gt


@pytest.mark.parametrize("seed", range(5))
def test_resizemix_pastes_matching_regions(seed: int) -> None:
    lq, gt = smooth_batch(seed)
    augment = only("resizemix", seed)
    out_lq, out_gt, name = augment(lq, gt)
    assert name == "resizemix"
    region = augment.last_region
    assert region is not None
    inside = torch.zeros_like(lq[:, :1], dtype=torch.bool)
    inside[..., region.rows, region.cols] = True
    assert torch.equal(out_lq[~inside.expand_as(lq)], lq[~inside.expand_as(lq)])
    assert torch.equal(out_gt[~upscale(inside).expand_as(gt)], gt[~upscale(inside).expand_as(gt)])
    # Inside, the LR patch shows the HR patch's content at LR resolution: it matches the
    # box-downscaled HR patch no worse than the original pair matches.
    hr = region.scaled(SCALE)
    patch_hr = out_gt[..., hr.rows, hr.cols]
    patch_lq = out_lq[..., region.rows, region.cols]
    mismatch = (F.avg_pool2d(patch_hr, SCALE) - patch_lq).abs()
    pair_mismatch = (F.avg_pool2d(gt, SCALE) - lq).abs()
    assert mismatch.max() <= pair_mismatch.max() and mismatch.mean() < 0.03
    assert not torch.equal(patch_lq, lq[..., region.rows, region.cols])


@pytest.mark.parametrize("seed", range(8))
def test_cutblur_puts_the_box_downscaled_hr_into_the_lr_region(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    gt = torch.rand(2, 3, 24, 24, generator=generator)
    lq = torch.rand(2, 3, 12, 12, generator=generator)  # an unrelated degradation
    augment = only("cutblur", seed)
    out_lq, out_gt, name = augment(lq, gt)
    assert name == "cutblur"
    assert torch.equal(out_gt, gt)  # the target never changes
    region = augment.last_region
    assert region is not None
    inside = torch.zeros(12, 12, dtype=torch.bool)
    inside[region.rows, region.cols] = True
    clean = F.avg_pool2d(gt, SCALE)  # LR pixel (i, j) <- mean of HR block (2i.., 2j..)
    from_clean = torch.isclose(out_lq, clean).all(dim=(0, 1))
    from_lq = torch.isclose(out_lq, lq).all(dim=(0, 1))
    assert torch.equal(from_clean | from_lq, torch.ones(12, 12, dtype=torch.bool))
    assert torch.equal(from_clean, inside) or torch.equal(from_clean, ~inside)


def test_cutblur_uses_both_inside_and_outside() -> None:
    generator = torch.Generator().manual_seed(0)
    gt = torch.rand(1, 3, 16, 16, generator=generator)
    lq = torch.rand(1, 3, 8, 8, generator=generator)
    augment = only("cutblur", 0)
    kinds = set()
    for _ in range(20):
        out_lq, _, _ = augment(lq, gt)
        region = augment.last_region
        assert region is not None
        clean_inside = torch.allclose(
            out_lq[..., region.rows, region.cols],
            F.avg_pool2d(gt, SCALE)[..., region.rows, region.cols],
        )
        kinds.add(clean_inside)
    assert kinds == {True, False}


def test_mixup_of_identical_images_is_identity() -> None:
    lq = torch.rand(1, 3, 8, 8).expand(4, -1, -1, -1).clone()
    gt = F.interpolate(lq, scale_factor=SCALE, mode="nearest")
    out_lq, out_gt, name = only("mixup")(lq, gt)
    assert name == "mixup"
    assert torch.allclose(out_lq, lq) and torch.allclose(out_gt, gt)


def test_mixup_blends_lr_and_hr_with_the_same_weight_and_partner() -> None:
    values = torch.tensor([0.0, 0.2, 0.6, 1.0])
    lq = values.view(4, 1, 1, 1).expand(4, 3, 6, 6).clone()
    gt = values.view(4, 1, 1, 1).expand(4, 3, 12, 12).clone()
    out_lq, out_gt, _ = only("mixup", seed=3)(lq, gt)
    assert torch.allclose(out_lq.mean(dim=(1, 2, 3)), out_gt.mean(dim=(1, 2, 3)))
    assert not torch.allclose(out_lq, lq)
    # A convex blend: every sample stays within the batch's range.
    assert out_lq.min() >= 0.0 and out_lq.max() <= 1.0


@pytest.mark.parametrize("name", ["mixup", "cutmix", "resizemix"])
def test_mixing_needs_a_batch_larger_than_one(name: str) -> None:
    lq, gt = batch(n=1)
    out_lq, out_gt, applied = only(name)(lq, gt)
    assert applied == "none" and out_lq is lq and out_gt is gt


def test_apply_prob_zero_never_augments_and_probs_drive_the_choice() -> None:
    lq, gt = batch(n=2, size=4)
    augment = BatchAugment(["none", "mixup", "cutblur"], [0.2, 0.3, 0.5], SCALE, seed=1)
    assert {augment(lq, gt, apply_prob=0.0)[2] for _ in range(50)} == {"none"}
    counts = Counter(augment(lq, gt, apply_prob=1.0)[2] for _ in range(1000))
    assert counts["mixup"] == pytest.approx(300, abs=60)
    assert counts["cutblur"] == pytest.approx(500, abs=60)
    half = Counter(augment(lq, gt, apply_prob=0.5)[2] for _ in range(1000))
    assert half["none"] == pytest.approx(500 + 0.5 * 200, abs=60)


def test_same_seed_same_augmentations_and_state_round_trip() -> None:
    lq, gt = batch()
    first = BatchAugment(["mixup", "cutmix", "resizemix", "cutblur"], [1, 1, 1, 1], SCALE, seed=5)
    second = BatchAugment(["mixup", "cutmix", "resizemix", "cutblur"], [1, 1, 1, 1], SCALE, seed=5)
    for _ in range(5):
        a, b = first(lq, gt), second(lq, gt)
        assert a[2] == b[2] and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    state = first.state_dict()
    expected = [first(lq, gt) for _ in range(5)]
    resumed = BatchAugment(["mixup", "cutmix", "resizemix", "cutblur"], [1, 1, 1, 1], SCALE)
    resumed.load_state_dict(state)
    for want in expected:
        got = resumed(lq, gt)
        assert got[2] == want[2] and torch.equal(got[0], want[0])


def test_augmenting_reads_no_device_value() -> None:
    lq, gt = batch()
    augment = BatchAugment(["mixup", "cutmix", "resizemix", "cutblur"], [1, 1, 1, 1], SCALE, seed=2)
    with host_reads_forbidden():
        names = {augment(lq, gt)[2] for _ in range(30)}
    assert names == {"mixup", "cutmix", "resizemix", "cutblur"}


def test_shape_mismatch_is_reported() -> None:
    lq, gt = batch()
    with pytest.raises(ValueError, match="HR = LR x 3"):
        BatchAugment(["mixup"], [1.0], 3)(lq, gt)


@pytest.mark.parametrize(
    ("augs", "probs", "message"),
    [
        (["mixup", "cutmix"], [1.0], r"train\.moa_probs: has 1 entries but train\.moa_augs has 2"),
        (["mixup"], [0.0], r"train\.moa_probs: .*sum to 0"),
        (["mixup"], [-1.0], r"train\.moa_probs: .*>= 0"),
        (["mixupp"], [1.0], r"train\.moa_augs: unknown augmentation 'mixupp'; did you mean mixup"),
    ],
)
def test_validation_names_the_key(augs: list[str], probs: list[float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_moa(augs, probs)
