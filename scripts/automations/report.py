"""One picture of what the automations did to a run: report.png and report.html.

    python scripts/automations/report.py experiments/<name> [--tb tb_logger/<name>] [--out DIR]

Reads only what the run leaves (experiments/<name>/automations.jsonl, its TensorBoard
events in tb_logger/<name>, signals.jsonl when logger.signal_trace was on), so it works on
a finished run and on one still training. Writes DIR/report.png and DIR/report.html (the
PNG embedded; hover a decision's marker for its reason); DIR defaults to the run folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from traiNNer.reporting.report import render
from traiNNer.reporting.run_record import read_run
from traiNNer.utils.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("experiment", type=Path, help="the run folder, experiments/<name>")
    parser.add_argument("--tb", type=Path, default=None, help="TensorBoard folder of the run")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    args = parser.parse_args(argv)
    try:
        run = read_run(args.experiment, args.tb)
        out = args.out or args.experiment
        png, page = render(run, out / "report.png", out / "report.html")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{run.name}: {len(run.decisions)} decisions, {len(run.scalars)} scalar series")
    print(f"report: {png}")
    print(f"page:   {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
