"""A 3 × 3 × 3-seed IDEC sweep on USPS: our sweep against one-by-one runs and against ClustPy's refits.

    pip install clustpy   # the benchmark's peer, not a dependency of the app
    CLUSTERLAB_DATA=../shared/data python bench/sweep_speed.py

Three ways to get the same 27 results (α × γ × seed, the same pretraining and clustering budget):

* **our sweep**: ``core.sweep`` with the local executor (``--workers`` trial processes): one
  autoencoder pretraining per seed, then the 27 clustering phases from the cache; every trial an
  ordinary run (per-epoch evaluation and snapshot included). Measured in full.
* **one by one**: the same trainer, one setting after the other, each pretraining its own
  autoencoder (an empty cache per run), as before sweeps existed. Measured on ``--baseline-subset``
  settings and extrapolated to 27 (the settings cost alike: the same epochs, α and γ change no shapes).
* **ClustPy**: ``clustpy.deep.IDEC(alpha, clustering_loss_weight=γ).fit`` per setting, which refits
  the autoencoder each time. Measured on ``--clustpy-subset`` settings and extrapolated to 27.

One-by-one runs and ClustPy get as many threads as the sweep has workers. Each measurement is saved
to ``--out`` as it ends, and a rerun skips the ones already there.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import table, train  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.metrics import cluster_acc  # noqa: E402
from core.repro import describe_device, resolve_device  # noqa: E402
from core.sweep import LocalExecutor, SweepSpec, create_sweep, run_sweep, sweep_table  # noqa: E402


def measure_sweep(spec: SweepSpec, workers: int, root: Path) -> dict:
    os.environ["CLUSTERLAB_CACHE"] = tempfile.mkdtemp(prefix="sweep-cache-", dir=root)  # the trials inherit it
    store = create_sweep(spec, root / "sweeps", root / "runs")
    started = time.perf_counter()
    state = run_sweep(store, LocalExecutor(workers, use_gpus=False))
    seconds = time.perf_counter() - started
    results = sweep_table(store)
    return {"seconds": seconds, "state": state, "n": len(results), "acc": float(results["acc"].mean()),
            "finished": int((results["state"] == "finished").sum()), "sweep": store.id}


def measure_one_by_one(spec: SweepSpec, settings: list[tuple], root: Path) -> dict:
    data = load_dataset(spec.data)
    seconds, accs = [], []
    for alpha, gamma, seed in settings:
        os.environ["CLUSTERLAB_CACHE"] = tempfile.mkdtemp(prefix="fresh-cache-", dir=root)  # nothing shared
        store, wall = train(spec.method, data, seed, runs_dir=root / "one-by-one", alpha=alpha, gamma=gamma,
                            **spec.overrides)
        seconds.append(wall)
        accs.append(float(store.read_metrics()["acc"].dropna().iloc[-1]))
        print(f"one by one α={alpha} γ={gamma} seed {seed}: {wall:.0f} s", file=sys.stderr, flush=True)
    return {"seconds": seconds, "acc": float(np.mean(accs))}


def measure_clustpy(spec: SweepSpec, settings: list[tuple], device: torch.device) -> dict:
    from clustpy.deep import IDEC

    data = load_dataset(spec.data)
    x = data.x.reshape(len(data.x), -1)
    seconds, accs = [], []
    for alpha, gamma, seed in settings:
        started = time.perf_counter()
        model = IDEC(n_clusters=10, alpha=alpha, clustering_loss_weight=gamma, batch_size=spec.overrides["batch_size"],
                     pretrain_epochs=spec.overrides["pretrain_epochs"], clustering_epochs=spec.overrides["epochs"],
                     random_state=seed, device=device).fit(x)
        seconds.append(time.perf_counter() - started)
        accs.append(cluster_acc(data.y, model.labels_))
        print(f"ClustPy α={alpha} γ={gamma} seed {seed}: {seconds[-1]:.0f} s", file=sys.stderr, flush=True)
    return {"seconds": seconds, "acc": float(np.mean(accs))}


def subset(spec: SweepSpec, k: int) -> list[tuple]:
    """``k`` settings evenly spaced through the trials (so across cells and seeds)."""
    trials = spec.trials()
    picked = [trials[int(i)] for i in np.linspace(0, len(trials) - 1, k).round()]
    return [(t.settings["alpha"], t.settings["gamma"], t.seed) for t in picked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="usps")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-epochs", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=50, help="clustering epochs at most (ours stop by IDEC's tol)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline-subset", type=int, default=3, help="one-by-one settings measured")
    parser.add_argument("--clustpy-subset", type=int, default=2, help="ClustPy settings measured")
    parser.add_argument("--out", type=Path, default=Path("bench-out/sweep_speed"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.workers)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # per trial process: the workers share the cores
    spec = SweepSpec("idec", args.data, overrides={"pretrain_epochs": args.pretrain_epochs, "epochs": args.epochs,
                                                   "batch_size": 256},
                     grid={"alpha": args.alphas, "gamma": args.gammas}, seeds=args.seeds, workers=args.workers)
    n = len(spec.trials())
    saved = args.out / "results.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    steps = {"sweep": lambda: measure_sweep(spec, args.workers, args.out),
             "clustpy": lambda: measure_clustpy(spec, subset(spec, args.clustpy_subset), resolve_device("cpu")),
             "one_by_one": lambda: measure_one_by_one(spec, subset(spec, args.baseline_subset), args.out)}
    for name, step in steps.items():
        if name not in results:
            results[name] = step()
            saved.write_text(json.dumps(results, indent=2))
    ours = results["sweep"]["seconds"]
    one, peer = results["one_by_one"], results["clustpy"]
    one_total = float(np.mean(one["seconds"])) * n
    peer_total = float(np.mean(peer["seconds"])) * n
    rows = [
        [f"our sweep (local, {args.workers} workers, pretraining once per seed)", f"{n} of {n}", f"{ours / 60:.1f} min",
         f"{ours / 60:.1f} min", "1.0×", f"{results['sweep']['acc']:.3f}"],
        ["one by one, each run pretraining its own autoencoder", f"{len(one['seconds'])} of {n}, extrapolated",
         f"{np.mean(one['seconds']):.0f} s a run", f"{one_total / 60:.1f} min", f"{one_total / ours:.1f}×",
         f"{one['acc']:.3f}"],
        ["ClustPy IDEC, refit per setting", f"{len(peer['seconds'])} of {n}, extrapolated",
         f"{np.mean(peer['seconds']):.0f} s a fit", f"{peer_total / 60:.1f} min", f"{peer_total / ours:.1f}×",
         f"{peer['acc']:.3f}"],
    ]
    print(table(["approach", "settings measured", "measured", f"{n} settings", "vs our sweep", "mean ACC"], rows))
    print(f"\nIDEC on {args.data}: α ∈ {args.alphas} × γ ∈ {args.gammas} × seeds {args.seeds}; pretraining "
          f"{args.pretrain_epochs} epochs, clustering ≤ {args.epochs} epochs (ours stop by IDEC's tol, ClustPy runs "
          f"all); batch 256. {describe_device(resolve_device('cpu'))}, {os.cpu_count()} cores; one-by-one runs and "
          f"ClustPy with {args.workers} threads, each sweep trial with one.")


if __name__ == "__main__":
    main()
