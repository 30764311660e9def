"""msgspec decoding with errors rewritten as one-line YAML paths."""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import msgspec

from traiNNer.utils.errors import ConfigError, did_you_mean

S = TypeVar("S")

_AT_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def join_path(prefix: str, suffix: str) -> str:
    """Join 'train' and '.losses[1]' into 'train.losses[1]'."""
    if not prefix:
        return suffix.lstrip(".")
    if not suffix:
        return prefix
    return prefix + (suffix if suffix.startswith("[") else "." + suffix.lstrip("."))


def _fields_at(struct_type: Any, path: str) -> list[str]:
    """Best-effort list of the field names the struct accepts at `path`."""
    info: Any = msgspec.inspect.type_info(struct_type)
    for part in re.findall(r"\.([A-Za-z_0-9]+)|\[\d+\]", path):
        info = _element_type(info, part)
        if info is None:
            return []
    info = _unwrap(info)
    if isinstance(info, msgspec.inspect.StructType):
        return [f.encode_name for f in info.fields]
    return []


def _unwrap(info: Any) -> Any:
    """Strip metadata and optional-None wrappers; a union of structs gives its first."""
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    if isinstance(info, msgspec.inspect.UnionType):
        structs = [t for t in info.types if isinstance(_unwrap(t), msgspec.inspect.StructType)]
        if structs:
            return _unwrap(structs[0])
    return info


def _element_type(info: Any, part: str) -> Any:
    info = _unwrap(info)
    if part == "":  # list index
        if isinstance(info, msgspec.inspect.ListType):
            return info.item_type
        if isinstance(info, msgspec.inspect.DictType):
            return info.value_type
        return None
    if isinstance(info, msgspec.inspect.StructType):
        for field in info.fields:
            if field.encode_name == part:
                return field.type
    if isinstance(info, msgspec.inspect.DictType):
        return info.value_type
    return None


def _rewrite(message: str, prefix: str, known_fields: Callable[[str], Iterable[str]]) -> str:
    match = _AT_PATH.match(message.strip())
    assert match is not None
    msg, path = match.group("msg"), match.group("path") or ""
    unknown = _UNKNOWN.match(msg)
    if unknown:
        field = unknown.group("field")
        where = join_path(join_path(prefix, path), field)
        choices = list(known_fields(path))
        accepted = f" (accepted: {', '.join(choices)})" if choices else ""
        hint = did_you_mean(field, choices)
        return f"{where}: unknown key{hint}" + ("" if hint else accepted)
    missing = _MISSING.match(msg)
    if missing:
        where = join_path(join_path(prefix, path), missing.group("field"))
        return f"{where}: required key is missing"
    where = join_path(prefix, path) or "<root>"
    return f"{where}: {msg[0].lower() + msg[1:]}"


def _retry_dict_entries(data: Any, target: Any, message: str, prefix: str) -> None:
    """msgspec writes dict keys as `[...]`; convert each entry alone to name the key."""
    match = _AT_PATH.match(message.strip())
    path = (match.group("path") if match else None) or ""
    if "[...]" not in path:
        return
    head = path.split("[...]", 1)[0]
    info: Any = msgspec.inspect.type_info(target)
    node = data
    for part in re.findall(r"\.([A-Za-z_0-9]+)|\[(\d+)\]", head):
        name, index = part
        info = _element_type(info, name)
        node = node[int(index)] if index else node.get(name) if isinstance(node, dict) else None
        if info is None or node is None:
            return
    info = _unwrap(info)
    value_info = _unwrap(info.value_type) if isinstance(info, msgspec.inspect.DictType) else None
    if not isinstance(value_info, msgspec.inspect.StructType) or not isinstance(node, dict):
        return
    for key, value in node.items():
        convert(value, value_info.cls, join_path(prefix, f"{head}.{key}"))


def convert(data: Any, target: type[S], prefix: str = "") -> S:
    """Convert plain YAML data into `target`, raising ConfigError with the YAML path."""
    try:
        return msgspec.convert(data, target, strict=False)
    except msgspec.ValidationError as err:
        _retry_dict_entries(data, target, str(err), prefix)
        raise ConfigError(_rewrite(str(err), prefix, lambda p: _fields_at(target, p))) from None


# ---------------------------------------------------------------------------
# Keyword arguments of registered callables (archs, losses, optimizers, ...)
# ---------------------------------------------------------------------------

_SUPPORTED_LEAVES = (int, float, str, bool, type(None))


def _msgspec_can_handle(annotation: Any) -> bool:
    try:
        info = msgspec.inspect.type_info(annotation)
    except Exception:
        return False
    # A "custom type" (e.g. torch.Tensor) cannot come from YAML.
    return not isinstance(info, msgspec.inspect.CustomType)


def _sanitize(annotation: Any) -> Any:
    """Make a signature annotation usable by msgspec.

    Unions keep only the members msgspec understands (`float | Tensor` -> `float`);
    anything else unsupported becomes Any.
    """
    if annotation is inspect.Parameter.empty:
        return Any
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [_sanitize(a) for a in typing.get_args(annotation)]
        members = [m for m in members if m is not Any]
        if not members:
            return Any
        return typing.Union[tuple(members)]  # noqa: UP007 - built dynamically
    if origin is typing.Literal:
        return annotation
    if origin in (list, tuple, dict):
        args = tuple(_sanitize(a) if a is not Ellipsis else a for a in typing.get_args(annotation))
        rebuilt = origin[args] if args else origin  # pyright: ignore[reportInvalidTypeArguments]
        return rebuilt if _msgspec_can_handle(rebuilt) else Any
    if annotation in _SUPPORTED_LEAVES:
        return annotation
    return annotation if _msgspec_can_handle(annotation) else Any


def _annotation_for(param: inspect.Parameter, hints: dict[str, Any]) -> Any:
    annotation = hints.get(param.name, param.annotation)
    if annotation is inspect.Parameter.empty and param.default is not inspect.Parameter.empty:
        default = param.default
        if isinstance(default, bool):
            return bool
        if isinstance(default, int):
            return int
        if isinstance(default, float):
            return float
        if isinstance(default, str):
            return str
        return Any
    return _sanitize(annotation)


_KWARGS_STRUCTS: dict[Any, type[msgspec.Struct]] = {}


Field = tuple[str, Any] | tuple[str, Any, Any]


def kwargs_struct(
    fn: Callable[..., Any], skip: Iterable[str] = (), extra_fields: tuple[Field, ...] = ()
) -> type[msgspec.Struct]:
    """Build (and cache) a strict msgspec struct describing `fn`'s keyword arguments.

    `extra_fields` are keys the config entry accepts besides `fn`'s own (e.g. a
    loss's `loss_weight`), so typos of them get a did-you-mean too.
    """
    skip = tuple(skip)
    key = (fn, skip, extra_fields)
    if key in _KWARGS_STRUCTS:
        return _KWARGS_STRUCTS[key]
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    fields: list[Field] = list(extra_fields)
    for name, param in inspect.signature(fn).parameters.items():
        if name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = _annotation_for(param, hints)
        if param.default is inspect.Parameter.empty:
            fields.append((name, annotation))
        else:
            fields.append((name, annotation, param.default))
    struct = msgspec.defstruct(
        f"{getattr(fn, '__name__', 'callable')}_kwargs",
        fields,
        forbid_unknown_fields=True,
        kw_only=True,
    )
    _KWARGS_STRUCTS[key] = struct
    return struct


def check_kwargs(
    fn: Callable[..., Any],
    kwargs: dict[str, Any],
    path: str,
    skip: Iterable[str] = (),
    extra_fields: tuple[Field, ...] = (),
) -> dict[str, Any]:
    """Validate `kwargs` against `fn`'s signature; return them with types converted.

    Only keys the user wrote are returned, so the callable's own defaults apply.
    """
    struct = kwargs_struct(fn, skip, extra_fields)
    decoded = convert(kwargs, struct, prefix=path)
    return {name: getattr(decoded, name) for name in kwargs}
