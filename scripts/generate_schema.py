"""Write schemas/options.schema.json, the JSON schema editors use for option files.

Option files point at it with `# yaml-language-server: $schema=...`. Run after
changing any option struct; a test fails while the committed file is stale.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from traiNNer.config.schema import Options

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "options.schema.json"


def build_schema() -> str:
    schema = msgspec.json.schema(Options)
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> None:
    SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_PATH.write_text(build_schema(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")


if __name__ == "__main__":
    main()
