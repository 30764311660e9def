"""Best validation value of every metric, kept across resume, and the best weights."""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from traiNNer.automations.config import enabled_automations
from traiNNer.config.schema import Options


class _HasInferenceNet(Protocol):
    @property
    def inference_net(self) -> torch.nn.Module: ...

    @property
    def bare_net_g(self) -> torch.nn.Module: ...


class BestMetrics:
    """Tracks best values; the *first* metric of the first set decides "best weights"."""

    def __init__(self, opt: Options) -> None:
        self.directions: dict[str, str] = {}
        if opt.val is not None:
            for name, metric in opt.val.metrics.items():
                self.directions[name] = metric.better or "higher"
        # "Best weights" follow early stopping's metric when it is on, else the first one.
        self.primary = next(iter(self.directions), None)
        automations = opt.train.automations if opt.train is not None else None
        stopping = enabled_automations(automations).get("early_stopping")
        metric = getattr(stopping, "metric", None)
        if metric in self.directions:
            self.primary = metric
        self.values: dict[str, float] = {}
        self.iterations: dict[str, int] = {}
        # Best inference weights (EMA when enabled) and the matching trained weights.
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.best_weights_raw: dict[str, torch.Tensor] | None = None

    def _better(self, name: str, value: float, old: float | None) -> bool:
        if not math.isfinite(value):
            return False
        if old is None:
            return True
        return value > old if self.directions.get(name, "higher") == "higher" else value < old

    def update(self, metrics: dict[str, float], iteration: int, model: _HasInferenceNet) -> bool:
        """Record new values (keys `<set>/<metric>`); True when the primary metric improved."""
        improved_primary = False
        for key, value in metrics.items():
            if "/" not in key:
                continue
            name = key.split("/", 1)[1]
            if self._better(name, value, self.values.get(key)):
                self.values[key] = value
                self.iterations[key] = iteration
                if self.primary is not None and key == self._primary_key(metrics):
                    improved_primary = True
        if improved_primary:
            self.best_weights = _cloned(model.inference_net.state_dict())
            self.best_weights_raw = _cloned(model.bare_net_g.state_dict())
        return improved_primary

    def _primary_key(self, metrics: dict[str, float]) -> str | None:
        for key in metrics:
            if "/" in key and key.split("/", 1)[1] == self.primary:
                return key
        return None

    def restore_into(self, model: _HasInferenceNet) -> bool:
        """Load the best weights into the trained network (and EMA); False if none yet."""
        if self.best_weights_raw is None or self.best_weights is None:
            return False
        model.bare_net_g.load_state_dict(self.best_weights_raw)
        if model.inference_net is not model.bare_net_g:
            model.inference_net.load_state_dict(self.best_weights)
        return True

    def summary_lines(self) -> list[str]:
        return [
            f"Best {key}: {value:.4f} at iteration {self.iterations[key]:,}"
            for key, value in self.values.items()
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            "values": dict(self.values),
            "iterations": dict(self.iterations),
            "best_weights": self.best_weights,
            "best_weights_raw": self.best_weights_raw,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = dict(state["values"])
        self.iterations = dict(state["iterations"])
        self.best_weights = state["best_weights"]
        self.best_weights_raw = state["best_weights_raw"]


def _cloned(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in state.items()}
