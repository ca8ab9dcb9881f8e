"""Configuration dataclasses whose fields carry the metadata that UI sliders are generated from.

A *knob* is a dataclass field with a symbol, a range, a step and one line of help. The trainer, the
CLI (``--set name=value``) and the Streamlit pages all read the same metadata, so a knob is declared
once and never retyped.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields
from typing import Any


def knob(default, *, help: str, symbol: str = "", min=None, max=None, step=None,
         log: bool = False, choices: tuple | None = None):
    """A config field with slider metadata.

    Parameters
    ----------
    default : the value used when nothing overrides it.
    help : one line saying what the knob does (shown under the slider).
    symbol : the paper's symbol (``"α"``), shown in the slider's label.
    min, max, step : the slider's range; ``log`` asks for a log-scale slider.
    choices : for a select box instead of a slider.
    """
    return field(default=default, metadata=dict(
        help=help, symbol=symbol, min=min, max=max, step=step, log=log, choices=choices))


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

    @property
    def label(self) -> str:
        return f"{self.symbol} — {self.name}" if self.symbol else self.name


@dataclass(frozen=True)
class Config:
    """Base of every component config: JSON round-trip, string overrides, knob listing."""

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
        return cls(**{k: _coerce(typing.get_type_hints(cls)[k], v) for k, v in values.items()})

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
            raise ValueError(f"not a boolean: {value!r}")
        return bool(value)
    if kind in (int, float, str):
        return kind(json.loads(value)) if isinstance(value, str) and kind is not str else kind(value)
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
