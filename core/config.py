"""Configuration dataclasses whose fields carry the metadata that UI sliders are generated from.

A *knob* is a dataclass field with a symbol, a range, a step and one line of help. The trainer, the
CLI (``--set name=value``) and the Streamlit pages all read the same metadata, so a knob is declared
once and never retyped.

A knob has two ranges. ``min`` … ``max`` is the slider's: the values worth offering a person.
``limits`` is the hard range: what the method can run at all. A config refuses a value outside its
limits when it is built (``ConfigError``), whoever built it: the CLI, the app, a sweep or the
estimator. A value beyond the slider but within the limits (3,000 epochs) is allowed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A setting no run can use; the message names the setting, its value and what is allowed."""


@dataclass(frozen=True)
class Limits:
    """A hard range of a numeric knob; ``None`` leaves that side open-ended."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False   # the bound itself is excluded (``> 0`` rather than ``≥ 0``)
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        """``> 0``, ``≥ 1``, ``in [0, 1)``; ``any value`` when unbounded."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '≤'} {self.high:g}"
        return "any value"


POSITIVE = Limits(0, None, low_open=True)
NON_NEGATIVE = Limits(0)
AT_LEAST_ONE = Limits(1)
FRACTION = Limits(0, 1)                     # a share or probability, both ends allowed
BELOW_ONE = Limits(0, 1, high_open=True)    # momentum, tolerances: 1 would never move or never stop


def knob(default, *, help: str, symbol: str = "", min=None, max=None, step=None,
         log: bool = False, choices: tuple | None = None, choice_labels: dict | None = None,
         limits: Limits | None = None):
    """A config field with slider metadata.

    Parameters
    ----------
    default : the value used when nothing overrides it.
    help : one line saying what the knob does (shown under the slider).
    symbol : the paper's symbol (``"α"``), shown in the slider's label.
    min, max, step : the slider's range; ``log`` asks for a log-scale slider.
    choices : for a select box instead of a slider.
    choice_labels : what the select box shows for a choice, where its value alone says too little.
    limits : the hard range the method can run; default ``> 0`` for a slider starting above 0, else ``≥ 0``
        (integers: ``≥ 1`` for a slider starting at 1 or more).
    """
    return field(default=default, metadata=dict(
        help=help, symbol=symbol, min=min, max=max, step=step, log=log, choices=choices, choice_labels=choice_labels,
        limits=limits))


@dataclass(frozen=True)
class Knob:
    """Everything a UI needs to draw one field."""

    name: str
    type: type
    default: Any
    help: str
    symbol: str
    min: Any
    max: Any
    step: Any
    log: bool
    choices: tuple | None
    choice_labels: dict | None
    limits: Limits | None

    def __post_init__(self):
        if self.limits is None and self.choices is None and self.type in (int, float) and self.min is not None:
            object.__setattr__(self, "limits", _default_limits(self.type, self.min))

    @property
    def label(self) -> str:
        return f"{self.symbol} — {self.name}" if self.symbol else self.name

    def choice_label(self, value) -> str:
        """How a choice reads in a select box: its label, else the value itself."""
        return (self.choice_labels or {}).get(value, str(value))

    def check(self, value) -> None:
        """Raise ``ConfigError`` unless ``value`` is one this knob can run."""
        if value is None:  # an optional knob left unset
            return
        if self.choices is not None:
            if value not in self.choices:
                raise ConfigError(f"{self.name}={value!r} is not one of {', '.join(map(str, self.choices))}")
            return
        if self.type is bool or self.type is str:
            if not isinstance(value, self.type):
                raise ConfigError(f"{self.name}={value!r} is not a {self.type.__name__}")
            return
        if self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    self.type is int and not float(value).is_integer()):
                raise ConfigError(f"{self.name}={value!r} is not a{'n integer' if self.type is int else ' number'}")
            if not math.isfinite(value):
                raise ConfigError(f"{self.name}={value} is not a finite number")
            if self.limits is not None and value not in self.limits:
                raise ConfigError(f"{self.name}={value:g} is out of range: it must be {self.limits.describe()}")


def _default_limits(kind: type, slider_min) -> Limits:
    if kind is int:
        return AT_LEAST_ONE if slider_min >= 1 else NON_NEGATIVE
    return POSITIVE if slider_min > 0 else NON_NEGATIVE


@dataclass(frozen=True)
class Config:
    """Base of every component config: JSON round-trip, string overrides, knob listing, validation.

    Building one checks every knob against its hard limits (``Knob.check``); a subclass with rules that
    tie knobs together adds them in its own ``__post_init__`` after calling this one.
    """

    def __post_init__(self):
        for knob in self.knobs():
            knob.check(getattr(self, knob.name))

    @classmethod
    def knobs(cls) -> list[Knob]:
        hints = typing.get_type_hints(cls)
        return [Knob(f.name, hints[f.name], f.default, **f.metadata) for f in fields(cls) if f.metadata]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
        hints = typing.get_type_hints(cls)
        coerced = {}
        for name, value in values.items():
            try:
                coerced[name] = _coerce(hints[name], value)
            except ConfigError as err:
                raise ConfigError(f"{name}: {err}") from None
        return cls(**coerced)

    def replace(self, **changes) -> "Config":
        merged = {**self.to_dict(), **changes}
        return type(self).from_dict(merged)

    def field_names(self) -> set[str]:
        return {f.name for f in fields(self)}


def _coerce(kind, value):
    """Turn JSON or command-line text into the field's declared type."""
    if value is None:
        return None
    origin = typing.get_origin(kind)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if isinstance(value, str) and value.lower() in ("none", "null", "auto", ""):
            return None
        return _coerce(inner[0], value)
    if kind is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"not a boolean: {value!r}")
        return bool(value)
    if kind is float and isinstance(value, str):
        try:
            return float(value)  # also "nan" and "inf", which the knob's check then refuses by name
        except ValueError:
            raise ConfigError(f"not a number: {value!r}") from None
    if kind is int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"not an integer: {value!r}") from None
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)  # a JSON or CSV round trip may write 30 as 30.0
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str:
        return str(value)
    return value


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["alpha=1.0", "tol=0.001"]`` → ``{"alpha": "1.0", "tol": "0.001"}``."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"expected name=value, got {pair!r}")
        out[name.strip()] = value.strip()
    return out
