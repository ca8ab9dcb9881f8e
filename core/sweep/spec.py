"""What a sweep is: a method, a data set, fixed settings, a grid over knobs, and seeds.

Grid values come from the knobs' own metadata when not given (``grid_values``), and every trial's
configuration is built, and so validated, before anything starts (``trial_configs``).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from core.config import ConfigError, Knob
from core.methods import get_method
from core.train.config import RunConfig, TrainerConfig

BACKENDS = ("local", "ray")
SIGNIFICANT_DIGITS = 3  # of log-spaced grid values: 0.01, 0.0316, 0.1, …


@dataclass(frozen=True)
class Trial:
    """One cell of the grid at one seed: the grid knobs' values and the seed."""

    settings: dict
    seed: int


@dataclass(frozen=True)
class SweepSpec:
    """Everything that determines a sweep; written into its ``sweep.json``.

    Parameters
    ----------
    method, data, preset : as for a run (``RunConfig.build``).
    overrides : knob name → value, fixed for every trial.
    grid : knob name → the values to try (one or more knobs); the trials are their product.
    seeds : every cell of the grid runs once per seed.
    workers : trials at a time; None: one per CPU core (local, or one per GPU) or per free Ray slot.
    backend : ``local`` (a pool of processes on this machine) or ``ray`` (tasks on a Ray cluster).
    address : the Ray cluster (``auto``, ``ray://host:10001``); None starts a local one.
    n_clusters : K; None: the number of classes.
    device : the trials' device (``auto``, ``cpu``, ``cuda``).
    cpus_per_trial, gpus_per_trial : what one Ray task reserves.
    """

    method: str
    data: str = "digits"
    preset: str | None = None
    overrides: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    seeds: list = field(default_factory=lambda: [0])
    workers: int | None = None
    backend: str = "local"
    address: str | None = None
    n_clusters: int | None = None
    device: str = "auto"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    def trials(self) -> list[Trial]:
        """Every grid cell × seed, cell by cell (the seeds of one cell next to each other)."""
        names = list(self.grid)
        return [Trial(dict(zip(names, values)), int(seed))
                for values in itertools.product(*(self.grid[name] for name in names)) for seed in self.seeds]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "SweepSpec":
        return cls(**values)


def find_knob(method: str, name: str) -> Knob:
    """The knob ``name`` of ``method``'s config or of the trainer's."""
    for candidate in (*get_method(method).Config.knobs(), *TrainerConfig.knobs()):
        if candidate.name == name:
            return candidate
    raise ValueError(f"{method} has no knob {name!r}")


def grid_values(method: str, name: str, n: int = 5, low=None, high=None) -> list:
    """``n`` values across a knob's slider range, or from ``low`` to ``high``: log-spaced for a log knob,
    on the slider's step otherwise; integers rounded and repeats dropped; every choice of a select box;
    both booleans."""
    knob = find_knob(method, name)
    if knob.choices is not None:
        return list(knob.choices)
    if knob.type is bool:
        return [False, True]
    if knob.min is None or knob.max is None:
        raise ValueError(f"knob {name!r} has no range; give its values")
    if n < 1:
        raise ValueError(f"need at least one value, got n={n}")
    low, high = knob.min if low is None else low, knob.max if high is None else high
    if knob.log and low > 0:
        values = [_significant(v, SIGNIFICANT_DIGITS) for v in np.geomspace(low, high, n)]
    else:
        values = list(np.linspace(low, high, n))
        if knob.step:
            values = [knob.min + round((v - knob.min) / knob.step) * knob.step for v in values]
    values = [int(round(v)) if knob.type is int else round(float(v), 12) for v in values]
    return list(dict.fromkeys(values))


def _significant(value: float, digits: int) -> float:
    return round(float(value), digits - 1 - math.floor(math.log10(abs(value))))


def parse_grid(text: str) -> tuple[str, list[str]]:
    """``"alpha=0.5,1,2"`` → ``("alpha", ["0.5", "1", "2"])``; ``"alpha"`` alone → ``("alpha", [])``,
    which asks for the knob's own values (``grid_values``)."""
    name, _, values = text.partition("=")
    name = name.strip()
    if not name:
        raise ValueError(f"expected name=value,value,…, got {text!r}")
    parts = [v.strip() for v in values.split(",")] if values.strip() else []
    if any(not v for v in parts):
        raise ValueError(f"an empty value in {text!r}")
    return name, parts


def checked_spec(spec: SweepSpec) -> SweepSpec:
    """The spec with grid values in their knobs' types, after building every trial's configuration.

    Raises ``ValueError`` (``ConfigError`` for a value a knob refuses: out of its limits, NaN, not one of
    its choices, of the wrong type) naming the knob and the value, so a sweep with one bad value never starts.
    """
    if spec.backend not in BACKENDS:
        raise ValueError(f"unknown backend {spec.backend!r}; choose from {', '.join(BACKENDS)}")
    if not spec.grid:
        raise ValueError("a sweep needs at least one knob in its grid")
    if not spec.seeds:
        raise ValueError("a sweep needs at least one seed")
    if len(set(spec.seeds)) != len(spec.seeds):
        raise ValueError(f"repeated seeds in {list(spec.seeds)}")
    if spec.workers is not None and spec.workers < 1:
        raise ValueError(f"workers must be at least 1, got {spec.workers}")
    grid = {}
    for name, values in spec.grid.items():
        if name == "seed":
            raise ValueError("seeds are swept with seeds, not in the grid")
        if not values:
            raise ValueError(f"no values for {name!r}")
        typed = [_typed(spec.method, name, value) for value in values]
        if len(set(map(repr, typed))) != len(typed):
            raise ValueError(f"repeated values for {name!r}: {typed}")
        grid[name] = typed
    checked = SweepSpec(**{**spec.to_dict(), "grid": grid, "seeds": [int(s) for s in spec.seeds]})
    trial_configs(checked)
    return checked


def _typed(method: str, name: str, value):
    """A grid value in its knob's type, through the same config that will refuse or accept it."""
    knob = find_knob(method, name)
    owner = TrainerConfig if name in TrainerConfig().field_names() else get_method(method).Config
    try:
        return getattr(owner.from_dict({name: value}), knob.name)
    except ConfigError as err:
        if name in str(err):
            raise
        raise ConfigError(f"{name}: {err}") from None  # "not a number: 'abc'" names no knob


def trial_config(spec: SweepSpec, trial: Trial, sweep_id: str | None = None) -> RunConfig:
    """The run configuration of one trial: the spec's overrides, then the trial's grid values."""
    return RunConfig.build(spec.method, spec.data, trial.seed, spec.preset, {**spec.overrides, **trial.settings},
                           device=spec.device, n_clusters=spec.n_clusters, sweep=sweep_id)


def trial_configs(spec: SweepSpec, sweep_id: str | None = None) -> list[RunConfig]:
    """Every trial's configuration, in ``spec.trials()`` order (raises on the first invalid one)."""
    return [trial_config(spec, trial, sweep_id) for trial in spec.trials()]
