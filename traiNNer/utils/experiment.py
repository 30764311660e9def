"""The output layout: experiments/<name>/..., tb_logger/<name>/ (traiNNer-redux's)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from traiNNer.config.schema import Options


@dataclass(frozen=True)
class ExperimentPaths:
    root: Path
    models: Path
    training_states: Path
    visualization: Path
    tb_logger: Path
    decision_log: Path

    @classmethod
    def for_options(cls, opt: Options) -> ExperimentPaths:
        experiments = Path(opt.path.experiments_root or "experiments")
        root = experiments / opt.name
        return cls(
            root=root,
            models=root / "models",
            training_states=root / "training_states",
            visualization=root / "visualization",
            tb_logger=experiments.parent / "tb_logger" / opt.name,
            decision_log=root / "automations.jsonl",
        )

    def create(self, option_file: Path, resuming: bool) -> None:
        """Make the folders; a previous run under the same name is archived, never lost."""
        if not resuming and self.root.exists() and any(self.root.iterdir()):
            stamp = time.strftime("%Y%m%d_%H%M%S")
            self.root.rename(self.root.with_name(f"{self.root.name}_archived_{stamp}"))
            if self.tb_logger.exists():
                self.tb_logger.rename(
                    self.tb_logger.with_name(f"{self.tb_logger.name}_archived_{stamp}")
                )
        for folder in (self.models, self.training_states, self.visualization, self.tb_logger):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(option_file, self.root / option_file.name)
