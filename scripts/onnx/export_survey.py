"""Try the ONNX export of every registered architecture, with random weights.

    python scripts/onnx/export_survey.py [--dynamo] [--archs compact span ...]

Each network is built with its registered defaults at scale 2 (or the nearest scale it
supports), exported as convert_to_onnx.py does (1x3xHxW, dynamic height and width) in
fp32 and fp16, and run with onnxruntime next to PyTorch on two generated images whose
sizes differ from the traced one. One line per architecture says whether it exported
and verified (fp32 PSNR >= 50 dB) with both PSNRs, or what failed and why; the last
line counts them. `--markdown FILE` also writes the results as a table.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from convert_to_onnx import (
    DEFAULT_EXAMPLE_HW,
    EXAMPLE_HW,
    FP32_MIN_PSNR,
    MAX_TORCHSCRIPT_OPSET,
    ExportError,
    OnnxOptions,
    Verification,
    _export_kwargs,
    _first_line,
    check_onnx_options,
    check_set,
    parse_shape,
    try_export,
    verify_inputs,
    verify_onnx,
)

import traiNNer.archs  # noqa: F401  (fills the registry)
from traiNNer.models.sr_model import build_network
from traiNNer.utils.errors import UserError
from traiNNer.utils.registry import ARCH_REGISTRY


@dataclass
class SurveyRow:
    """What happened to one architecture."""

    arch: str
    scale: int
    params: int
    status: str  # ok, export failed, verify failed, build failed, PyTorch failed
    fp32: Verification | None = None
    fp16: Verification | None = None
    fp16_note: str = ""
    reason: str = ""
    # Check sizes the PyTorch network itself fails on (it needs multiples of its window).
    rejected: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        head = f"{self.arch} x{self.scale} ({self.params / 1e6:.2f}M params, {self.seconds:.1f} s)"
        note = f" ({self.rejected})" if self.rejected else ""
        if self.status != "ok":
            return f"{head}: {self.status}: {self.reason}{note}"
        fp16 = self.fp16_note or f"fp16 {_db(self.fp16)}"
        return f"{head}: ok: fp32 {_db(self.fp32)}, {fp16}{note}"


def _db(check: Verification | None) -> str:
    if check is None:
        return "-"
    value = "inf" if check.psnr == math.inf else f"{check.psnr:.1f}"
    return f"{value} dB (max abs {check.max_abs:.1e})"


def survey_scale(arch: str) -> int:
    """2, else the supported scale nearest to it."""
    scales = getattr(ARCH_REGISTRY.get(arch), "supported_scales", None) or (2,)
    return min(scales, key=lambda s: (abs(s - 2), s))


def survey_arch(arch: str, out_dir: Path, onnx: OnnxOptions, opset: int) -> SurveyRow:
    """Build `arch` with random weights, export fp32 and fp16, verify both."""
    scale = survey_scale(arch)
    row = SurveyRow(arch, scale, 0, "ok")
    try:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # arch deprecation notes, not export problems
            net = build_network(arch, scale, _export_kwargs(arch, {}, None)).float().eval()
    except Exception as err:
        row.status, row.reason = "build failed", _first_line(err)
        return row
    row.params = sum(p.numel() for p in net.parameters())
    side = EXAMPLE_HW.get(arch, DEFAULT_EXAMPLE_HW)
    shape = parse_shape(onnx.shape, side)
    # Sizes unlike the traced one: a shape the tracer baked in shows up here.
    try:
        checks = check_set(net, verify_inputs(shape, None, side))
    except UserError as err:
        row.status, row.reason = "PyTorch failed", str(err)
        return row
    if checks.rejected:
        row.rejected = f"PyTorch itself fails on {', '.join(checks.rejected)}"
    for dtype in ("fp32", "fp16"):
        path = out_dir / f"{arch}_{dtype}.onnx"
        try:
            try_export(
                net, path, shape, arch, dtype=dtype, opset=opset, dynamo=onnx.dynamo,
                optimize=onnx.optimize,
            )  # fmt: skip
            check = verify_onnx(path, checks, dtype)
        except UserError as err:
            if dtype == "fp16":
                row.fp16_note = f"fp16 failed: {err}"
                break
            row.status = "export failed" if isinstance(err, ExportError) else "verify failed"
            row.reason = str(err)
            break
        finally:
            path.unlink(missing_ok=True)
        if dtype == "fp32":
            row.fp32 = check
            if not check.psnr >= FP32_MIN_PSNR:
                row.status = "verify failed"
                row.reason = f"fp32 PSNR {_db(check)} < {FP32_MIN_PSNR:.0f} dB"
                break
        else:
            row.fp16 = check
    return row


def markdown(rows: Sequence[SurveyRow], onnx: OnnxOptions, opset: int) -> str:
    exporter = "dynamo" if onnx.dynamo else "TorchScript"
    lines = [
        f"Exporter: {exporter}, opset {opset}, shape {onnx.shape}.",
        "",
        "| arch | scale | params | result | fp32 PSNR | fp16 PSNR | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        fp32 = _db(row.fp32).split(" (")[0]
        fp16 = _db(row.fp16).split(" (")[0]
        note = "; ".join(n for n in (row.reason, row.fp16_note, row.rejected) if n)
        note = note.replace("|", "/")
        lines.append(
            f"| {row.arch} | {row.scale} | {row.params / 1e6:.2f}M | {row.status} | {fp32} | "
            f"{fp16} | {note} |"
        )
    return "\n".join(lines) + "\n"


def summary(rows: Sequence[SurveyRow]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    fp16_ok = sum(1 for row in rows if row.fp16 is not None)
    parts = [f"{count} {status}" for status, count in sorted(counts.items())]
    return f"{len(rows)} architectures: {', '.join(parts)}; fp16 exported and ran for {fp16_ok}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--archs", nargs="+", help="registered names (default: all)")
    parser.add_argument("--dynamo", action="store_true", help="the torch.export-based exporter")
    parser.add_argument("--opset", type=int, default=MAX_TORCHSCRIPT_OPSET, help="(20)")
    parser.add_argument("--markdown", type=Path, help="also write the results as a table here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    onnx = OnnxOptions(dynamo=args.dynamo, opset=args.opset, dtype="fp16")
    try:
        opset = check_onnx_options(onnx)
        archs = [ARCH_REGISTRY.get(a, "--archs") and a.lower() for a in args.archs or []]
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnx_survey_") as tmp:
        for arch in archs or ARCH_REGISTRY.names():
            start = time.perf_counter()
            row = survey_arch(arch, Path(tmp), onnx, opset)
            row.seconds = time.perf_counter() - start
            print(row.line(), flush=True)
            rows.append(row)
    print(summary(rows))
    if args.markdown is not None:
        args.markdown.write_text(markdown(rows, onnx, opset), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
