"""Losses on the 2-D Fourier spectrum: FFT L1 and focal frequency loss."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from traiNNer.losses.fp32 import fp32_forward
from traiNNer.utils.errors import ConfigError, UserError
from traiNNer.utils.registry import LOSS_REGISTRY

FFTNorm = Literal["ortho", "backward", "forward"]


@LOSS_REGISTRY.register()
class FFTLoss(nn.Module):
    """L1 distance between the 2-D spectra of sr and gt.

    mode "complex" compares real and imaginary parts (phase matters), "amplitude"
    only the magnitudes. The default "ortho" norm keeps the loss's scale
    independent of the crop size. The half spectrum of the real FFT is used:
    the other half is its mirror and adds nothing.
    """

    def __init__(
        self, *, mode: Literal["complex", "amplitude"] = "complex", norm: FFTNorm = "ortho"
    ) -> None:
        super().__init__()
        self.mode = mode
        self.norm = norm

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        sr_spectrum = torch.fft.rfft2(sr, norm=self.norm)
        gt_spectrum = torch.fft.rfft2(gt, norm=self.norm)
        if self.mode == "amplitude":
            return F.l1_loss(sr_spectrum.abs(), gt_spectrum.abs())
        return F.l1_loss(torch.view_as_real(sr_spectrum), torch.view_as_real(gt_spectrum))


@LOSS_REGISTRY.register()
class FFLoss(nn.Module):
    """Focal frequency loss (Jiang et al., ICCV 2021), scaled by 50 as in traiNNer-redux.

    The squared spectrum distance |F_sr - F_gt|^2 is weighted by |F_sr - F_gt|^alpha,
    normalised to [0, 1] by its maximum per image and channel (over the whole batch
    with batch_matrix) and not back-propagated, so hard frequencies get the most
    attention. patch_factor splits each image into patch_factor^2 patches first;
    ave_spectrum (on by default, as traiNNer-redux) compares batch-averaged spectra;
    log_matrix uses log(1 + weight). The factor 50 lets traiNNer-redux's loss
    weights (its templates suggest 0.2) carry over.
    """

    SCALE = 50.0

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        patch_factor: int = 1,
        ave_spectrum: bool = True,
        log_matrix: bool = False,
        batch_matrix: bool = False,
    ) -> None:
        super().__init__()
        if not alpha >= 0:
            raise ConfigError(f"ffloss: alpha must be >= 0, got {alpha}")
        if patch_factor < 1:
            raise ConfigError(f"ffloss: patch_factor must be >= 1, got {patch_factor}")
        self.alpha = alpha
        self.patch_factor = patch_factor
        self.ave_spectrum = ave_spectrum
        self.log_matrix = log_matrix
        self.batch_matrix = batch_matrix

    def patch_spectra(self, image: Tensor) -> Tensor:
        """(N, C, H, W) -> complex spectra of its patches, (N, P, C, H/pf, W/pf)."""
        n, c, height, width = image.shape
        pf = self.patch_factor
        if height % pf or width % pf:
            raise UserError(
                f"ffloss: patch_factor {pf} must divide the image size, got {height}x{width} px"
            )
        patches = image.reshape(n, c, pf, height // pf, pf, width // pf)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(n, pf * pf, c, height // pf, -1)
        return torch.fft.fft2(patches, norm="ortho")

    @fp32_forward
    def forward(self, sr: Tensor, gt: Tensor) -> Tensor:
        sr_spectrum = self.patch_spectra(sr)
        gt_spectrum = self.patch_spectra(gt)
        if self.ave_spectrum:
            sr_spectrum = sr_spectrum.mean(0, keepdim=True)
            gt_spectrum = gt_spectrum.mean(0, keepdim=True)
        difference = sr_spectrum - gt_spectrum
        distance = difference.real.square() + difference.imag.square()

        with torch.no_grad():
            weight = distance.pow(self.alpha / 2)  # |difference|^alpha
            if self.log_matrix:
                weight = torch.log1p(weight)
            peak = weight.amax() if self.batch_matrix else weight.amax(dim=(-2, -1), keepdim=True)
            # Identical spectra have a zero peak; their weight is then 0, not NaN.
            weight = weight / peak.clamp_min(torch.finfo(weight.dtype).tiny)
        return self.SCALE * (weight * distance).mean()
