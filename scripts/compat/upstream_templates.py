"""How many of traiNNer-redux's option templates this project reads, and why the rest fail.

    git clone https://github.com/the-database/traiNNer-redux /tmp/redux
    python scripts/compat/upstream_templates.py /tmp/redux/options/_templates

Each template is decoded and validated as `train.py` (templates under `train/`) or
`test.py` (under `test/`) would before touching any data: data folders are not read,
so a template "reads" here when its keys, values, architecture, losses, schedule and
metrics are all accepted. Prints the counts per group (fidelity, OTF, GAN, test) and,
with --failures, every failing template with the one-line error a user would see.

With --train, every training template that reads is then run through `train.py` for
--iterations iterations, unchanged except for what a CPU check needs: its data folders
point at small generated image pairs, the LR crop is at most 32 px, batches hold 2
patches, loader workers are off and the output goes to a temporary folder. Every test
template that reads is run through `test.py` on generated LR images, with weights of its
network (as the template configures it) made and saved here.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from traiNNer.config.compat import drain_notes
from traiNNer.config.loader import decode_options, read_yaml, validate
from traiNNer.utils.errors import UserError


def group(path: Path) -> str:
    if "test" in path.parts:
        return "test"
    name = path.stem
    kind = "gan" if name.endswith("_gan") else "fidelity"
    return f"OTF {kind}" if "_OTF_" in name else kind


def first_error(path: Path) -> str | None:
    """None when the template reads, else the error `train.py` / `test.py` would print."""
    try:
        data = read_yaml(path)
        if group(path) == "test":
            data.pop("train", None)
        validate(decode_options(data), for_training=group(path) != "test")
    except UserError as error:
        return str(error)
    finally:
        drain_notes()
    return None


REPO = Path(__file__).resolve().parents[2]
LQ_CROP = 32


def make_pairs(root: Path, scale: int) -> Path:
    """Four smooth HR images of 48*scale px and their bicubic LR at `scale`."""
    from traiNNer.data.image_io import write_image
    from traiNNer.data.resize import bicubic_downscale

    folder = root / f"x{scale}"
    if folder.exists():
        return folder
    generator = torch.Generator().manual_seed(scale)
    size = 48 * scale
    for i in range(4):
        low = torch.rand(1, 3, 6, 6, generator=generator)
        hr = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic")[0]
        hr = hr.clamp(0, 1)
        (folder / "hr").mkdir(parents=True, exist_ok=True)
        (folder / "lr").mkdir(parents=True, exist_ok=True)
        write_image(hr, folder / "hr" / f"img{i}.png")
        write_image(bicubic_downscale(hr, scale), folder / "lr" / f"img{i}.png")
    return folder


def cpu_check_options(data: dict[str, Any], pairs: Path, out: Path, iterations: int) -> None:
    """The template as it is, but small enough to train on a CPU in seconds."""
    data["name"] = "check"
    data["num_gpu"] = 0
    data["use_amp"] = data["use_compile"] = False
    for name, dataset in data.get("datasets", {}).items():
        dataset["dataroot_gt"] = str(pairs / "hr")
        dataset["dataroot_lq"] = str(pairs / "lr")
        if name.startswith("train"):
            dataset.pop("gt_size", None)
            crop = dataset.get("lq_size") or LQ_CROP
            dataset["lq_size"] = min(crop, LQ_CROP)
            dataset.update(batch_size_per_gpu=2, num_worker_per_gpu=0, accum_iter=1)
    data["path"] = {"experiments_root": str(out / "experiments")}
    train = data["train"]
    train["total_iter"] = iterations
    train["warmup_iter"] = -1
    data.setdefault("logger", {}).update(
        print_freq=1, save_checkpoint_freq=iterations, use_tb_logger=False, progress_bar=False
    )
    data.setdefault("val", {})["val_enabled"] = False


def train_check(path: Path, work: Path, iterations: int) -> str | None:
    """None when the template trains for `iterations` steps, else the last error line."""
    data = read_yaml(path)
    run = work / path.stem
    run.mkdir(parents=True)
    cpu_check_options(data, make_pairs(work / "data", int(data["scale"])), run, iterations)
    option_file = run / "options.yml"
    option_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "-opt", str(option_file)],
        capture_output=True,
        text=True,
        cwd=run,
        timeout=900,
    )
    if result.returncode == 0:
        return None
    lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return f"exit code {result.returncode}: " + (lines[-1] if lines else "no output")


def test_check(path: Path, work: Path) -> str | None:
    """None when test.py runs the test template on generated LR images with weights of
    its network made here, else the last error line."""
    from safetensors.torch import save_file

    from traiNNer.models.sr_model import build_network

    data = read_yaml(path)
    data.pop("train", None)
    opt = validate(decode_options(data), for_training=False)
    drain_notes()
    run = work / f"test_{path.stem}"
    run.mkdir(parents=True)
    kwargs = {key: value for key, value in opt.network_g.items() if key != "type"}
    network = build_network(opt.network_g["type"], opt.scale, kwargs)
    weights = run / "net_g.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(weights))
    pairs = make_pairs(work / "data", opt.scale)
    data.update(num_gpu=0, use_amp=False)
    data["path"] = {"pretrain_network_g": str(weights), "results_root": str(run / "results")}
    for dataset in data.get("datasets", {}).values():
        dataset["dataroot_lq"] = str(pairs / "lr")
        if "dataroot_gt" in dataset:
            dataset["dataroot_gt"] = str(pairs / "hr")
    option_file = run / "options.yml"
    option_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(REPO / "test.py"), "-opt", str(option_file)],
        capture_output=True,
        text=True,
        cwd=run,
        timeout=900,
    )
    if result.returncode == 0:
        return None
    lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return f"exit code {result.returncode}: " + (lines[-1] if lines else "no output")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("templates", type=Path, help="traiNNer-redux's options/_templates")
    parser.add_argument("--failures", action="store_true", help="list every failing template")
    parser.add_argument(
        "--train", action="store_true", help="also train each readable training template"
    )
    parser.add_argument("--iterations", type=int, default=2, help="iterations per --train run")
    parser.add_argument("--jobs", type=int, default=2, help="--train runs at a time")
    parser.add_argument(
        "--only", nargs="*", default=[], help="with --train: templates whose path has one of these"
    )
    args = parser.parse_args(argv)
    files = sorted(p for d in ("train", "test") for p in (args.templates / d).rglob("*.yml"))
    if not files:
        print(f"error: no train/ or test/ templates under {args.templates}", file=sys.stderr)
        return 2
    results = {path: first_error(path) for path in files}
    totals: collections.Counter[str] = collections.Counter()
    reads: collections.Counter[str] = collections.Counter()
    for path, error in results.items():
        totals[group(path)] += 1
        reads[group(path)] += error is None
    for name in ("fidelity", "test", "gan", "OTF fidelity", "OTF gan"):
        print(f"{name:>12}: {reads[name]:3d} of {totals[name]:3d} read")
    reasons = collections.Counter(
        error.split(":")[0] + ": " + error.split(": ", 1)[1][:60]
        for error in results.values()
        if error is not None
    )
    print("most common first errors:")
    for reason, count in reasons.most_common(12):
        print(f"  {count:3d}  {reason}")
    if args.failures:
        for path, error in results.items():
            if error is not None:
                print(f"{path.relative_to(args.templates)}: {error[:150]}")
    if args.train:
        readable = [p for p, error in results.items() if error is None]
        if args.only:
            readable = [p for p in readable if any(part in str(p) for part in args.only)]

        def check(path: Path) -> str | None:
            if group(path) == "test":
                return test_check(path, Path(work))
            return train_check(path, Path(work), args.iterations)

        with tempfile.TemporaryDirectory() as work, ThreadPoolExecutor(args.jobs) as pool:
            for scale in {int(read_yaml(p)["scale"]) for p in readable}:
                make_pairs(Path(work) / "data", scale)  # once, before the parallel runs
            ran = dict(zip(readable, pool.map(check, readable), strict=True))
        for name in ("fidelity", "test", "gan", "OTF fidelity", "OTF gan"):
            ok = sum(error is None for p, error in ran.items() if group(p) == name)
            what = "run in test.py" if name == "test" else f"train {args.iterations} iterations"
            print(f"{name:>12}: {ok:3d} of {totals[name]:3d} {what}")
        for path, error in ran.items():
            if error is not None:
                print(f"{path.relative_to(args.templates)}: does not run: {error[:200]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
