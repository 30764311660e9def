"""Build the demo dataset from scikit-image's bundled photos (nothing is downloaded).

Usage: python scripts/prepare_demo_dataset.py [--root datasets/demo] [--scale 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Runnable from a plain checkout, without installing the package.
sys.path.insert(0, str(REPO_ROOT))

from traiNNer.data.demo_dataset import MAX_SCALE, ensure_demo_dataset  # noqa: E402
from traiNNer.utils.errors import UserError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the demo dataset from scikit-image's bundled photos."
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO_ROOT / "datasets" / "demo",
        help="dataset folder to create (default: datasets/demo in the repository)",
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=2,
        choices=range(1, MAX_SCALE + 1),
        metavar=f"{{1..{MAX_SCALE}}}",
        help="upscaling factor of the validation LR images (default: 2)",
    )
    args = parser.parse_args(argv)
    try:
        paths = ensure_demo_dataset(args.root, args.scale)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"train HR:       {paths.train_hr}")
    print(f"validation HR:  {paths.val_hr}")
    print(f"validation LR:  {paths.val_lr}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
