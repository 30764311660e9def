"""Export a trained network to ONNX and check the file with onnxruntime.

    python scripts/onnx/convert_to_onnx.py experiments/<name>/models/net_g_1000.safetensors
    python scripts/onnx/convert_to_onnx.py -opt options/onnx/<file>.yml

A weights file written by this project names its network in its metadata; an option
file (traiNNer-redux's ONNX templates work as they are) names it in `network_g`, the
weights in `path.pretrain_network_g` and the export in its `onnx:` block. The flags
below replace the block's values. With `dtype: fp16` both an fp32 and an fp16 file are
written. Each file is run with onnxruntime next to the PyTorch network on real images
(`--images DIR`) or generated smooth ones, and one line per file gives the PSNR
between the two and the largest difference; an fp32 file under 50 dB is an error.

Exit codes: 0 written (and verified), 1 an fp32 file failed verification,
2 a bad input (a missing file, an unknown arch, one the exporter cannot export).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import io
import json
import logging
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from msgspec import Meta
from torch import Tensor, nn

from traiNNer.config.compat import drain_notes
from traiNNer.config.loader import decode_options, validate
from traiNNer.config.schema import StrictStruct
from traiNNer.config.validation import convert
from traiNNer.config.yaml_io import read_yaml
from traiNNer.data.image_io import IMAGE_EXTENSIONS, read_image
from traiNNer.models.sr_model import build_network
from traiNNer.utils.checkpoint import describe_metadata, fit_state_dict, load_network
from traiNNer.utils.errors import ConfigError, DataError, UserError
from traiNNer.utils.registry import ARCH_REGISTRY

INPUT_NAME = "input"
OUTPUT_NAME = "output"
# torch 2.14: the TorchScript exporter stops at opset 20, the dynamo one starts at 18.
MAX_TORCHSCRIPT_OPSET = 20
MIN_DYNAMO_OPSET = 18
MAX_DYNAMO_OPSET = 23
FP32_MIN_PSNR = 50.0
# Height and width of the example input the exporter traces; some networks need more.
DEFAULT_EXAMPLE_HW = 32
EXAMPLE_HW = {"realcugan": 32, "swin2sr_s": 64, "swin2sr_m": 64, "swin2sr_l": 64}
AXIS_NAMES = ("batch", "channels", "height", "width")
AXIS_LETTERS = "NCHW"
UPSTREAM_VALUE_FLAGS = ("--launcher", "--manual_seed", "--local_rank", "--resume", "--start-iter")
UPSTREAM_SWITCHES = ("--auto_resume", "--watch", "--debug")

DType = Literal["fp32", "fp16"]


class OnnxOptions(StrictStruct):
    """traiNNer-redux's `onnx:` block: its keys and defaults."""

    dynamo: Annotated[
        bool,
        Meta(description="Export with torch.export (dynamo) instead of the TorchScript tracer."),
    ] = False
    opset: Annotated[
        int,
        Meta(
            ge=7,
            description="ONNX opset; the TorchScript exporter goes up to 20, dynamo from 18 "
            "to 23 (a value outside is moved to the nearest one, with a note).",
        ),
    ] = 20
    shape: Annotated[
        str,
        Meta(
            description="Input shape NxCxHxW: numbers are fixed, letters dynamic "
            "(1x3xHxW: one image of any size)."
        ),
    ] = "1x3xHxW"
    verify: Annotated[
        bool, Meta(description="Compare the ONNX output with PyTorch's using onnxruntime.")
    ] = True
    dtype: Annotated[
        Literal["fp32", "fp16", "bf16"],
        Meta(description="fp32, or fp16 (written next to the fp32 file); bf16 is refused."),
    ] = "fp16"
    bf16_exclude_depthwise: Annotated[
        bool, Meta(description="Accepted for traiNNer-redux files; bf16 is not exported here.")
    ] = True
    optimize: Annotated[
        bool,
        Meta(
            description="Fold constants, merge repeated subexpressions and drop dead nodes "
            "(onnxscript's passes; traiNNer-redux runs OnnxSlim)."
        ),
    ] = True
    wrap_5d_to_4d: Annotated[
        bool,
        Meta(description="Video networks (5D input) only; no registered network takes it."),
    ] = True


class ExportError(UserError):
    """The exporter cannot turn this network into ONNX (one line, exit code 2)."""

    exit_code = 2


class VerifyError(UserError):
    """The ONNX file does not reproduce the PyTorch output (exit code 1)."""

    exit_code = 1


@dataclass
class Shape:
    """The example input the exporter traces and which of its axes stay dynamic."""

    dims: tuple[int, int, int, int]
    dynamic: tuple[bool, bool, bool, bool]

    def label(self) -> str:
        """'1x3xHxW_dyn-HW' or '1x3x64x64_static', as traiNNer-redux names its files."""
        parts = [AXIS_LETTERS[i] if dyn else str(d) for i, (d, dyn) in enumerate(self)]
        letters = "".join(AXIS_LETTERS[i] for i, dyn in enumerate(self.dynamic) if dyn)
        return "x".join(parts) + (f"_dyn-{letters}" if letters else "_static")

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        return iter(zip(self.dims, self.dynamic, strict=True))


@dataclass
class ExportRequest:
    """Everything one export needs: the network, its weights and the export options."""

    name: str
    arch: str
    scale: int
    kwargs: dict[str, Any]
    weights: Path | None
    onnx: OnnxOptions
    strict: bool = True
    param_key: str | None = None
    weights_key: str = "path.pretrain_network_g"


@dataclass
class Verification:
    """How close one ONNX file's outputs are to the PyTorch network's."""

    psnr: float
    max_abs: float
    images: int


# --------------------------------------------------------------------- options


def parse_shape(text: str, example_hw: int) -> Shape:
    """'1x3xHxW' -> example dims (letters become `example_hw`, 1 or 3) and dynamic flags."""
    parts = [p.strip() for p in text.lower().split("x")]
    if len(parts) == 5:
        raise ConfigError(
            f"onnx.shape: {text!r} is a 5D (video) shape; no registered network takes one "
            "(use NxCxHxW, e.g. 1x3xHxW)"
        )
    if len(parts) != 4 or not all(parts):
        raise ConfigError(f"onnx.shape: {text!r} is not NxCxHxW (e.g. 1x3xHxW or 1x3x256x256)")
    dims: list[int] = []
    dynamic: list[bool] = []
    for axis, part in enumerate(parts):
        if part.isdigit():
            if int(part) < 1:
                raise ConfigError(f"onnx.shape: {AXIS_NAMES[axis]} must be at least 1 in {text!r}")
            dims.append(int(part))
            dynamic.append(False)
        elif part.isalpha():
            if axis == 1:
                raise ConfigError(
                    f"onnx.shape: the channel axis must be a number in {text!r} (e.g. 1x3xHxW)"
                )
            dims.append(1 if axis == 0 else example_hw)
            dynamic.append(True)
        else:
            raise ConfigError(f"onnx.shape: {part!r} in {text!r} is neither a number nor a letter")
    return Shape(
        (dims[0], dims[1], dims[2], dims[3]), (dynamic[0], dynamic[1], dynamic[2], dynamic[3])
    )


def check_onnx_options(onnx: OnnxOptions) -> int:
    """Refuse what cannot be exported here; the opset the exporter will use (noted if moved)."""
    if onnx.dtype == "bf16":
        raise ConfigError(
            "onnx.dtype: bf16 is not supported (ONNX Conv takes bf16 only from opset 22 and "
            "onnxruntime has no CPU kernels to verify it); use fp16 or fp32"
        )
    low, high = (MIN_DYNAMO_OPSET, MAX_DYNAMO_OPSET) if onnx.dynamo else (7, MAX_TORCHSCRIPT_OPSET)
    opset = min(max(onnx.opset, low), high)
    if opset != onnx.opset:
        exporter = "dynamo" if onnx.dynamo else "TorchScript"
        other = "dynamo: false" if onnx.dynamo else "dynamo: true"
        print(
            f"note: onnx.opset: {onnx.opset} is outside the {exporter} exporter's {low}-{high}; "
            f"using {opset} (with {other} the other exporter is used)"
        )
    return opset


def _accepts(arch: str, keyword: str) -> bool:
    factory = ARCH_REGISTRY.get(arch, "network_g.type")
    return keyword in inspect.signature(factory).parameters


def _export_kwargs(arch: str, kwargs: dict[str, Any], export_safe: bool | None) -> dict[str, Any]:
    """`kwargs` with ParagonSR2's export_safe switch on unless told otherwise.

    It only changes which ops the forward uses (no Pad or Resize nodes), never the weights.
    """
    if not _accepts(arch, "export_safe"):
        if export_safe is not None:
            print(f"note: --export-safe: {arch} has no export_safe switch; ignored")
        return kwargs
    return {**kwargs, "export_safe": True if export_safe is None else export_safe}


def _metadata_arch(metadata: dict[str, str], where: str) -> tuple[dict[str, Any], int]:
    """The arch kwargs and scale `save_network` stored with the weights."""
    try:
        kwargs = json.loads(metadata.get("arch_kwargs", "{}"))
        scale = int(metadata.get("scale", ""))
    except (json.JSONDecodeError, ValueError):
        kwargs, scale = None, 0
    if not isinstance(kwargs, dict) or scale < 1:
        raise ConfigError(f"{where} has unreadable architecture metadata (arch_kwargs, scale)")
    return kwargs, scale


def request_from_options(
    path: str | Path, overrides: dict[str, Any], export_safe: bool | None
) -> ExportRequest:
    """An option file: `network_g` (or the weights' metadata), `scale`, `path.*`, `onnx:`."""
    data = read_yaml(path)
    onnx_data = data.pop("onnx", None)
    onnx = convert({**(onnx_data or {}), **overrides}, OnnxOptions, prefix="onnx")
    # Export reads none of these; a training file with an onnx block works as it is.
    for key in ("train", "val", "datasets", "logger"):
        data.pop(key, None)
    weights = (data.get("path") or {}).get("pretrain_network_g")
    if not weights:
        raise ConfigError("path.pretrain_network_g: required (the weights to export)")
    written_safe = (data.get("network_g") or {}).get("export_safe")
    if not data.get("network_g"):
        _, metadata = load_network(weights)
        if "arch" not in metadata:
            raise ConfigError(
                f"network_g: required because {weights} carries no architecture metadata"
            )
        kwargs, scale = _metadata_arch(metadata, f"path.pretrain_network_g: {weights}")
        data["network_g"] = {"type": metadata["arch"], **kwargs}
        data.setdefault("scale", scale)
    opt = validate(decode_options(data), for_training=False)
    arch_kwargs = dict(opt.network_g)
    arch = arch_kwargs.pop("type")
    # An export_safe the option file writes is its author's choice for this export.
    if export_safe is None and isinstance(written_safe, bool):
        export_safe = written_safe
    return ExportRequest(
        name=opt.name,
        arch=arch,
        scale=opt.scale,
        kwargs=_export_kwargs(arch, arch_kwargs, export_safe),
        weights=Path(weights),
        onnx=onnx,
        strict=opt.path.strict_load_g,
        param_key=opt.path.param_key_g,
    )


def request_from_weights(
    path: str | Path, overrides: dict[str, Any], export_safe: bool | None
) -> ExportRequest:
    """A weights file saved by this project: its metadata names the network."""
    path = Path(path)
    _, metadata = load_network(path, key="weights")
    if "arch" not in metadata:
        raise ConfigError(
            f"weights: {path} carries no architecture metadata (not saved by traiNNer-auto); "
            "use -opt with an option file that sets network_g and scale"
        )
    kwargs, scale = _metadata_arch(metadata, f"weights: {path}")
    # The experiment's name when the file sits in experiments/<name>/models/.
    name = f"{path.parent.parent.name}_{path.stem}" if path.parent.name == "models" else path.stem
    data = {"name": name, "scale": scale, "network_g": {"type": metadata["arch"], **kwargs}}
    opt = validate(decode_options(data), for_training=False)
    arch_kwargs = dict(opt.network_g)
    arch = arch_kwargs.pop("type")
    return ExportRequest(
        name=opt.name,
        arch=arch,
        scale=opt.scale,
        kwargs=_export_kwargs(arch, arch_kwargs, export_safe),
        weights=path,
        onnx=convert(overrides, OnnxOptions, prefix="onnx"),
        weights_key="weights",
    )


def build_for_export(request: ExportRequest) -> nn.Module:
    """The network in eval mode on the CPU in fp32, with the request's weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the networks' own deprecation notes
        net = build_network(request.arch, request.scale, request.kwargs)
    if request.weights is not None:
        state, metadata = load_network(request.weights, request.param_key, key=request.weights_key)
        fitted, warning = fit_state_dict(
            net.state_dict(),
            state,
            strict=request.strict,
            where=f"{request.weights_key}: {request.weights}",
            built=f"{request.arch} x{request.scale}",
            saved_by=describe_metadata(metadata),
        )
        net.load_state_dict(fitted, strict=request.strict)
        if warning:
            print(f"warning: {warning}")
    return net.float().eval()


# ---------------------------------------------------------------------- export


def _first_line(err: BaseException, limit: int = 240) -> str:
    """The first informative line of an exporter's (often multi-line) message."""
    for line in str(err).splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ", "[torch.onnx]")):
            return f"{type(err).__name__}: {line[:limit]}"
    return type(err).__name__


class ImageOnly(nn.Module):
    """Calls the network with the image alone: the TorchScript exporter turns the defaults
    of further forward arguments (RealCUGAN's `alpha`) into graph inputs otherwise."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def slim(proto: Any) -> Any:
    """Fold constants, merge repeated subexpressions and drop dead nodes.

    onnxscript's full `optimize` (what dynamo runs) also applies its rewrite rules, which
    take minutes on transformer graphs of 10k nodes for a few percent fewer nodes.
    """
    import onnx_ir as ir
    from onnx_ir.passes.common import (
        CommonSubexpressionEliminationPass,
        LiftConstantsToInitializersPass,
    )
    from onnxscript import optimizer

    model = ir.from_proto(proto)
    optimizer.fold_constants(model)
    CommonSubexpressionEliminationPass()(model)
    LiftConstantsToInitializersPass()(model)
    optimizer.remove_unused_nodes(model)
    return ir.to_proto(model)


_ORT_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)'")


def _runtime_reason(err: BaseException) -> str:
    """onnxruntime's failing node and its complaint, without the source paths."""
    text = str(err)
    node = _ORT_NODE.search(text)
    if node is None:
        return _first_line(err)
    complaint = text.rsplit(" was false. ", 1)[1] if " was false. " in text else ""
    return f"{node.group(1)} node {node.group(2)}" + (
        f": {complaint.strip()[:160]}" if complaint else ""
    )


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Keep the exporters' own output off the terminal: torch 2.14's TorchScript exporter
    writes its whole IR graph to stderr when it fails (its ONNX log switch reads as always
    on), and onnxscript logs a warning per node it does not fold. Failures still raise."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    onnxscript_logger = logging.getLogger("onnxscript")
    level = onnxscript_logger.level
    onnxscript_logger.setLevel(logging.ERROR)
    try:
        with (
            tempfile.TemporaryFile() as sink,
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        onnxscript_logger.setLevel(level)


def export_onnx(
    net: nn.Module,
    path: Path,
    shape: Shape,
    *,
    dtype: DType,
    opset: int,
    dynamo: bool,
    optimize: bool,
) -> None:
    """Write `net` (fp32; copied for fp16) as one self-contained ONNX file at `path`."""
    import onnx

    model = ImageOnly(copy.deepcopy(net).half() if dtype == "fp16" else net).eval()
    torch_dtype = torch.float16 if dtype == "fp16" else torch.float32
    example = torch.rand(*shape.dims, generator=torch.Generator().manual_seed(0)).to(torch_dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = [i for i, dyn in enumerate(shape.dynamic) if dyn]
    with warnings.catch_warnings(), torch.no_grad(), quiet_exporter():
        # Tracer and deprecation warnings: verification at other sizes is the real check.
        warnings.simplefilter("ignore")
        if dynamo:
            from torch.export import Dim

            # AUTO: the exporter keeps an axis dynamic where it can; `_check_dynamic` says
            # when the forward fixed one.
            spec = {i: Dim.AUTO for i in dynamic_axes}
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(spec,) if spec else None,
                optimize=False,  # `slim` below, as for the TorchScript exporter
                verbose=False,
            )
            assert program is not None
            program.save(str(path), external_data=False)
        else:
            axes = {i: AXIS_NAMES[i] for i in dynamic_axes}
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes} if axes else None,
            )
    proto = onnx.load(str(path))
    if optimize:
        with quiet_exporter():
            proto = slim(proto)
        onnx.save(proto, str(path))
    onnx.checker.check_model(proto)
    _check_dynamic(proto, shape)


def _check_dynamic(proto: Any, shape: Shape) -> None:
    """An axis asked to be dynamic that the export fixed would fail at other sizes."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    fixed = [
        f"{AXIS_NAMES[i]} is fixed at {dims[i].dim_value}"
        for i, dyn in enumerate(shape.dynamic)
        if dyn and i < len(dims) and dims[i].HasField("dim_value")
    ]
    if fixed:
        raise ExportError(
            f"the exported graph is not dynamic: {', '.join(fixed)} (the network's forward "
            "depends on it); give a fixed shape, e.g. onnx.shape: 1x3x256x256"
        )


def try_export(
    net: nn.Module, path: Path, shape: Shape, label: str, **kwargs: Any
) -> Literal[True]:
    """`export_onnx` with the exporter's failure as one ExportError line."""
    try:
        export_onnx(net, path, shape, **kwargs)
    except UserError:
        raise
    except Exception as err:
        exporter = "dynamo" if kwargs.get("dynamo") else "TorchScript"
        raise ExportError(
            f"{label} cannot be exported with the {exporter} exporter "
            f"({kwargs.get('dtype')}): {_first_line(err)}"
        ) from None
    return True


# ---------------------------------------------------------------------- verify


def smooth_images(sizes: Sequence[tuple[int, int]], seed: int = 0, batch: int = 1) -> list[Tensor]:
    """Photo-like test inputs: bicubic upsamplings of coarse random colour fields."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for height, width in sizes:
        coarse = torch.rand(batch, 3, max(height // 8, 2), max(width // 8, 2), generator=generator)
        fine = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
        images.append(fine.clamp(0, 1))
    return images


def folder_images(folder: Path, count: int, crop: int, shape: Shape) -> list[Tensor]:
    """Up to `count` images of `folder` as 1x3xHxW batches, center-cropped to the
    shape's fixed axes or to at most `crop` pixels a side (0: whole images)."""
    if not folder.is_dir():
        raise DataError(f"--images: {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(
            f"--images: {folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    fixed_h = None if shape.dynamic[2] else shape.dims[2]
    fixed_w = None if shape.dynamic[3] else shape.dims[3]
    images = []
    for file in files:
        image = read_image(file)
        height, width = image.shape[-2:]
        want_h = fixed_h or (min(height, crop) if crop else height)
        want_w = fixed_w or (min(width, crop) if crop else width)
        if want_h > height or want_w > width:
            continue  # smaller than the fixed shape
        top, left = (height - want_h) // 2, (width - want_w) // 2
        images.append(image[None, :, top : top + want_h, left : left + want_w])
        if len(images) == count:
            break
    if not images:
        raise DataError(
            f"--images: no image in {folder} is at least {fixed_h or 1}x{fixed_w or 1} (onnx.shape)"
        )
    return images


def verify_inputs(
    shape: Shape, images: list[Tensor] | None, side: int = DEFAULT_EXAMPLE_HW
) -> list[Tensor]:
    """Batches for the check: the images, or smooth ones of three sizes other than the
    traced `side` x `side` (the last no multiple of 16, where window-based networks pad),
    at the shape's batch size, plus a batch of two when the batch axis is dynamic."""
    if images is None:
        offsets = ((16, 32), (32, 16), (24, 8))
        sizes = [
            (
                side + dh if shape.dynamic[2] else shape.dims[2],
                side + dw if shape.dynamic[3] else shape.dims[3],
            )
            for dh, dw in offsets
        ]
        images = smooth_images(sizes)
    batch = 1 if shape.dynamic[0] else shape.dims[0]
    inputs = [image.expand(batch, -1, -1, -1).contiguous() for image in images]
    if shape.dynamic[0]:
        inputs.append(torch.cat((images[0], images[0].flip(-1))))
    return inputs


def _size(x: Tensor) -> str:
    return "x".join(map(str, x.shape))


@dataclass
class CheckSet:
    """The check inputs the PyTorch network accepts, with its fp32 outputs for them."""

    inputs: list[Tensor]
    expected: list[np.ndarray]
    rejected: list[str]  # sizes the network itself refuses (e.g. not a multiple of its window)


def check_set(net: nn.Module, inputs: Sequence[Tensor]) -> CheckSet:
    """Run `net` once on each input; an input it fails on is left out and named."""
    checks = CheckSet([], [], [])
    reason = ""
    for x in inputs:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the networks' deprecation notes
                expected = net(x).float().numpy()
        except Exception as err:
            checks.rejected.append(_size(x))
            reason = reason or _first_line(err, 160)
            continue
        checks.inputs.append(x)
        checks.expected.append(expected)
    if not checks.inputs:
        raise DataError(
            f"the PyTorch network fails on every check input ({', '.join(checks.rejected)}: "
            f"{reason}); give a size it accepts with --crop or a fixed onnx.shape"
        )
    return checks


def psnr(mse: float) -> float:
    """PSNR for images in [0, 1]; identical outputs give infinity."""
    return math.inf if mse <= 0 else 10 * math.log10(1 / mse)


def verify_onnx(path: Path, checks: CheckSet, dtype: DType) -> Verification:
    """Run `path` with onnxruntime (CPU) on the check inputs: the lowest PSNR and the
    largest absolute difference against the PyTorch outputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # its failures are reported here, as one line
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst_psnr, worst_abs = math.inf, 0.0
    for x, expected in zip(checks.inputs, checks.expected, strict=True):
        feed = x.numpy().astype(np.float16 if dtype == "fp16" else np.float32)
        try:
            got = np.asarray(session.run(None, {INPUT_NAME: feed})[0]).astype(np.float32)
        except Exception as err:
            raise VerifyError(
                f"{path.name}: onnxruntime failed on a {_size(x)} input "
                f"({_runtime_reason(err)}); the export may have fixed a size: try the other "
                "exporter (onnx.dynamo) or a fixed onnx.shape"
            ) from None
        if got.shape != expected.shape:
            raise VerifyError(
                f"{path.name}: onnxruntime gives shape {list(got.shape)} for a "
                f"{_size(x)} input, PyTorch {list(expected.shape)}"
            )
        diff = got.astype(np.float64) - expected
        if not np.isfinite(diff).all():
            return Verification(-math.inf, math.inf, len(checks.inputs))
        worst_psnr = min(worst_psnr, psnr(float(np.mean(diff**2))))
        worst_abs = max(worst_abs, float(np.abs(diff).max()))
    return Verification(worst_psnr, worst_abs, len(checks.inputs))


# ------------------------------------------------------------------------ main


def output_path(
    out_dir: Path, name: str, shape: Shape, dtype: DType, opset: int, dynamo: bool
) -> Path:
    """traiNNer-redux's file name: <name>_<shape>_<dtype>_op<opset>[_dynamo].onnx."""
    return out_dir / f"{name}_{shape.label()}_{dtype}_op{opset}{'_dynamo' if dynamo else ''}.onnx"


def result_line(label: str, dtype: DType, check: Verification, source: str, path: Path) -> str:
    value = "inf" if check.psnr == math.inf else f"{check.psnr:.1f}"
    return (
        f"{label} {dtype}: PSNR {value} dB, max abs diff {check.max_abs:.2e} "
        f"(worst of {check.images} inputs, {source}) -> {path}"
    )


def run_export(
    request: ExportRequest,
    out_dir: Path,
    images: Path | None,
    max_images: int,
    crop: int,
    emit: Callable[[str], None] = print,
) -> list[tuple[Path, Verification | None]]:
    """Export (fp32, and fp16 when asked), verify each file; raise on an fp32 mismatch."""
    onnx = request.onnx
    opset = check_onnx_options(onnx)
    side = EXAMPLE_HW.get(request.arch, DEFAULT_EXAMPLE_HW)
    shape = parse_shape(onnx.shape, side)
    net = build_for_export(request)
    label = f"{request.arch} x{request.scale}"
    checks = None
    source = f"images of {images}" if images is not None else "generated smooth images"
    if onnx.verify:
        loaded = folder_images(images, max_images, crop, shape) if images is not None else None
        checks = check_set(net, verify_inputs(shape, loaded, side))
        if checks.rejected:
            source += f"; the PyTorch network itself fails on {', '.join(checks.rejected)}"
    dtypes: list[DType] = ["fp32", "fp16"] if onnx.dtype == "fp16" else ["fp32"]
    results: list[tuple[Path, Verification | None]] = []
    for dtype in dtypes:
        path = output_path(out_dir, request.name, shape, dtype, opset, onnx.dynamo)
        try_export(
            net, path, shape, label, dtype=dtype, opset=opset, dynamo=onnx.dynamo,
            optimize=onnx.optimize,
        )  # fmt: skip
        if checks is None:
            emit(f"{label} {dtype}: written, not verified (onnx.verify: false) -> {path}")
            results.append((path, None))
            continue
        check = verify_onnx(path, checks, dtype)
        emit(result_line(label, dtype, check, source, path))
        results.append((path, check))
        if dtype == "fp32" and not check.psnr >= FP32_MIN_PSNR:
            raise VerifyError(
                f"{path.name}: the fp32 ONNX output differs from PyTorch's (PSNR "
                f"{check.psnr:.1f} dB < {FP32_MIN_PSNR:.0f} dB, max abs diff {check.max_abs:.2e})"
            )
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog="Flags left out take the option file's onnx: values, else traiNNer-redux's "
        "defaults (TorchScript exporter, opset 20, 1x3xHxW, fp16 next to fp32).",
    )
    parser.add_argument("weights", nargs="?", help="a .safetensors/.pth saved by traiNNer-auto")
    parser.add_argument("-opt", help="an option file (network_g, scale, path, onnx:)")
    parser.add_argument("--out", default="onnx", help="folder for the .onnx files (./onnx)")
    parser.add_argument("--name", help="replaces the option file's name (or the weights' stem)")
    parser.add_argument("--dtype", choices=["fp32", "fp16"], help="fp16 also writes fp32")
    parser.add_argument("--opset", type=int, help="ONNX opset (default 20)")
    parser.add_argument("--shape", help="NxCxHxW, letters dynamic (default 1x3xHxW)")
    parser.add_argument(
        "--dynamo", action=argparse.BooleanOptionalAction, default=None, help="exporter"
    )
    parser.add_argument("--optimize", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--export-safe",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ParagonSR2's export_safe switch (default on: no Pad or Resize nodes)",
    )
    parser.add_argument("--images", type=Path, help="folder of verification images (read only)")
    parser.add_argument("--max-images", type=int, default=4, help="images verified (4)")
    parser.add_argument(
        "--crop", type=int, default=256, help="center-crop verification images to this (0: none)"
    )
    # traiNNer-redux's parser takes these with -opt; none of them affects an export.
    for flag in UPSTREAM_VALUE_FLAGS:
        parser.add_argument(flag, help=argparse.SUPPRESS)
    for flag in UPSTREAM_SWITCHES:
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("dtype", "opset", "shape", "dynamo", "optimize", "verify")
    return {key: getattr(args, key) for key in keys if getattr(args, key) is not None}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if (args.weights is None) == (args.opt is None):
            raise ConfigError("give either a weights file or -opt <option file>, not both")
        if args.max_images < 1 or args.crop < 0:
            raise ConfigError("--max-images must be at least 1 and --crop at least 0")
        for flag in (*UPSTREAM_VALUE_FLAGS, *UPSTREAM_SWITCHES):
            if getattr(args, flag.lstrip("-").replace("-", "_")):
                print(f"note: {flag} is accepted for traiNNer-redux and has no effect on export")
        overrides = _overrides(args)
        if args.opt is not None:
            request = request_from_options(args.opt, overrides, args.export_safe)
        else:
            request = request_from_weights(args.weights, overrides, args.export_safe)
        if args.name:
            request.name = args.name
        for note in drain_notes():
            print(f"note: {note}")
        run_export(request, Path(args.out), args.images, args.max_images, args.crop)
    except ImportError as err:
        print(
            f"error: {err.name or err}: not installed (pip install onnx onnxruntime onnxscript, "
            "or the project's onnx extra)",
            file=sys.stderr,
        )
        return 2
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
