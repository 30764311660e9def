"""The JSON schema editors read stays in step with the option structs."""

from __future__ import annotations

import json

from scripts.generate_schema import SCHEMA_PATH, build_schema


def test_committed_schema_is_current() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == build_schema(), (
        "schemas/options.schema.json is stale: run python scripts/generate_schema.py"
    )


def test_schema_documents_automation_keys() -> None:
    schema = json.loads(build_schema())
    defs = schema["$defs"]
    clipping = defs["AdaptiveGradientClippingConfig"]["properties"]
    assert {"initial_threshold", "adjustment_factor", "gradient_history_size"} <= set(clipping)
    assert defs["Options"]["additionalProperties"] is False
