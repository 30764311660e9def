"""Read an option file, decode it strictly and check everything before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traiNNer.automations.config import automations_options_type, enabled_automations
from traiNNer.automations.registry import get_automation
from traiNNer.config import compat, upstream_keys
from traiNNer.config.schema import Options
from traiNNer.config.validation import check_kwargs, convert
from traiNNer.config.yaml_io import read_yaml
from traiNNer.data.moa import validate_moa
from traiNNer.metrics.networks import check_metric_entry
from traiNNer.optimizers import check_optimizer_values
from traiNNer.schedulers import build_schedule
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
    if type_name not in ARCH_REGISTRY and type_name.lower() in compat.UPSTREAM_ARCHS:
        raise ConfigError(
            f"network_g.type: '{type_name}' is a traiNNer-redux architecture that traiNNer-auto "
            f"does not provide yet (available: {', '.join(ARCH_REGISTRY.names())})"
        )
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
        # A loss that reads files (distsloss) checks them here, unless it is off.
        check_options = getattr(loss_cls, "check_options", None)
        if check_options is not None and train.losses[i]["loss_weight"] != 0:
            check_options(train.losses[i], path)
        # ldlloss compares with the EMA model's output.
        needs_ema = getattr(loss_cls, "needs_ema_output", False)
        if needs_ema and train.losses[i]["loss_weight"] != 0 and train.ema_decay <= 0:
            raise ConfigError(
                f"{path}.type: {type_name} compares with the EMA model's output; "
                "set train.ema_decay > 0 (e.g. 0.999) or this loss's loss_weight to 0"
            )
    if not any(e["loss_weight"] != 0 for e in train.losses):
        raise ConfigError("train.losses: every loss has loss_weight 0; enable at least one")

    type_name, kwargs = split_type(train.optim_g, "train.optim_g")
    optimizer = OPTIMIZER_REGISTRY.get(type_name, "train.optim_g.type")
    checked = check_kwargs(optimizer, kwargs, "train.optim_g", ("params",))
    check_optimizer_values(type_name, checked, "train.optim_g")
    train.optim_g = {"type": type_name, **checked}
    if train.scheduler is not None:
        type_name, kwargs = split_type(train.scheduler, "train.scheduler")
        schedule = SCHEDULER_REGISTRY.get(type_name, "train.scheduler.type")
        checked = check_kwargs(schedule, kwargs, "train.scheduler")
        build_schedule(type_name, checked, train.total_iter, 1.0)  # values, as ConfigErrors
        train.scheduler = {"type": type_name, **checked}

    validate_moa(train.moa_augs, train.moa_probs)


def _metric_references(opt: Options) -> list[tuple[str, str, str | None]]:
    """(YAML path, metric name, assumed direction) of every metric an automation reads."""
    assert opt.train is not None
    refs: list[tuple[str, str, str | None]] = []
    for name, config in enabled_automations(opt.train.automations).items():
        for read in get_automation(name).metric_reads(config):
            refs.append((f"train.automations.{name}.{read.option}", read.metric, read.better))
    return refs


def _check_metric_references(opt: Options) -> None:
    """Automations (and ReduceLROnPlateau) that read a validation metric need it configured."""
    if opt.train is None:
        return
    refs: list[tuple[str, str, str | None]] = []
    scheduler = opt.train.scheduler
    if scheduler is not None and scheduler["type"].lower() == "reducelronplateau":
        first = next(iter(opt.val.metrics), None) if opt.val is not None else None
        monitor = scheduler.get("monitor") or first
        refs.append(("train.scheduler.monitor", monitor or "<none>", None))
    refs += _metric_references(opt)
    if not refs:
        return
    names = set(opt.val.metrics) if opt.val is not None and opt.val.val_enabled else set()
    available = set(names)  # `<metric>` (first set) or `<set>/<metric>`
    for key, dataset in opt.datasets.items():
        if key != "train":
            available |= {f"{dataset.name or key}/{metric}" for metric in names}
    for path, metric, better in refs:
        if metric not in available:
            accepted = ", ".join(sorted(m for m in available if "/" not in m)) or "none configured"
            raise ConfigError(
                f"{path}: '{metric}' is not a validation metric (val.metrics: {accepted})"
            )
        assert opt.val is not None
        declared = opt.val.metrics[metric.rpartition("/")[2]].better
        if better is not None and declared is not None and better != declared:
            raise ConfigError(
                f"{path}: the automation treats '{metric}' as {better}-is-better, but "
                f"val.metrics says {declared}; set its direction (better) to {declared}"
            )


def _complete_automations(opt: Options) -> None:
    """Fill the metric keys each enabled automation leaves null from the option file."""
    if opt.train is None:
        return
    for name, config in enabled_automations(opt.train.automations).items():
        setattr(opt.train.automations, name, get_automation(name).completed(config, opt))


def _check_automations(opt: Options) -> None:
    """Each enabled automation's own cross-checks against the rest of the options."""
    if opt.train is None:
        return
    for name, config in enabled_automations(opt.train.automations).items():
        get_automation(name).check_options(config, opt)


def _check_datasets(opt: Options, for_training: bool) -> None:
    for name, dataset in opt.datasets.items():
        backend = (dataset.io_backend or {}).get("type", "disk")
        if backend != "disk":
            raise ConfigError(
                f"datasets.{name}.io_backend.type: '{backend}' is not supported yet "
                "(accepted: disk)"
            )
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
    metrics_run = opt.val.val_enabled and opt.val.metrics_enabled
    for name, metric in list(opt.val.metrics.items()):
        unavailable = compat.UNAVAILABLE_METRICS.get(metric.type.lower())
        if unavailable is not None and metric.type not in METRIC_REGISTRY:
            if metrics_run:
                raise ConfigError(
                    f"val.metrics.{name}.type: {metric.type} is not available in traiNNer-auto "
                    f"({unavailable[1]}); remove it, or set val.metrics_enabled: false"
                )
            del opt.val.metrics[name]
            compat.note(
                f"val.metrics.{name}: {metric.type} ignored ({unavailable[1]}; metrics are off)"
            )
            continue
        fn = METRIC_REGISTRY.get(metric.type, f"val.metrics.{name}.type")
        # Learned metrics: their weight files, only when the metric will run.
        check_metric_entry(f"val.metrics.{name}", metric, fn, will_run=metrics_run)
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
    _complete_automations(opt)
    _check_automations(opt)
    _check_metric_references(opt)
    return opt


# traiNNer-auto's earlier home of the loss-weighting block, still accepted.
LEGACY_LOSS_WEIGHTING = "dynamic_loss_scheduling"


def _decode_automations(train_data: Any, opt: Options) -> None:
    """`train.automations` against every registered automation (plugins included), and
    `train.dynamic_loss_scheduling` as the block of the automation of that name."""
    if opt.train is None or not isinstance(train_data, dict):
        return
    struct = automations_options_type()
    raw = train_data.get("automations")
    legacy = train_data.get(LEGACY_LOSS_WEIGHTING)
    if raw is None and legacy is None:
        return
    automations = convert(raw if raw is not None else {}, struct, prefix="train.automations")
    if legacy is not None:
        if getattr(automations, LEGACY_LOSS_WEIGHTING) is not None:
            raise ConfigError(
                f"train.{LEGACY_LOSS_WEIGHTING}: also given as "
                f"train.automations.{LEGACY_LOSS_WEIGHTING}; keep one of them"
            )
        config_type = get_automation(LEGACY_LOSS_WEIGHTING).config_type
        block = convert(legacy, config_type, prefix=f"train.{LEGACY_LOSS_WEIGHTING}")
        setattr(automations, LEGACY_LOSS_WEIGHTING, block)
    opt.train.automations = automations
    opt.train.dynamic_loss_scheduling = None  # one home from here on


def decode_options(data: dict[str, Any]) -> Options:
    """Strictly decode plain option data (no cross-checks: see `validate`)."""
    data = upstream_keys.translate(data)
    train_data = data.get("train")
    if isinstance(train_data, dict):
        # Decoded against the registry as it is now (plugins included), not at import.
        moved = ("automations", LEGACY_LOSS_WEIGHTING)
        data = {**data, "train": {k: v for k, v in train_data.items() if k not in moved}}
    opt = convert(data, Options)
    _decode_automations(train_data, opt)
    return opt


def load_options(path: str | Path, for_training: bool = True) -> Options:
    """Decode and fully validate an option file; raises ConfigError (exit code 2)."""
    return validate(decode_options(read_yaml(path)), for_training)
