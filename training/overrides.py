"""Type-checked ``key=value`` overrides of nested frozen dataclasses (the ``--set`` option).

Every field of a config can be reached with a dotted path (``model.hrda.hr_crop_size=256``).
Values are parsed by the field's declared type; unknown keys and unparsable values are errors that
list the valid choices.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from models.config import dataclass_from_dict, optional_inner

__all__ = ["OverrideError", "apply_overrides", "dataclass_from_dict", "field_paths", "parse_value", "to_dict"]


class OverrideError(ValueError):
    """A ``--set key=value`` that names no field or whose value has the wrong type."""


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _parse_scalar(text: str, tp: Any, key: str) -> Any:
    if tp is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise OverrideError(f"{key}: expected a boolean (true/false), got {text!r}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise OverrideError(f"{key}: expected an integer, got {text!r}") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise OverrideError(f"{key}: expected a number, got {text!r}") from None
    if tp is str:
        return text
    raise OverrideError(f"{key}: fields of type {tp} cannot be set from the command line")


def parse_value(text: str, tp: Any, key: str) -> Any:
    """Parses ``text`` as a value of type ``tp`` (scalars, Optional, tuples, Literal)."""
    inner, optional = optional_inner(tp)
    if optional and text.strip().lower() in ("none", "null"):
        return None
    origin = typing.get_origin(inner)
    if origin is typing.Literal:
        choices = typing.get_args(inner)
        value = _parse_scalar(text, type(choices[0]), key)
        if value not in choices:
            raise OverrideError(f"{key}: expected one of {list(choices)}, got {text!r}")
        return value
    if origin is tuple:
        args = typing.get_args(inner)
        stripped = text.strip().strip("()[]")
        parts = [p.strip() for p in stripped.split(",") if p.strip()] if stripped else []
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(parse_value(p, args[0], key) for p in parts)
        if len(parts) != len(args):
            raise OverrideError(f"{key}: expected {len(args)} comma-separated values, got {text!r}")
        return tuple(parse_value(p, a, key) for p, a in zip(parts, args))
    return _parse_scalar(text, inner, key)


def field_paths(config: Any, prefix: str = "") -> list[str]:
    """Every settable dotted key of a (nested) dataclass instance, sorted."""
    paths = []
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        inner, _ = optional_inner(hints[item.name])
        if dataclasses.is_dataclass(value) or _is_dataclass_type(inner):
            if value is None:
                value = inner()
            paths.extend(field_paths(value, f"{prefix}{item.name}."))
        else:
            paths.append(prefix + item.name)
    return sorted(paths)


def _set(config: Any, parts: list[str], text: str, full_key: str) -> Any:
    hints = typing.get_type_hints(type(config))
    names = {f.name for f in dataclasses.fields(config)}
    name = parts[0]
    if name not in names:
        raise OverrideError(
            f"unknown key {full_key!r}: {type(config).__name__} has no field {name!r}; "
            f"valid keys here: {', '.join(sorted(names))}"
        )
    tp = hints[name]
    current = getattr(config, name)
    inner, _ = optional_inner(tp)
    if len(parts) == 1:
        if _is_dataclass_type(inner):
            if text.strip().lower() in ("none", "null") and current is not None:
                return dataclasses.replace(config, **{name: None})
            raise OverrideError(
                f"{full_key} is a group of settings; set its fields instead "
                f"({', '.join(field_paths(current or inner(), full_key + '.'))})"
            )
        return dataclasses.replace(config, **{name: parse_value(text, tp, full_key)})
    if not _is_dataclass_type(inner):
        raise OverrideError(f"unknown key {full_key!r}: {name!r} is a plain value, not a group")
    child = current if current is not None else inner()
    return dataclasses.replace(config, **{name: _set(child, parts[1:], text, full_key)})


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """Returns ``config`` with each ``key=value`` applied in order.

    Raises:
        OverrideError: malformed item, unknown key (with the valid keys) or a bad value.
    """
    for item in overrides:
        if "=" not in item:
            raise OverrideError(f"expected key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise OverrideError(f"empty key in {item!r}")
        config = _set(config, key.split("."), text, key)
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` made JSON-safe (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
