"""Reading an option file: YAML that a person wrote, checked for what YAML lets through.

PyYAML keeps the last of two equal keys and reads `1e400` as inf; either would start a
run nobody asked for (a duplicated `total_iter` started a 27-day run). Both are errors
here, with the key's path and line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from traiNNer.utils.errors import ConfigError

# Beyond this no count, size or seed is meant; such a number overflows later instead.
MAX_INTEGER = 2**53


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)  # pyright: ignore[reportArgumentType]
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(
                f"line {line}: key '{key}' is given twice in one mapping "
                f"(first on line {seen[key]}); keep one"
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # pyright: ignore[reportArgumentType]
)


def _check_numbers(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_numbers(item, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: must be a finite number, got {value}")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
        raise ConfigError(f"{path}: {str(value)[:20]}... is too large (at most 2^53)")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The option file's mapping; ConfigError naming the file for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: option file not found")
    try:
        # _StrictLoader is a SafeLoader: no Python objects are built.
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options at the top level")
    _check_numbers(data, "")
    return data
