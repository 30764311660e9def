"""Write docs/option_reference.md: every option key and every registered name.

The option tables come from the msgspec structs reachable from
`traiNNer.config.schema.Options` (type, default, accepted range and the
`Meta(description=...)` text); the registered names come from the registries in
`traiNNer.utils.registry`, with each entry's keyword arguments read from its
signature. Run after changing an option struct or a registered signature; a test
fails while the committed file is stale.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml
from msgspec import inspect as mi

from traiNNer.config.schema import Options
from traiNNer.config.validation import kwargs_struct
from traiNNer.utils.registry import (
    ARCH_REGISTRY,
    DATASET_REGISTRY,
    LOSS_REGISTRY,
    METRIC_REGISTRY,
    OPTIMIZER_REGISTRY,
    SCHEDULER_REGISTRY,
    Registry,
)

REFERENCE_PATH = Path(__file__).resolve().parents[1] / "docs" / "option_reference.md"

# Descriptions of option keys whose struct field carries no Meta(description=...).
# A description written in the struct always wins; tests/test_docs.py fails when an
# entry here no longer matches a field without one, so entries cannot go stale.
SUPPLEMENTARY_DESCRIPTIONS: dict[str, str] = {
    "Options.name": "Run name: outputs go to experiments/<name>/ and tb_logger/<name>/ "
    "(test.py: results/<name>/).",
    "Options.scale": "Upscaling factor, passed to the network; each arch lists the scales it "
    "supports.",
    "Options.num_gpu": "auto: the CUDA GPU when there is one, else the CPU; 0: the CPU; n: "
    "fail unless n GPUs are visible. More than one GPU needs torchrun (--launcher pytorch).",
    "Options.manual_seed": "Seed for weight init, crops and augmentation; null: a random seed, "
    "printed. A resumed run keeps the seed of its state.",
    "Options.deterministic": "Deterministic kernels (cudnn.benchmark off, "
    "torch.use_deterministic_algorithms with warn_only); slower.",
    "Options.use_amp": "Mixed precision: the network runs under autocast in fp16 (bf16 with "
    "amp_bf16); losses are computed in fp32.",
    "Options.amp_bf16": "With use_amp: bfloat16 instead of float16 (no loss scaling).",
    "Options.use_channels_last": "NHWC memory layout for the network and its inputs.",
    "Options.use_compile": "torch.compile the generator (slow first steps).",
    "Options.compile_mode": "torch.compile's mode for the generator (default, reduce-overhead, "
    "max-autotune, max-autotune-no-cudagraphs), as in traiNNer-redux.",
    "Options.fast_matmul": "Allow TF32 for fp32 matmuls (torch.set_float32_matmul_precision high).",
    "Options.detect_anomaly": "torch.autograd anomaly detection (slow; for debugging NaNs).",
    "Options.datasets": "Named datasets: the key `train` is the training set, every other key "
    "a validation (test.py: test) set.",
    "Options.network_g": "The generator: `type` (a registered arch, see below) and that arch's "
    "keyword arguments, checked against its signature. test.py may leave it out.",
    "Options.path": "Weights to start from, resume state, output roots.",
    "Options.train": "Optimisation; required by train.py, ignored by test.py.",
    "Options.val": "Validation during training; what test.py writes and measures.",
    "Options.logger": "Status lines, TensorBoard and checkpoints.",
    "Options.dist_params": "Distributed training (torchrun).",
    "DatasetOptions.name": "Label in logs, TensorBoard tags and output folders; defaults to "
    "the key under datasets.",
    "DatasetOptions.dataroot_gt": "Folder (or list of folders) of HR images.",
    "DatasetOptions.dataroot_lq": "Folder (or list, one per dataroot_gt folder) of LR images.",
    "DatasetOptions.use_hflip": "Random horizontal flips (training only).",
    "DatasetOptions.use_rot": "Random vertical flips and transposes; with use_hflip all "
    "90-degree rotations (training only).",
    "DatasetOptions.batch_size_per_gpu": "Samples per micro-batch on each GPU; one iteration "
    "uses batch_size_per_gpu x accum_iter samples.",
    "DatasetOptions.accum_iter": "Micro-batches whose gradients add up to one optimizer step.",
    "DatasetOptions.num_worker_per_gpu": "Image-loading worker processes per GPU (0: the main "
    "process).",
    "DatasetOptions.dataset_enlarge_ratio": "Times the image list is repeated per epoch; auto: "
    "enough for at least 1000 batches per GPU.",
    "DatasetOptions.pin_memory": "Page-locked host memory for faster copies (CUDA only).",
    "DatasetOptions.persistent_workers": "Keep loader processes between epochs (with workers).",
    "DatasetOptions.prefetch_factor": "Batches each worker loads ahead (with workers).",
    "DatasetOptions.color": "y: use only the luma channel (one-channel images); null: RGB.",
    "DatasetOptions.filename_tmpl": "pairedimagedataset: LR file stem from the HR stem, e.g. "
    "`{}x2` pairs `0001.png` with `0001x2.*`.",
    "PathOptions.pretrain_network_g": "Weights (.safetensors or .pth) to start training from; "
    "test.py: the weights to run.",
    "PathOptions.strict_load_g": "The weights must match the network exactly; false loads what "
    "fits: keys on one side only are ignored, tensors of another shape skipped, all listed in "
    "one warning; nothing fitting is an error.",
    "PathOptions.param_key_g": ".pth files: the key holding the state dict (default: tries "
    "model_state_dict, state_dict, params_ema, params-ema, params, model, net).",
    "PathOptions.resume_state": "Training state to resume from; takes precedence over "
    "--auto_resume.",
    "PathOptions.experiments_root": "Folder of the run folders (default experiments); "
    "TensorBoard logs go to tb_logger/ beside it.",
    "PathOptions.results_root": "test.py: folder of the result folders (default results).",
    "TrainOptions.total_iter": "Optimizer steps to train.",
    "TrainOptions.warmup_iter": "Linear LR warmup over this many iterations (<= 0: none).",
    "TrainOptions.optim_g": "Optimizer: `type` (registered, see below) and its keyword arguments.",
    "TrainOptions.scheduler": "LR schedule: `type` (registered, see below) and its keyword "
    "arguments; null: constant LR.",
    "TrainOptions.losses": "Entries {type, loss_weight, ...}: weighted sum of the absolute "
    "weights; 0 turns a loss off, a negative weight compares with the bicubic upscale of the "
    "LR.",
    "TrainOptions.ema_decay": "> 0: keep an exponential moving average of the weights; "
    "validation and saved weights use it.",
    "TrainOptions.ema_update_after_step": "Up to this iteration the EMA copies the weights "
    "instead of averaging them.",
    "TrainOptions.grad_clip": "Clip the gradient norm at grad_clip_max_norm "
    "(adaptive_gradient_clipping replaces the threshold while it is on).",
    "TrainOptions.grad_clip_max_norm": "Fixed clipping threshold for grad_clip.",
    "TrainOptions.use_moa": "Mixture of augmentations on each training batch (LR and HR alike).",
    "TrainOptions.moa_augs": "Augmentations MoA draws from.",
    "TrainOptions.moa_probs": "Probability of each entry of moa_augs (same length, not all 0).",
    "TrainOptions.automations": "One block per automation; see [automations.md](automations.md).",
    "TrainOptions.dynamic_loss_scheduling": "The dynamic_loss_scheduling automation's block "
    "under its earlier key (same fields as train.automations.dynamic_loss_scheduling; give "
    "one of the two).",
    "AutomationsOptions.dynamic_loss_scheduling": "Adapts each loss's weight while training.",
    "AutomationsOptions.lr_scheduling": "LR multiplier from plateaus of the training loss "
    "and/or a validation metric.",
    "AutomationsOptions.batch_size": "Batch size search at start, out-of-memory recovery, growth.",
    "AutomationsOptions.adaptive_gradient_clipping": "Per-network clipping threshold from "
    "recent gradient norms.",
    "AutomationsOptions.early_stopping": "Stops on a validation metric plateau or divergence.",
    "AutomationsOptions.precision": "fp16 -> bf16 -> fp32 fallback on instability; activation "
    "checkpointing on out-of-memory.",
    "AutomationsOptions.validation_frequency": "Validation interval from the metric's rate of "
    "improvement.",
    "AutomationsOptions.augmentation_scheduling": "Probability that a batch gets a MoA "
    "augmentation (needs use_moa).",
    "AutomationsOptions.optimizer_selection": "Short race of candidate optimizers before training.",
    "AutomationsOptions.regularization_scheduling": "Weight decay on a schedule, raised on "
    "overfitting.",
    "AutomationsOptions.multi_metric_lr": "LR multiplier from plateaus of a composite of "
    "validation metrics.",
    "ValOptions.val_enabled": "Validate during training.",
    "ValOptions.val_freq": "Iterations between validations (validation_frequency may change "
    "the interval).",
    "ValOptions.save_img": "Write the upscaled images to <run>/visualization/<set>/.",
    "ValOptions.tile_size": "> 0: upscale in overlapping tiles of this LR size; 0: whole images.",
    "ValOptions.tile_overlap": "Accepted; not used yet (tiles overlap by 16 LR pixels).",
    "ValOptions.suffix": "Saved images are <image>_<suffix>.png; null: the iteration "
    "(training) or no suffix (test.py).",
    "ValOptions.metrics_enabled": "Compute the metrics (false: images only).",
    "ValOptions.metrics": "Metric name -> settings; names appear in logs, TensorBoard and "
    "the automations' `metric` keys.",
    "MetricOptions.type": "Registered metric (see below).",
    "MetricOptions.crop_border": "Pixels removed from each border before measuring.",
    "MetricOptions.test_y_channel": "Measure on the luma (Y) channel instead of RGB.",
    "MetricOptions.better": "Direction of improvement; null: the metric's own (psnr, ssim and "
    "topiq: higher; lpips and dists: lower).",
    "LoggerOptions.print_freq": "Iterations between status lines (console and TensorBoard "
    "losses, lr).",
    "LoggerOptions.save_checkpoint_freq": "Iterations between saved weights and training states.",
    "LoggerOptions.save_checkpoint_format": "Format of saved weights.",
    "LoggerOptions.use_tb_logger": "Write TensorBoard logs.",
    "LoggerOptions.progress_bar": "Show a progress bar on the console.",
    "DistParams.backend": "Process-group backend; null: nccl with CUDA, else gloo.",
    "DistParams.port": "Accepted; not used (torchrun sets the rendezvous port).",
}


# ---------------------------------------------------------------------------- helpers
def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lowercase, punctuation dropped, spaces -> '-'."""
    kept = "".join(ch for ch in heading.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


HTML_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def cell(text: str) -> str:
    """Text safe inside a markdown table cell.

    Pipes would end the cell; outside code spans `<name>` would be read as an HTML tag.
    """
    pieces = text.replace("\n", " ").split("`")
    for index in range(0, len(pieces), 2):  # even pieces lie outside code spans
        pieces[index] = HTML_TAG_START.sub("&lt;", pieces[index])
    return "`".join(pieces).replace("|", "\\|")


def code(text: str) -> str:
    return f"`{text}`"


def yaml_text(value: Any) -> str:
    """A value the way it would be written in an option file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # Quote what YAML would read as something else ("", "{}", "null", "1e-4", ...).
        return value if value and yaml.safe_load(value) == value else json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, msgspec.Struct):
        return "{}"  # an all-defaults block, as `key: {}` in YAML
    return repr(value)


def first_paragraph(obj: Any) -> str:
    """The first paragraph of `obj`'s own docstring (a class's is not inherited)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if not doc:
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


# ------------------------------------------------------------------- option structs
def unwrap(info: mi.Type) -> mi.Type:
    while isinstance(info, mi.Metadata):
        info = info.type
    return info


def description_of(info: mi.Type) -> str | None:
    """The Meta description on the field, or on a member of its union (`Annotated[...] | None`)."""
    while isinstance(info, mi.Metadata):
        text = (info.extra_json_schema or {}).get("description")
        if text:
            return str(text)
        info = info.type
    if isinstance(info, mi.UnionType):
        for member in info.types:
            text = description_of(member)
            if text is not None:
                return text
    return None


def nested_structs(info: mi.Type, path: str) -> Iterator[tuple[str, mi.StructType]]:
    """Structs directly inside a field's type, with the YAML path each one sits at."""
    info = unwrap(info)
    if isinstance(info, mi.StructType):
        yield path, info
    elif isinstance(info, mi.UnionType):
        for member in info.types:
            yield from nested_structs(member, path)
    elif isinstance(info, mi.ListType):
        yield from nested_structs(info.item_type, f"{path}[]")
    elif isinstance(info, mi.DictType):
        yield from nested_structs(info.value_type, f"{path}.<name>")


@dataclass(frozen=True)
class StructSection:
    path: str  # YAML path of the block; "" is the root of the file
    struct: mi.StructType

    @property
    def heading(self) -> str:
        return code(self.path) if self.path else "Root keys"

    @property
    def anchor(self) -> str:
        return github_anchor(self.heading)


def struct_sections() -> list[StructSection]:
    """Every struct reachable from Options, depth first in field order, each once."""
    sections: list[StructSection] = []
    seen: set[type] = set()

    def visit(path: str, struct: mi.StructType) -> None:
        if struct.cls in seen:
            return
        seen.add(struct.cls)
        sections.append(StructSection(path, struct))
        for field in ordered_fields(struct):
            child_path = f"{path}.{field.encode_name}" if path else field.encode_name
            for nested_path, nested in nested_structs(field.type, child_path):
                visit(nested_path, nested)

    root = mi.type_info(Options)
    assert isinstance(root, mi.StructType)
    visit("", root)
    return sections


def ordered_fields(struct: mi.StructType) -> list[mi.Field]:
    """Fields inherited from a base struct (enabled, max_adjustments) come first."""
    inherited: set[str] = set()
    for base in struct.cls.__mro__[1:]:
        names = getattr(base, "__struct_fields__", None)
        if isinstance(names, tuple):
            inherited |= set(names)
    return sorted(struct.fields, key=lambda field: field.name not in inherited)


def type_text(info: mi.Type, anchors: dict[type, str]) -> str:
    info = unwrap(info)
    if isinstance(info, mi.StructType):
        return f"[mapping](#{anchors[info.cls]})"
    if isinstance(info, mi.UnionType):
        members = [type_text(member, anchors) for member in info.types]
        members.sort(key=lambda text: text == "null")  # null last
        return " | ".join(dict.fromkeys(members))
    if isinstance(info, mi.LiteralType):
        return " | ".join(dict.fromkeys(type(value).__name__ for value in info.values))
    if isinstance(info, mi.ListType | mi.VarTupleType):
        return f"list[{type_text(info.item_type, anchors)}]"
    if isinstance(info, mi.TupleType):  # fixed length, written as a YAML list
        return "[" + ", ".join(type_text(item, anchors) for item in info.item_types) + "]"
    if isinstance(info, mi.DictType):
        return f"dict[{type_text(info.key_type, anchors)}, {type_text(info.value_type, anchors)}]"
    names: dict[type, str] = {
        mi.IntType: "int",
        mi.FloatType: "float",
        mi.StrType: "str",
        mi.BoolType: "bool",
        mi.NoneType: "null",
        mi.AnyType: "any",
    }
    return names.get(type(info), type(info).__name__)


def bounds_text(info: mi.IntType | mi.FloatType) -> str:
    parts: list[str] = []
    if info.ge is not None:
        parts.append(f">= {info.ge:g}")
    if info.gt is not None:
        parts.append(f"> {info.gt:g}")
    if info.le is not None:
        parts.append(f"<= {info.le:g}")
    if info.lt is not None:
        parts.append(f"< {info.lt:g}")
    if info.multiple_of is not None:
        parts.append(f"multiple of {info.multiple_of:g}")
    return " and ".join(parts)


def accepted_text(info: mi.Type) -> str:
    """What the decoder accepts beyond the type: bounds, choices, lengths."""
    info = unwrap(info)
    if isinstance(info, mi.IntType | mi.FloatType):
        return bounds_text(info)
    if isinstance(info, mi.LiteralType):
        values = ", ".join(code(yaml_text(value)) for value in info.values)
        return values if len(info.values) == 1 else f"one of {values}"
    if isinstance(info, mi.UnionType):
        parts = [accepted_text(member) for member in info.types]
        return " or ".join(part for part in parts if part)
    if isinstance(info, mi.ListType):
        parts: list[str] = []
        if info.min_length is not None:
            parts.append(f"at least {info.min_length} item{'s' if info.min_length != 1 else ''}")
        if info.max_length is not None:
            parts.append(f"at most {info.max_length} items")
        item = accepted_text(info.item_type)
        if item:
            parts.append(f"each {item}")
        return "; ".join(parts)
    if isinstance(info, mi.DictType):
        value = accepted_text(info.value_type)
        return f"each value {value}" if value else ""
    if isinstance(info, mi.StrType):
        parts = []
        if info.min_length is not None:
            parts.append(f"at least {info.min_length} characters")
        if info.pattern is not None:
            parts.append(f"matches {code(info.pattern)}")
        return "; ".join(parts)
    return ""


def default_text(field: mi.Field) -> str:
    if field.required:
        return "required"
    if field.default is not msgspec.NODEFAULT:
        return code(yaml_text(field.default))
    assert field.default_factory is not msgspec.NODEFAULT
    return code(yaml_text(field.default_factory()))


def field_description(struct: mi.StructType, field: mi.Field) -> str:
    own = description_of(field.type)
    if own is not None:
        return own
    return SUPPLEMENTARY_DESCRIPTIONS.get(f"{struct.cls.__name__}.{field.name}", "")


def struct_table(section: StructSection, anchors: dict[type, str]) -> list[str]:
    lines = ["| Key | Type | Default | Accepted | Description |", "|---|---|---|---|---|"]
    for field in ordered_fields(section.struct):
        row = (
            code(field.encode_name),
            type_text(field.type, anchors),
            default_text(field),
            accepted_text(field.type),
            field_description(section.struct, field),
        )
        lines.append("| " + " | ".join(cell(text) for text in row) + " |")
    return lines


def options_part() -> list[str]:
    sections = struct_sections()
    anchors = {section.struct.cls: section.anchor for section in sections}
    lines = [
        "## Option file",
        "",
        "Every block of an option file, at its YAML path (`<name>` stands for a key you "
        "choose). Unknown keys are errors. `null` is YAML's `~`.",
        "",
    ]
    for section in sections:
        lines += [f"### {section.heading}", ""]
        summary = first_paragraph(section.struct.cls)
        if summary:
            lines += [summary, ""]
        guide = automation_guide(section.path)
        if guide:
            lines += [f"How it decides: [automations.md]({guide}).", ""]
        lines += [*struct_table(section, anchors), ""]
    return lines


def automation_guide(path: str) -> str | None:
    """The automations.md section explaining the automation configured at `path`."""
    name = path.rpartition(".")[2]
    if path in (f"train.automations.{name}", "train.dynamic_loss_scheduling"):
        return f"automations.md#{name}"
    return None


def fields_without_description() -> set[str]:
    """`Struct.field` names whose struct gives no description (for the staleness test)."""
    return {
        f"{section.struct.cls.__name__}.{field.name}"
        for section in struct_sections()
        for field in section.struct.fields
        if description_of(field.type) is None
    }


# --------------------------------------------------------------- registered names
@dataclass(frozen=True)
class RegistryPart:
    title: str
    kind: str  # word used in entry headings
    yaml_key: str
    registry: Registry[Callable[..., Any]]
    skip: frozenset[str]  # parameters the user does not write
    note: str
    show_arguments: bool = True


def load_registries() -> list[RegistryPart]:
    # Importing the packages fills the registries.
    import traiNNer.archs
    import traiNNer.data
    import traiNNer.losses
    import traiNNer.metrics
    import traiNNer.optimizers
    import traiNNer.schedulers  # noqa: F401

    return [
        RegistryPart(
            "Architectures",
            "arch",
            "network_g.type",
            ARCH_REGISTRY,
            frozenset({"scale"}),
            "The other keys of `network_g` are the arch's keyword arguments below; `scale` "
            "comes from the root `scale`. See [architectures.md](architectures.md).",
        ),
        RegistryPart(
            "Datasets",
            "dataset",
            "datasets.<name>.type",
            DATASET_REGISTRY,
            frozenset(),
            "Datasets take no keyword arguments of their own; they read the keys of "
            "[`datasets.<name>`](#datasetsname).",
            show_arguments=False,
        ),
        RegistryPart(
            "Losses",
            "loss",
            "train.losses[].type",
            LOSS_REGISTRY,
            frozenset(),
            "Every entry also takes `loss_weight` (default 1.0; 0 turns the loss off, a "
            "negative weight compares the output with the bicubic upscale of the LR).",
        ),
        RegistryPart(
            "Metrics",
            "metric",
            "val.metrics.<name>.type",
            METRIC_REGISTRY,
            frozenset({"sr", "gt"}),
            "`crop_border` and `test_y_channel` are set under "
            "[`val.metrics.<name>`](#valmetricsname).",
        ),
        RegistryPart(
            "Optimizers",
            "optimizer",
            "train.optim_g.type",
            OPTIMIZER_REGISTRY,
            frozenset({"params"}),
            "The other keys of `optim_g` are the optimizer's keyword arguments below.",
        ),
        RegistryPart(
            "Schedulers",
            "scheduler",
            "train.scheduler.type",
            SCHEDULER_REGISTRY,
            frozenset(),
            "Counted in iterations; the result multiplies the base LR, together with warmup "
            "and the automations' LR multiplier.",
        ),
    ]


def arguments_table(obj: Callable[..., Any], skip: frozenset[str]) -> list[str]:
    """The keyword arguments a user may set, typed exactly as the trainer checks them."""
    info = mi.type_info(kwargs_struct(obj, skip))
    assert isinstance(info, mi.StructType)
    if not info.fields:
        return ["No arguments.", ""]
    lines = ["| Key | Type | Default | Accepted |", "|---|---|---|---|"]
    for field in info.fields:
        row = (
            code(field.encode_name),
            type_text(field.type, {}),
            default_text(field),
            accepted_text(field.type),
        )
        lines.append("| " + " | ".join(cell(text) for text in row) + " |")
    return [*lines, ""]


def registry_section(part: RegistryPart) -> list[str]:
    lines = [f"### {part.title}", "", f"`{part.yaml_key}`. {part.note}", ""]
    names = part.registry.names()
    lines += ["| Name | Summary |", "|---|---|"]
    first_name: dict[int, str] = {}
    for name in names:
        obj = part.registry.get(name)
        alias_of = first_name.setdefault(id(obj), name)
        summary = f"Same as `{alias_of}`." if alias_of != name else first_paragraph(obj)
        lines.append(f"| {code(name)} | {cell(summary)} |")
    lines.append("")
    if not part.show_arguments:
        return lines
    for name in names:
        obj = part.registry.get(name)
        if first_name[id(obj)] != name:
            continue  # an alias: its arguments are those of the first name
        lines += [f"#### {part.kind} {code(name)}", ""]
        better = getattr(obj, "better", None)
        if isinstance(better, str):
            lines += [f"Better: {better}.", ""]
        lines += arguments_table(obj, part.skip)
    return lines


def registries_part() -> list[str]:
    lines = [
        "## Registered names",
        "",
        "Names are matched case-insensitively (`AdamW` = `adamw`). Keyword arguments are "
        "checked against the signature before training starts.",
        "",
    ]
    for part in load_registries():
        lines += registry_section(part)
    return lines


# ---------------------------------------------------------------------------- output
def build_reference() -> str:
    lines = [
        "# Option reference",
        "",
        "Generated by `python scripts/generate_option_docs.py` from the option structs and "
        "the registries; do not edit by hand. How the options fit together: "
        "[configuration.md](configuration.md); what the automations do: "
        "[automations.md](automations.md).",
        "",
        *options_part(),
        *registries_part(),
    ]
    while lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def main() -> None:
    REFERENCE_PATH.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE_PATH.write_text(build_reference(), encoding="utf-8")
    print(f"wrote {REFERENCE_PATH}")


if __name__ == "__main__":
    main()
