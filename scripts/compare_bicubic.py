"""Compare a trained model's validation PSNR/SSIM with plain bicubic upscaling.

`python scripts/compare_bicubic.py -opt <train option file>` loads
experiments/<name>/models/net_g_latest.*, runs every validation set and prints
both figures; exits 1 when the model does not beat bicubic on PSNR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from traiNNer.config.loader import load_options
from traiNNer.data import build_dataset
from traiNNer.data.loader import build_dataloader
from traiNNer.data.resize import bicubic_upscale
from traiNNer.models.sr_model import SRModel
from traiNNer.training.knobs import Knobs
from traiNNer.utils.checkpoint import load_network
from traiNNer.utils.dist import DistInfo
from traiNNer.utils.errors import UserError
from traiNNer.utils.experiment import ExperimentPaths
from traiNNer.utils.registry import METRIC_REGISTRY


def latest_weights(models_dir: Path) -> Path:
    for suffix in (".safetensors", ".pth"):
        path = models_dir / f"net_g_latest{suffix}"
        if path.is_file():
            return path
    raise UserError(f"{models_dir}: no net_g_latest weights; train first")


@torch.no_grad()
def compare(option_file: str) -> bool:
    opt = load_options(option_file, for_training=True)
    device = torch.device("cpu")
    model = SRModel(opt, device, Knobs(), DistInfo())
    state, _ = load_network(latest_weights(ExperimentPaths.for_options(opt).models))
    model.bare_net_g.load_state_dict(state)
    psnr = METRIC_REGISTRY.get("calculate_psnr")
    ssim = METRIC_REGISTRY.get("calculate_ssim")
    assert opt.val is not None
    crop = next(iter(opt.val.metrics.values())).crop_border if opt.val.metrics else 0
    beats = True
    for key, set_opt in opt.datasets.items():
        if key == "train":
            continue
        loader = build_dataloader(
            build_dataset(set_opt, opt.scale, "val", key=key),
            set_opt,
            "val",
            seed=None,
            use_cuda=False,
            key=key,
        )
        sums = {"model_psnr": 0.0, "bicubic_psnr": 0.0, "model_ssim": 0.0, "bicubic_ssim": 0.0}
        count = 0
        for item in loader:
            gt = item["gt"][0]
            sr = model.infer(item["lq"])[0]
            bicubic = bicubic_upscale(item["lq"], opt.scale)[0].clamp(0, 1)
            sums["model_psnr"] += psnr(sr, gt, crop_border=crop)
            sums["bicubic_psnr"] += psnr(bicubic, gt, crop_border=crop)
            sums["model_ssim"] += ssim(sr, gt, crop_border=crop)
            sums["bicubic_ssim"] += ssim(bicubic, gt, crop_border=crop)
            count += 1
        mean = {k: v / count for k, v in sums.items()}
        print(
            f"{set_opt.name or key}: model PSNR {mean['model_psnr']:.2f} dB / SSIM "
            f"{mean['model_ssim']:.4f}  vs  bicubic PSNR {mean['bicubic_psnr']:.2f} dB / SSIM "
            f"{mean['bicubic_ssim']:.4f}  ({mean['model_psnr'] - mean['bicubic_psnr']:+.2f} dB)"
        )
        beats = beats and mean["model_psnr"] > mean["bicubic_psnr"]
    return beats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-opt", required=True)
    args = parser.parse_args(argv)
    try:
        beats = compare(args.opt)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    if not beats:
        print("The model does not beat bicubic yet: train longer.")
    return 0 if beats else 1


if __name__ == "__main__":
    sys.exit(main())
