"""What each method's ``fast`` preset shows in a class: final ACC / NMI on digits beside k-means on the pixels.

    CLUSTERLAB_DATA=../shared/data python bench/teaching.py --runs-dir bench-out/teaching
    python bench/teaching.py --runs-dir bench-out/teaching --table-only

One run per method (``fast`` preset, digits, seed 0 by default), each with an empty autoencoder cache so
that its minutes include the pretraining a teacher's first run pays. A demo "shows learning" when its final
ACC beats k-means on the pixels (the ``kmeans`` method with its defaults, 20 restarts, measured in the same
grid), and "shows a collapse" when its largest cluster ends above ``COLLAPSE_SHARE`` × the balanced share.
The numbers quoted in each method's ``demo`` text come from this table. Runs already in ``--runs-dir`` with
the same settings are not run again.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import table, train  # noqa: E402
from bench.fidelity import FinishedRun, comparable, finished_runs  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.metrics import COLLAPSE_SHARE  # noqa: E402
from core.methods import REGISTRY, get_method  # noqa: E402
from core.train import AutoencoderCache, RunConfig  # noqa: E402

BASELINE = "kmeans"


def verdict(run: FinishedRun, baseline_acc: float, n_samples: int) -> str:
    """``collapse``, ``learning`` or ``below k-means`` for a finished run of ``n_samples`` images."""
    k = int(run.config.get("n_clusters") or 10)
    if run.last.get("max_size", 0) > COLLAPSE_SHARE * n_samples / k:
        return "collapse"
    return "learning" if run.last["acc"] > baseline_acc else "below k-means"


def grid(methods: list[str]) -> list[tuple[str, str | None]]:
    """(method, preset) of every run: the baseline with its defaults, then each method's ``fast`` preset."""
    return [(BASELINE, None), *((method, "fast") for method in methods)]


def summarise(runs: list[FinishedRun], data: str, seed: int, n_samples: int) -> str:
    chosen = {(run.config["method"], run.config.get("preset")): run for run in runs
              if run.config["data"] == data and run.config["seed"] == seed}
    baseline = chosen.get((BASELINE, None))
    base_acc = baseline.last["acc"] if baseline else float("nan")
    rows = []
    for method, preset in grid(list(REGISTRY)):
        run = chosen.get((method, preset))
        if run is None:
            continue
        last = run.last
        rows.append([get_method(method).title, preset or "defaults", f"{last['acc']:.3f}", f"{last['nmi']:.3f}",
                     f"{last['acc'] - base_acc:+.3f}", f"{run.minutes:.1f}",
                     "the baseline" if run is baseline else verdict(run, base_acc, n_samples)])
    return table(["method", "preset", "ACC", "NMI", "ACC − k-means (pixels)", "minutes", "demo shows"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(REGISTRY))
    parser.add_argument("--data", default="digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs-dir", type=Path, help="where runs are kept (default: a temporary folder)")
    parser.add_argument("--table-only", action="store_true", help="print the table of the runs in --runs-dir")
    args = parser.parse_args()
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="clusterlab-teaching-"))
    dataset = load_dataset(args.data)
    if not args.table_only:
        done = [comparable(run.config) for run in finished_runs(runs_dir)]
        for method, preset in grid(args.methods):
            wanted = RunConfig.build(method, args.data, args.seed, preset).to_dict()
            if comparable(wanted) in done:
                continue
            with tempfile.TemporaryDirectory(prefix="clusterlab-ae-") as cache:
                store, seconds = train(method, dataset, args.seed, preset, runs_dir, args.device,
                                       cache=AutoencoderCache(cache))
            last = store.read_metrics().iloc[-1]
            print(f"{method} {preset or 'defaults'}: ACC {last['acc']:.3f} NMI {last['nmi']:.3f} ({seconds:.0f} s, "
                  f"{store.read_status().get('reason')})", file=sys.stderr, flush=True)
    print(summarise(finished_runs(runs_dir), args.data, args.seed, len(dataset)))
    print(f"\n{args.data}, seed {args.seed}: k-means on the pixels with its defaults, then each method's `fast` "
          "preset; final epoch; minutes include the pretraining (empty autoencoder cache).")


if __name__ == "__main__":
    main()
