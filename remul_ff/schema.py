"""One schema mechanism for every config and spec: dataclasses whose fields carry their own choices
and ranges, parsed from YAML with one coercion and checked by one function.

A field declares what it accepts beside its default::

    lr: float = bounded(1e-3, positive, "a positive number")
    scheduler: str = one_of("cosine", "plateau", "constant")

:func:`parse_section` builds a dataclass from a mapping (unknown keys get the closest valid key, wrong
types name the key, the expected type and the value; YAML 1.1's ``1e-3`` is read as the number it
is) and :func:`check_fields` checks every field's choices and range, recursing into sections.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, Union

import yaml

from remul_ff.errors import ConfigError

MISSING = dataclasses.MISSING


def _field(default: Any, default_factory: Any, metadata: dict) -> Any:
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def bounded(
    default: Any = MISSING, test: Callable[[Any], bool] | None = None, must: str = "", *, what: str = "", default_factory: Any = MISSING
):
    """A field whose values must pass ``test`` (``must`` says what they must be); ``what`` names it in
    messages for people (default: ``config key 'section.name'``)."""
    return _field(default, default_factory, {"check": (test, must), "what": what})


def one_of(*choices: str, default: str | None = None, what: str = "") -> Any:
    """A field whose value must be one of ``choices``; ``default`` (the first if not given) is the default."""
    return _field(choices[0] if default is None else default, MISSING, {"choices": tuple(choices), "what": what})


def same_as(cls: type, name: str, default: Any = MISSING) -> Any:
    """A field that accepts what ``cls``'s field ``name`` accepts, with its default unless ``default`` is
    given: one dataclass that embeds another's settings declares each range once."""
    source = {f.name: f for f in dataclasses.fields(cls)}[name]
    metadata = {**source.metadata, "what": ""}  # messages name this field, not the source's
    return _field(source.default if default is MISSING else default, MISSING, metadata)


# Common ranges, for bounded(default, *RANGE)
POSITIVE = (lambda v: math.isfinite(v) and v > 0, "a positive number")
NON_NEGATIVE = (lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
AT_LEAST_1_OR_NULL = (lambda v: v is None or v >= 1, "at least 1 or null")
DISTANCE = (POSITIVE[0], "a positive distance in Å")
ENVELOPE_EXPONENT = (AT_LEAST_1[0], "at least 1 (the cutoff envelope's exponent; 6 is usual)")


def choices_of(cls: type, name: str) -> tuple:
    """The choices declared for field ``name`` of dataclass ``cls``."""
    return next(f.metadata["choices"] for f in dataclasses.fields(cls) if f.name == name)


def check_fields(section: Any, prefix: str = "", error: type[Exception] = ConfigError) -> None:
    """Raise ``error`` for the first field of ``section`` (recursively) outside its choices or range."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, f"{prefix}{f.name}.", error)
            continue
        name = f.metadata.get("what") or f"config key '{prefix}{f.name}'"
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise error(f"{name} must be one of {', '.join(f.metadata['choices'])}, but got {value!r}.")
        test, must = f.metadata.get("check", (None, ""))
        if test is None:
            continue
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise error(f"{name} must be {must}, but is {value!r}.")  # e.g. '300' given from Python
        if not test(value):
            raise error(f"{name} must be {must}, but is {value!r}.")


def _type_name(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (Union, types.UnionType):
        names = " or ".join(_type_name(a) for a in args)
        return names + (" or null" if type(None) in typing.get_args(tp) else "")
    return "mapping" if tp is dict or dataclasses.is_dataclass(tp) else getattr(tp, "__name__", str(tp))


YAML11_MISSED_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        section_error = None
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                # A mapping meant for a section: its own error (e.g. a misspelt key) says more.
                section_error = section_error or (exc if dataclasses.is_dataclass(option) and isinstance(value, dict) else None)
        if section_error is not None:
            raise section_error
    elif tp is type(None) and value is None:
        return None
    elif dataclasses.is_dataclass(tp):
        return parse_section(tp, value, key)
    elif tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif tp is float and isinstance(value, str) and YAML11_MISSED_FLOAT.fullmatch(value.strip()):
        return float(value)  # '1e-3': PyYAML (YAML 1.1) reads exponents without a dot as strings
    elif tp in (int, str, dict, list, bool) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"config key '{key}' expects {_type_name(tp)}, but got {value!r} ({type(value).__name__}).")


def reject_unknown(keys: list[str], valid: list[str], prefix: str) -> None:
    """Raise :class:`ConfigError` for the first of ``keys`` not in ``valid``, suggesting the closest valid key."""
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"valid keys are {', '.join(valid)}."
            raise ConfigError(f"unknown config key '{prefix}{key}'; {hint}")


def parse_section(cls: type, values: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys, wrong types, choices and ranges."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix or 'top level'}' must be a mapping, but got {values!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    reject_unknown(list(values), names, f"{prefix}." if prefix else "")
    kwargs = {key: _coerce(value, hints[key], f"{prefix}.{key}" if prefix else key) for key, value in values.items()}
    section = cls(**kwargs)
    check_fields(section, f"{prefix}." if prefix else "")
    return section


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings to a nested dict; values are parsed as YAML scalars."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.epochs=5.")
        key, raw = item.split("=", 1)
        node = values
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} goes inside '{part}', which is not a section.")
        node[leaf] = yaml.safe_load(raw)
    return values


def load_spec_section(cls: type, path: str | Path, overrides: list[str], what: str) -> Any:
    """Read a YAML spec (``what``: e.g. "compare spec"), apply ``--set`` overrides and parse it as ``cls``."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"could not read the {what} {path} ({exc}).".replace("\n", " ")) from exc
    return parse_section(cls, apply_overrides(values, list(overrides)))
