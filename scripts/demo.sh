#!/usr/bin/env bash
# One command for a newcomer: set up, build the demo dataset, train ParagonSR2 Nano 2x on
# the CPU (or GPU), then compare its validation PSNR with bicubic upscaling.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh "demo,optimizers"
opt=options/train/ParagonSR2/2x_ParagonSR2_Nano_demo_cpu.yml
.venv/bin/python scripts/prepare_demo_dataset.py --root datasets/demo --scale 2
start=$(date +%s)
.venv/bin/python train.py -opt "$opt"
.venv/bin/python scripts/compare_bicubic.py -opt "$opt"
echo "Demo wall time: $(( $(date +%s) - start )) s"
