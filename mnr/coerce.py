"""Raw YAML and command-line values checked against dataclass annotations, naming the key.

`from_dict(ExperimentConfig, data)` builds the config; `coerce` checks one value. Written here
rather than taken from pydantic or dacite: the checks need only the standard library's
`typing`, and every error must name the dotted key a user typed (`optim.lr: expected a number,
got 'fast'`), including YAML 1.1's reading of `1e-3` as a string.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal

from mnr.errors import MnrError

__all__ = ["coerce", "from_dict"]

_YAML11_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to floats).

    `key` names the setting in the error, e.g. "optim.lr: expected a number, got 'fast'".
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except MnrError as exc:
                errors.append(str(exc))
        raise MnrError(errors[0] if errors else f"{key}: must not be null")
    if origin is Literal:
        if value not in args:
            raise MnrError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise MnrError(f"{key}: expected a list, got {value!r}")
        return (
            [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
            if args
            else list(value)
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise MnrError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise MnrError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MnrError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.match(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; users mean a number
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MnrError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise MnrError(f"{key}: expected a string, got {value!r}")
        return value
    raise MnrError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def from_dict(cls: type, data: Any, *, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types by name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MnrError(f"{prefix or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise MnrError(
            f"unknown config key {where}{unknown[0]}; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {
        name: coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in data.items()
    }
    return cls(**kwargs)
