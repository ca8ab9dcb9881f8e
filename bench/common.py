"""Helpers shared by the benchmark scripts: run the real trainer, format Markdown tables."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from core.data import ImageDataset
from core.runs import RunStore, new_run_id
from core.train import AutoencoderCache, RunConfig, Trainer


def train(method: str, dataset: ImageDataset, seed: int = 0, preset: str | None = None,
          runs_dir: Path | None = None, device: str = "auto", cache: AutoencoderCache | None = None,
          **overrides) -> tuple[RunStore, float]:
    """One run through the same trainer the CLI and the app use; returns its store and wall time.

    ``cache``: where pretrained autoencoders are looked up (default: the user cache; an empty folder times
    the pretraining too).
    """
    config = RunConfig.build(method, dataset.name, seed, preset, overrides, device=device)
    root = runs_dir or Path(tempfile.mkdtemp(prefix="clusterlab-bench-"))
    store = RunStore.create(root, new_run_id(method, dataset.name, seed), config.to_dict())
    started = time.perf_counter()
    Trainer(config, dataset, store, cache=cache).run()
    return store, time.perf_counter() - started


def median(values) -> float:
    return statistics.median(values)


def mean_std(values) -> str:
    values = list(values)
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
