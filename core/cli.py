"""``python -m core``: train a method, sweep a grid of knobs, list runs and sweeps, list methods and their knobs."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import textwrap
import threading
from pathlib import Path

from core.config import parse_overrides
from core.data import DataError, load_dataset
from core.methods import REGISTRY
from core.runs import RunIdError, RunStore, default_runs_dir, list_runs, new_run_id, run_path
from core.storage import LockHeld
from core.sweep import (SweepProgress, SweepSpec, SweepStore, create_sweep, default_sweeps_dir, grid_values,
                        list_sweeps, parse_grid, run_sweep, sweep_table)
from core.sweep.spec import BACKENDS
from core.train import RunConfig, Trainer, TrainerConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description="ClusterLab command line")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a method on a data set into a new run directory")
    train.add_argument("--method", default="idec", choices=sorted(REGISTRY))
    train.add_argument("--data", default="digits", help="built-in name or path to an .npz")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--preset", help="a method preset: paper, fast, or one the method adds (e.g. cpu); defaults "
                       "otherwise")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                       help="override a method or trainer knob, e.g. --set alpha=1.0 (repeatable)")
    train.add_argument("--pretrain-epochs", type=int)
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--clusters", type=int, help="K (default: the number of classes)")
    train.add_argument("--init-weights", type=Path, metavar="PATH",
                       help="start from this autoencoder state dict instead of pretraining (its own names, a run's "
                            "model or a layout the method declares, e.g. the official DCSS MNIST autoencoder)")
    train.add_argument("--device", default="auto", help="auto (cuda → mps → cpu), cpu, cuda, cuda:1, mps")
    train.add_argument("--runs-dir", type=Path, default=None, help="default $CLUSTERLAB_RUNS or ./runs")
    train.add_argument("--run-dir", type=Path, help="train the config.json already written in this run directory")
    train.add_argument("--resume", metavar="ID", help="continue a stopped or killed run from its last checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    sweep = commands.add_parser("sweep", help="train a grid of knob values × seeds, each trial an ordinary run")
    sweep.add_argument("--method", default="idec", choices=sorted(REGISTRY))
    sweep.add_argument("--data", default="digits", help="built-in name or path to an .npz")
    sweep.add_argument("--preset")
    sweep.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,…",
                       help="a knob and its values (repeatable, one per knob); NAME alone: 5 values across its range")
    sweep.add_argument("--seeds", type=int, nargs="+", default=[0])
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                       help="a knob fixed for every trial (repeatable)")
    sweep.add_argument("--clusters", type=int)
    sweep.add_argument("--device", default="auto")
    sweep.add_argument("--workers", type=int, help="trials at a time (default: one per GPU, or per two CPU cores; "
                       "with Ray, per free slot)")
    sweep.add_argument("--backend", default="local", choices=BACKENDS)
    sweep.add_argument("--address", help="Ray cluster: auto, or ray://host:10001 (default: a local Ray)")
    sweep.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs a Ray task reserves")
    sweep.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs a Ray task reserves")
    sweep.add_argument("--runs-dir", type=Path, default=None, help="default $CLUSTERLAB_RUNS or ./runs")
    sweep.add_argument("--sweeps-dir", type=Path, default=None, help="default $CLUSTERLAB_SWEEPS or ./sweeps")
    sweep.add_argument("--resume", metavar="ID", help="continue a stopped sweep: finished trials are skipped")
    sweep.add_argument("--sweep-dir", type=Path, help="run the sweep already written in this directory")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweeps = commands.add_parser("sweeps", help="list sweeps")
    sweeps.add_argument("--sweeps-dir", type=Path, default=None)

    runs = commands.add_parser("runs", help="list runs")
    runs.add_argument("--runs-dir", type=Path, default=None)
    methods = commands.add_parser("methods", help="list methods and their knobs")
    methods.add_argument("--explain", action="store_true",
                         help="also each method's objective (LaTeX), the knob behind each symbol, how it works and "
                              "what its fast demo shows")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command == "runs":
        print(list_runs(args.runs_dir).to_string(index=False))
        return 0
    if args.command == "methods":
        print(describe_methods(args.explain))
        return 0
    if args.command == "sweeps":
        print(list_sweeps(args.sweeps_dir).to_string(index=False))
        return 0
    if args.command == "sweep":
        return _sweep(args, parser)
    return _train(args, parser)


def _sweep(args, parser) -> int:
    sweeps_dir = args.sweeps_dir or default_sweeps_dir()
    if args.resume or args.sweep_dir:
        try:
            store = SweepStore(args.sweep_dir or run_path(sweeps_dir, args.resume))  # a sweep id: one folder name
        except RunIdError as err:
            parser.error(str(err))
        if not store.read_manifest():
            parser.error(f"no sweep in {store.path}")
        if args.resume:
            store.clear_stop()
    else:
        grid = {}
        try:
            for text in args.grid:
                name, values = parse_grid(text)
                grid[name] = values or grid_values(args.method, name)
            spec = SweepSpec(args.method, args.data, args.preset, parse_overrides(args.overrides), grid, args.seeds,
                             args.workers, args.backend, args.address, args.clusters, args.device,
                             args.cpus_per_trial, args.gpus_per_trial)
            store = create_sweep(spec, sweeps_dir, args.runs_dir)
        except ValueError as err:
            parser.error(str(err))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"sweep {store.id} → {store.path}", file=sys.stderr)
    state = run_sweep(store, progress=None if args.quiet else SweepProgressBar(), stop_event=stop)
    print(f"\n{state}", file=sys.stderr)
    if not args.quiet:
        print(sweep_table(store).to_string(index=False))
    return 0


def _train(args, parser) -> int:
    runs_dir = args.runs_dir or default_runs_dir()
    resume = False
    if args.resume:
        try:
            store = RunStore.open(runs_dir, args.resume)
        except RunIdError as err:
            parser.error(str(err))
        resume = True
    elif args.run_dir:
        store = RunStore(args.run_dir)
    else:
        try:
            overrides = parse_overrides(args.overrides)
            for name in ("pretrain_epochs", "epochs", "batch_size"):
                if getattr(args, name) is not None:
                    overrides[name] = getattr(args, name)
            config = RunConfig.build(args.method, args.data, args.seed, args.preset, overrides,
                                     device=args.device, n_clusters=args.clusters,
                                     init_weights=args.init_weights and str(args.init_weights))
        except ValueError as err:
            parser.error(str(err))
        store = RunStore.create(runs_dir, new_run_id(args.method, args.data, args.seed), config.to_dict())
    stop = threading.Event()
    callbacks = [] if args.quiet else [ProgressBar()]
    try:
        config = RunConfig.from_dict(store.read_config())
        trainer = Trainer(config, load_dataset(config.data), store, callbacks, stop)
    except ValueError as err:  # DataError and ConfigError: a sentence for the person, no traceback
        try:
            with store.writer():
                store.write_status("failed", reason=str(err))
        except LockHeld as held:
            return _busy(store, held)
        print(f"error: {err}", file=sys.stderr)
        return 2

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"run {store.id} → {store.path}", file=sys.stderr)
    try:
        last = trainer.run(resume=resume)
    except LockHeld as held:
        return _busy(store, held)
    except DataError as err:  # resumed on other data: the run itself is intact
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = store.read_status()
    summary = {k: round(v, 4) for k, v in last.items() if k in ("acc", "nmi", "ari") and v == v}
    print(f"\n{status['state']}: {status.get('reason', '')} {json.dumps(summary)}", file=sys.stderr)
    return 0 if status["state"] in ("finished", "stopped") else 1


def _busy(store: RunStore, held: LockHeld) -> int:
    """A second trainer on a run: refused, the run's folder untouched."""
    print(f"error: run {store.id} is being trained by process {held.pid or '(unknown)'}; a run has one writer. "
          "Stop it first (Stop in the app, or kill that process), then resume.", file=sys.stderr)
    return 3


class ProgressBar:
    """One line per epoch on a pipe, a redrawn line on a terminal: phase, epoch, loss, ACC, ETA."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.phase = None

    def __call__(self, event: dict) -> None:
        epoch, total = event["epoch"], event["total_epochs"]
        done = max(epoch, 1)
        eta = event["time"] / done * max(total - epoch, 0)
        width = 24
        filled = int(width * min(epoch / max(total, 1), 1.0))
        parts = [f"[{'#' * filled}{'.' * (width - filled)}] {event['phase']:<8} {epoch}/{total}"]
        if "loss" in event:
            parts.append(f"loss {event['loss']:.4g}")
        if event.get("acc") == event.get("acc") and "acc" in event:
            parts.append(f"ACC {event['acc']:.3f}")
        parts.append(f"ETA ≤{_duration(eta)}")
        line = "  ".join(parts)
        terminal = self.stream.isatty()
        if terminal and self.phase not in (None, event["phase"]):
            self.stream.write("\n")
        self.stream.write(("\r" + line) if terminal else line + "\n")
        self.stream.flush()
        self.phase = event["phase"]


class SweepProgressBar:
    """One line per change on a pipe, a redrawn line on a terminal: trials done / running / failed, ETA."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream

    def __call__(self, progress: SweepProgress) -> None:
        width = 24
        filled = int(width * (progress.done + progress.failed) / max(progress.total, 1))
        eta = progress.eta_seconds
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {progress.done + progress.failed}/{progress.total} trials  "
                f"done {progress.done}  running {progress.running}  failed {progress.failed}  "
                f"ETA {'?' if eta is None else _duration(eta)}")
        self.stream.write(("\r" + line) if self.stream.isatty() else line + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def describe_methods(explain: bool = False) -> str:
    """Every method's knobs: default, slider range (or choices), hard limit, help; with ``explain``, also each
    method's objective, the knob behind each of its symbols, its explanation and what its fast demo shows."""
    lines = ["knob = default  [slider range]  (hard limit: what a run accepts)  help"]
    sections = [(f"{name}: {method.title}  (phases: {', '.join(method.phases) or 'none'})", method.Config, method)
                for name, method in REGISTRY.items()]
    for title, config, method in [*sections, ("trainer:", TrainerConfig, None)]:
        lines.append(title)
        if explain and method is not None:
            lines.append(f"  objective: {method.objective}")
            lines.append("  symbols: " + ", ".join(f"{symbol} → {knob}" for symbol, knob in method.symbols.items()))
            lines += [f"  {line}" for line in textwrap.wrap(method.explanation, 110)]
            lines += [f"  {line}" for line in textwrap.wrap(method.demo, 110)]
        for knob in config.knobs():
            if knob.choices is None:
                span = f"[{knob.min} … {knob.max}]"
                if knob.limits is not None:
                    span += f" ({knob.limits.describe()})"
            else:
                span = "{" + ", ".join(map(str, knob.choices)) + "}"
            lines.append(f"  {knob.label:<28} = {knob.default!s:<8} {span:<30} {knob.help}")
    return "\n".join(lines)
