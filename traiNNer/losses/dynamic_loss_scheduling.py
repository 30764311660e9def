"""SCAFFOLD: replaced by the real dynamic loss scheduler."""

import msgspec


class DynamicLossSchedulingOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
