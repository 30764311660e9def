"""How many of traiNNer-redux's option templates this project reads, and why the rest fail.

    git clone https://github.com/the-database/traiNNer-redux /tmp/redux
    python scripts/compat/upstream_templates.py /tmp/redux/options/_templates

Each template is decoded and validated as `train.py` (templates under `train/`) or
`test.py` (under `test/`) would before touching any data: data folders are not read,
so a template "reads" here when its keys, values, architecture, losses, schedule and
metrics are all accepted. Prints the counts per group (fidelity, OTF, GAN, test) and,
with --failures, every failing template with the one-line error a user would see.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("templates", type=Path, help="traiNNer-redux's options/_templates")
    parser.add_argument("--failures", action="store_true", help="list every failing template")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
