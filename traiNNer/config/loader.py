"""Read an option file, decode it strictly and check everything before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from traiNNer.automations.config import AutomationsOptions
from traiNNer.automations.optimizer_selection import OptimizerSelection
from traiNNer.config.schema import Options, TrainOptions
from traiNNer.config.validation import check_kwargs, convert
from traiNNer.data.moa import validate_moa
from traiNNer.utils.errors import ConfigError
from traiNNer.utils.registry import (
    ARCH_REGISTRY,
    DATASET_REGISTRY,
    LOSS_REGISTRY,
    METRIC_REGISTRY,
    OPTIMIZER_REGISTRY,
    SCHEDULER_REGISTRY,
)


def _populate_registries() -> None:
    # Importing the packages registers their entries.
    import traiNNer.archs
    import traiNNer.data
    import traiNNer.losses
    import traiNNer.metrics
    import traiNNer.optimizers
    import traiNNer.schedulers  # noqa: F401


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: option file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options at the top level")
    return data


def split_type(entry: dict[str, Any], path: str) -> tuple[str, dict[str, Any]]:
    """Separate `type` from the rest of a registered-type entry."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: expected a mapping with a `type` key")
    kwargs = dict(entry)
    type_name = kwargs.pop("type", None)
    if not isinstance(type_name, str):
        raise ConfigError(f"{path}.type: required key is missing (a registered name)")
    return type_name, kwargs


def _check_network(opt: Options) -> None:
    type_name, kwargs = split_type(opt.network_g, "network_g")
    factory = ARCH_REGISTRY.get(type_name, "network_g.type")
    if "scale" in kwargs and kwargs.pop("scale") != opt.scale:
        raise ConfigError(
            f"network_g.scale: differs from the root `scale` ({opt.scale}); remove it, "
            "the root scale is passed to the network"
        )
    supported = getattr(factory, "supported_scales", None)
    if supported is not None and opt.scale not in supported:
        raise ConfigError(
            f"scale: {opt.scale} is not supported by {type_name} "
            f"(accepted: {', '.join(map(str, supported))})"
        )
    opt.network_g = {"type": type_name, **check_kwargs(factory, kwargs, "network_g", ("scale",))}


def _check_train(opt: Options) -> None:
    train = opt.train
    if train is None:
        return
    for i, entry in enumerate(train.losses):
        path = f"train.losses[{i}]"
        type_name, kwargs = split_type(entry, path)
        loss_cls = LOSS_REGISTRY.get(type_name, f"{path}.type")
        checked = check_kwargs(loss_cls, kwargs, path, extra_fields=(("loss_weight", float, 1.0),))
        train.losses[i] = {"type": type_name, "loss_weight": 1.0, **checked}
    if not any(e["loss_weight"] != 0 for e in train.losses):
        raise ConfigError("train.losses: every loss has loss_weight 0; enable at least one")

    type_name, kwargs = split_type(train.optim_g, "train.optim_g")
    optimizer = OPTIMIZER_REGISTRY.get(type_name, "train.optim_g.type")
    train.optim_g = {
        "type": type_name,
        **check_kwargs(optimizer, kwargs, "train.optim_g", ("params",)),
    }
    if train.scheduler is not None:
        type_name, kwargs = split_type(train.scheduler, "train.scheduler")
        schedule = SCHEDULER_REGISTRY.get(type_name, "train.scheduler.type")
        train.scheduler = {"type": type_name, **check_kwargs(schedule, kwargs, "train.scheduler")}

    validate_moa(train.moa_augs, train.moa_probs)
    _check_automations(train)


def _metric_references(automations: AutomationsOptions) -> list[tuple[str, str]]:
    """(YAML path, metric name) of every validation metric an enabled automation reads."""
    refs: list[tuple[str, str | None]] = []
    prefix = "train.automations"
    for name in (
        "lr_scheduling",
        "early_stopping",
        "validation_frequency",
        "augmentation_scheduling",
    ):
        block = getattr(automations, name)
        if block is not None and block.enabled:
            refs.append((f"{prefix}.{name}.metric", block.metric))
    regularization = automations.regularization_scheduling
    if regularization is not None and regularization.enabled:
        refs.append(
            (f"{prefix}.regularization_scheduling.overfit_metric", regularization.overfit_metric)
        )
    multi = automations.multi_metric_lr
    if multi is not None and multi.enabled:
        refs += [(f"{prefix}.multi_metric_lr.metrics.{m}", m) for m in multi.metrics]
    return [(path, metric) for path, metric in refs if metric is not None]


def _check_metric_references(opt: Options) -> None:
    """Automations (and ReduceLROnPlateau) that read a validation metric need it configured."""
    if opt.train is None:
        return
    refs: list[tuple[str, str]] = []
    scheduler = opt.train.scheduler
    if scheduler is not None and scheduler["type"].lower() == "reducelronplateau":
        first = next(iter(opt.val.metrics), None) if opt.val is not None else None
        monitor = scheduler.get("monitor") or first
        refs.append(("train.scheduler.monitor", monitor or "<none>"))
    if opt.train.automations is not None:
        refs += _metric_references(opt.train.automations)
    if not refs:
        return
    names = set(opt.val.metrics) if opt.val is not None and opt.val.val_enabled else set()
    available = set(names)  # `<metric>` (first set) or `<set>/<metric>`
    for key, dataset in opt.datasets.items():
        if key != "train":
            available |= {f"{dataset.name or key}/{metric}" for metric in names}
    for path, metric in refs:
        if metric not in available:
            accepted = ", ".join(sorted(m for m in available if "/" not in m)) or "none configured"
            raise ConfigError(
                f"{path}: '{metric}' is not a validation metric (val.metrics: {accepted})"
            )


def _check_automations(train: TrainOptions) -> None:
    """Cross-checks between automation blocks and the rest of the options."""
    automations = train.automations
    if automations is None:
        return
    augmentation = automations.augmentation_scheduling
    if augmentation is not None and augmentation.enabled and not train.use_moa:
        raise ConfigError(
            "train.automations.augmentation_scheduling: schedules MoA, which is off; "
            "set train.use_moa: true or disable it"
        )
    selection = automations.optimizer_selection
    if selection is not None and selection.enabled:
        path = "train.automations.optimizer_selection"
        race = OptimizerSelection(selection)
        for name in selection.candidates:
            optimizer = OPTIMIZER_REGISTRY.get(name, f"{path}.candidates")
            kwargs = race.kwargs_for(name, train.optim_g)
            check_kwargs(optimizer, kwargs, f"{path}.candidate_kwargs.{name}", ("params",))


def _check_datasets(opt: Options, for_training: bool) -> None:
    for name, dataset in opt.datasets.items():
        DATASET_REGISTRY.get(dataset.type, f"datasets.{name}.type")
        if not dataset.name:
            dataset.name = name
        if name.startswith("train") and dataset.lq_size is None:
            raise ConfigError(f"datasets.{name}.lq_size: required for a training set")
    if for_training and "train" not in opt.datasets:
        raise ConfigError("datasets.train: required key is missing (the training set)")


def _check_val(opt: Options) -> None:
    if opt.val is None:
        return
    for name, metric in opt.val.metrics.items():
        fn = METRIC_REGISTRY.get(metric.type, f"val.metrics.{name}.type")
        if metric.better is None:
            metric.better = getattr(fn, "better", "higher")


def validate(opt: Options, for_training: bool) -> Options:
    """Cross-field and registered-type checks that msgspec's decoding cannot do."""
    _populate_registries()
    if not opt.network_g:
        raise ConfigError("network_g: required key is missing (e.g. {type: paragonsr2_nano})")
    if for_training and opt.train is None:
        raise ConfigError("train: required key is missing (total_iter, optim_g, losses, ...)")
    _check_network(opt)
    _check_train(opt)
    _check_datasets(opt, for_training)
    _check_val(opt)
    _check_metric_references(opt)
    return opt


def load_options(path: str | Path, for_training: bool = True) -> Options:
    """Decode and fully validate an option file; raises ConfigError (exit code 2)."""
    data = read_yaml(path)
    opt = convert(data, Options)
    return validate(opt, for_training)
