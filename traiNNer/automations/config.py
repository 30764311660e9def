"""`train.automations`: one optional block per automation."""

from __future__ import annotations

import msgspec

from traiNNer.automations.adaptive_gradient_clipping import AdaptiveGradientClippingConfig
from traiNNer.automations.augmentation_scheduling import AugmentationSchedulingConfig
from traiNNer.automations.batch_size import BatchSizeConfig
from traiNNer.automations.early_stopping import EarlyStoppingConfig
from traiNNer.automations.lr_scheduling import LRSchedulingConfig
from traiNNer.automations.multi_metric_lr import MultiMetricLRConfig
from traiNNer.automations.optimizer_selection import OptimizerSelectionConfig
from traiNNer.automations.precision import PrecisionConfig
from traiNNer.automations.regularization_scheduling import RegularizationSchedulingConfig
from traiNNer.automations.validation_frequency import ValidationFrequencyConfig


class AutomationsOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Each key configures one automation; a missing key leaves it off."""

    lr_scheduling: LRSchedulingConfig | None = None
    batch_size: BatchSizeConfig | None = None
    adaptive_gradient_clipping: AdaptiveGradientClippingConfig | None = None
    early_stopping: EarlyStoppingConfig | None = None
    precision: PrecisionConfig | None = None
    validation_frequency: ValidationFrequencyConfig | None = None
    augmentation_scheduling: AugmentationSchedulingConfig | None = None
    optimizer_selection: OptimizerSelectionConfig | None = None
    regularization_scheduling: RegularizationSchedulingConfig | None = None
    multi_metric_lr: MultiMetricLRConfig | None = None
