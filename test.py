"""Run a trained model over test sets: `python test.py -opt options/test/<arch>/<file>.yml`.

Writes the super-resolved images under results/<name>/visualization/<set>/ and a
metrics table (console, results/<name>/metrics.md and metrics.csv). The network is
built from `network_g` or, when that is left out, from the metadata saved with the
weights in `path.pretrain_network_g`.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from traiNNer.config.compat import drain_notes
from traiNNer.config.loader import read_yaml, validate
from traiNNer.config.schema import Options
from traiNNer.config.validation import convert
from traiNNer.data import build_dataset
from traiNNer.data.integrity import check_datasets
from traiNNer.data.loader import build_dataloader
from traiNNer.models.precision import configured_precision
from traiNNer.models.sr_model import SRModel
from traiNNer.training.devices import select_device
from traiNNer.training.knobs import Knobs
from traiNNer.utils.checkpoint import load_network
from traiNNer.utils.cli import add_upstream_flags, apply_overrides
from traiNNer.utils.dist import DistInfo
from traiNNer.utils.errors import ConfigError, UserError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_upstream_flags(parser)
    return parser.parse_args(argv)


def load_test_options(path: str) -> Options:
    data = read_yaml(path)
    weights = (data.get("path") or {}).get("pretrain_network_g")
    if not weights:
        raise ConfigError("path.pretrain_network_g: required for testing (the weights to run)")
    if not data.get("network_g"):
        _, metadata = load_network(weights)
        if "arch" not in metadata:
            raise ConfigError(
                f"network_g: required because {weights} carries no architecture metadata"
            )
        data["network_g"] = {"type": metadata["arch"], **json.loads(metadata["arch_kwargs"])}
        data.setdefault("scale", int(metadata["scale"]))
    data.pop("train", None)
    return validate(convert(data, Options), for_training=False)


def run(opt: Options) -> dict[str, dict[str, float]]:
    device = select_device(opt, DistInfo())
    knobs = Knobs(precision=configured_precision(opt.use_amp, opt.amp_bf16))
    model = SRModel(opt, device, knobs, DistInfo())
    if opt.val is None:
        from traiNNer.config.schema import ValOptions

        opt.val = ValOptions(save_img=True)
    results_root = Path(opt.path.results_root or "results") / opt.name
    visualization = results_root / "visualization"
    table: dict[str, dict[str, float]] = {}
    datasets = {key: build_dataset(s, opt.scale, "val", key=key) for key, s in opt.datasets.items()}
    check_datasets(datasets)  # a broken file is an error before the first image is written
    for key, dataset in datasets.items():
        set_opt = opt.datasets[key]
        loader = build_dataloader(
            dataset, set_opt, "val", seed=None, use_cuda=device.type == "cuda", key=key
        )
        name = set_opt.name or key
        table[name] = model.validation(
            loader, name, 0, visualization, image_suffix=opt.val.suffix or ""
        )
    write_tables(table, results_root)
    return table


def write_tables(table: dict[str, dict[str, float]], results_root: Path) -> None:
    metrics = sorted({m for values in table.values() for m in values})
    results_root.mkdir(parents=True, exist_ok=True)
    with open(results_root / "metrics.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", *metrics])
        for name, values in table.items():
            writer.writerow([name, *(f"{values[m]:.4f}" if m in values else "" for m in metrics)])
    lines = ["| dataset | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, values in table.items():
        cells = (f"{values[m]:.4f}" if m in values else "" for m in metrics)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (results_root / "metrics.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rich_table = Table(title="Test results")
    rich_table.add_column("dataset")
    for metric in metrics:
        rich_table.add_column(metric, justify="right")
    for name, values in table.items():
        rich_table.add_row(name, *(f"{values[m]:.4f}" if m in values else "-" for m in metrics))
    Console().print(rich_table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        opt = load_test_options(args.opt)
        notes = apply_overrides(opt, args)
        if args.launcher != "none":
            notes.append(f"--launcher {args.launcher}: test.py runs in one process")
        for note in [*drain_notes(), *notes]:
            print(note)
        with torch.inference_mode():
            run(opt)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
