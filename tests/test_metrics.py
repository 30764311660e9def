"""Validation metrics against analytic values and scikit-image's reference implementations."""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import Tensor

from traiNNer.metrics import (
    METRIC_REGISTRY,
    calculate_psnr,
    calculate_ssim,
    metric_better,
    rgb_to_y,
)
from traiNNer.utils.errors import UserError

# BT.601 studio-range luma, written out independently of the implementation.
LUMA = np.array([65.481, 128.553, 24.966]) / 255.0


def random_pair(height: int = 40, width: int = 36, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    gt = torch.rand(3, height, width, generator=generator)
    sr = (gt + 0.08 * torch.randn(3, height, width, generator=generator)).clamp(0, 1)
    return sr, gt


def as_uint8_hwc(img: Tensor) -> np.ndarray:
    """The 8-bit image a saver would write."""
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def luma_255(img: np.ndarray) -> np.ndarray:
    return 16.0 + img.astype(np.float64) @ LUMA


def skimage_ssim(sr: np.ndarray, gt: np.ndarray, channel_axis: int | None) -> float:
    return cast(
        float,
        structural_similarity(
            sr.astype(np.float64),
            gt.astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=channel_axis,
        ),
    )


def test_registered_under_the_traiNNer_redux_names_with_direction() -> None:
    assert METRIC_REGISTRY.get("calculate_psnr") is calculate_psnr
    assert METRIC_REGISTRY.get("calculate_ssim") is calculate_ssim
    assert metric_better(calculate_psnr) == "higher"
    assert metric_better(calculate_ssim) == "higher"
    assert calculate_psnr.better == "higher"  # pyright: ignore[reportFunctionMemberAccess]


@pytest.mark.parametrize(("level", "offset"), [(100, 10), (20, 1), (200, -37)])
def test_psnr_of_a_constant_offset_is_analytic(level: int, offset: int) -> None:
    gt = torch.full((3, 16, 16), level / 255)
    sr = torch.full((3, 16, 16), (level + offset) / 255)
    assert calculate_psnr(sr, gt) == pytest.approx(20 * math.log10(255 / abs(offset)), abs=1e-9)


def test_psnr_matches_skimage() -> None:
    sr, gt = random_pair()
    expected = peak_signal_noise_ratio(as_uint8_hwc(gt), as_uint8_hwc(sr), data_range=255)
    assert calculate_psnr(sr, gt) == pytest.approx(expected, abs=1e-9)


def test_psnr_on_y_matches_skimage_on_luma() -> None:
    sr, gt = random_pair(seed=3)
    expected = peak_signal_noise_ratio(
        luma_255(as_uint8_hwc(gt)), luma_255(as_uint8_hwc(sr)), data_range=255
    )
    assert calculate_psnr(sr, gt, test_y_channel=True) == pytest.approx(expected, abs=1e-9)


def test_psnr_on_y_of_grey_against_black_is_analytic() -> None:
    grey = 90
    gt = torch.zeros(3, 12, 12)
    sr = torch.full((3, 12, 12), grey / 255)
    luma_difference = grey * LUMA.sum()  # 0-255 scale: 90 * 219/255
    expected = 20 * math.log10(255 / luma_difference)
    assert calculate_psnr(sr, gt, test_y_channel=True) == pytest.approx(expected, abs=1e-9)
    assert calculate_psnr(sr, gt) == pytest.approx(20 * math.log10(255 / grey), abs=1e-9)


@pytest.mark.parametrize("y", [False, True])
def test_ssim_matches_skimage(y: bool) -> None:
    sr, gt = random_pair(seed=5)
    sr_u8, gt_u8 = as_uint8_hwc(sr), as_uint8_hwc(gt)
    if y:
        expected = skimage_ssim(luma_255(sr_u8), luma_255(gt_u8), channel_axis=None)
    else:
        expected = skimage_ssim(sr_u8, gt_u8, channel_axis=2)
    assert calculate_ssim(sr, gt, test_y_channel=y) == pytest.approx(expected, abs=1e-7)


def test_ssim_of_a_grey_image_matches_skimage() -> None:
    sr, gt = random_pair(seed=7)
    expected = skimage_ssim(as_uint8_hwc(sr[:1])[..., 0], as_uint8_hwc(gt[:1])[..., 0], None)
    assert calculate_ssim(sr[:1], gt[:1]) == pytest.approx(expected, abs=1e-7)


def test_crop_border_matches_skimage_on_the_cropped_images() -> None:
    sr, gt = random_pair(seed=9)
    border = 4
    sr_u8 = as_uint8_hwc(sr)[border:-border, border:-border]
    gt_u8 = as_uint8_hwc(gt)[border:-border, border:-border]
    assert calculate_psnr(sr, gt, crop_border=border) == pytest.approx(
        peak_signal_noise_ratio(gt_u8, sr_u8, data_range=255), abs=1e-9
    )
    assert calculate_ssim(sr, gt, crop_border=border) == pytest.approx(
        skimage_ssim(sr_u8, gt_u8, channel_axis=2), abs=1e-7
    )


def test_crop_border_hides_errors_in_the_border_only() -> None:
    _, gt = random_pair(seed=11)
    sr = gt.clone()
    sr[:, :, :3] = 1 - sr[:, :, :3]  # damage the three leftmost columns
    assert calculate_psnr(sr, gt, crop_border=3) == math.inf
    assert calculate_ssim(sr, gt, crop_border=3) == pytest.approx(1.0, abs=1e-12)
    assert calculate_psnr(sr, gt, crop_border=2) < 40
    # The damaged column sits at the edge of the few windows that see it.
    assert calculate_ssim(sr, gt, crop_border=2) < 1 - 1e-5


def test_identical_images_give_inf_psnr_and_ssim_one() -> None:
    _, gt = random_pair(seed=13)
    assert calculate_psnr(gt, gt.clone()) == math.inf
    assert calculate_ssim(gt, gt.clone()) == pytest.approx(1.0, abs=1e-12)


def test_differences_below_half_an_8bit_step_vanish() -> None:
    gt = torch.full((3, 16, 16), 128 / 255)
    assert calculate_psnr(gt + 0.4 / 255, gt) == math.inf
    assert calculate_psnr(gt + 0.6 / 255, gt) == pytest.approx(20 * math.log10(255), abs=1e-9)


def test_batched_single_image_equals_chw() -> None:
    sr, gt = random_pair(seed=15)
    assert calculate_psnr(sr[None], gt[None]) == calculate_psnr(sr, gt)
    assert calculate_ssim(sr[None], gt) == calculate_ssim(sr, gt)


def test_rgb_to_y_of_known_colours() -> None:
    colours = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    image = colours.T.reshape(3, 1, 4)
    luma = rgb_to_y(image) * 255
    assert luma.shape == (1, 1, 4)
    expected = torch.tensor([16.0, 235.0, 16.0 + 65.481, 16.0 + 24.966])
    torch.testing.assert_close(luma.flatten(), expected, rtol=0, atol=1e-4)
    batched = rgb_to_y(image[None].repeat(2, 1, 1, 1))
    assert batched.shape == (2, 1, 1, 4)


def test_rgb_to_y_needs_three_channels() -> None:
    with pytest.raises(UserError, match="3 channels"):
        rgb_to_y(torch.zeros(4, 8, 8))


def test_user_errors_name_the_problem() -> None:
    sr, gt = random_pair()
    with pytest.raises(UserError, match=r"calculate_psnr: sr and gt sizes differ"):
        calculate_psnr(sr[:, :-1], gt)
    with pytest.raises(
        UserError, match=r"calculate_ssim: crop_border 18 leaves nothing of a 40x36"
    ):
        calculate_ssim(sr, gt, crop_border=18)
    with pytest.raises(UserError, match=r"calculate_psnr: sr must be CHW or 1xCHW"):
        calculate_psnr(sr[None].repeat(2, 1, 1, 1), gt)
    with pytest.raises(UserError, match=r"needs images of at least 11x11 px after crop_border"):
        calculate_ssim(sr, gt, crop_border=13)
