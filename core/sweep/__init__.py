"""Sweeps: a grid of knob values × seeds of one method on one data set, each trial an ordinary run.

``spec`` says what a sweep is and validates it, ``store`` reads and writes ``sweeps/<id>/`` and the
tables the app draws, ``scheduler`` runs the trials (pretraining once per seed), ``executors`` says
where (a local process pool or a Ray cluster), ``control`` starts and stops a sweep's own process.
"""
from core.sweep.control import create_sweep, resume_sweep, start_sweep, stop_sweep
from core.sweep.executors import Executor, LocalExecutor, RayExecutor, make_executor
from core.sweep.scheduler import SweepProgress, run_sweep
from core.sweep.spec import SweepSpec, Trial, checked_spec, grid_values, parse_grid, trial_configs
from core.sweep.store import SweepStore, cell_summary, default_sweeps_dir, list_sweeps, sweep_state, sweep_table

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "SweepProgress", "SweepSpec", "SweepStore", "Trial",
           "cell_summary", "checked_spec", "create_sweep", "default_sweeps_dir", "grid_values", "list_sweeps",
           "make_executor", "parse_grid", "resume_sweep", "run_sweep", "start_sweep", "stop_sweep", "sweep_state",
           "sweep_table", "trial_configs"]
