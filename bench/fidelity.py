"""ACC / NMI / ARI of methods × data sets × seeds, beside the published numbers of the specs.

    CLUSTERLAB_DATA=../shared/data python bench/fidelity.py --methods kmeans ae-kmeans dec idec \
        --data usps mnist-test --seeds 0 1 2 --runs-dir bench-runs
    python bench/fidelity.py --runs-dir bench-runs --table-only     # the table of runs already there
    python bench/fidelity.py --runs-dir bench-runs --table-only --curve-every 5   # and the ACC curves

Final-epoch metrics of each run (never the best seen). The table is built from the run directories,
so a grid can be run in pieces; runs already finished with the same settings are not run again.
AE+k-means, DEC and IDEC of one seed share their pretrained autoencoder through the cache.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import mean_std, table, train  # noqa: E402
from core.config import parse_overrides  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.methods import REGISTRY, get_method  # noqa: E402
from core.runs import RunStore  # noqa: E402
from core.train import RunConfig  # noqa: E402


def finished_runs(runs_dir: Path) -> list[tuple[dict, dict, float]]:
    """(config, last metrics row, minutes) of every finished run in the folder.

    The last row also carries ``init_acc``: ACC right after the cluster initialisation, i.e. k-means on
    the run's own pretrained codes for the autoencoder methods (NaN where the init is not scored).
    """
    found = []
    for path in sorted(runs_dir.glob("*/config.json")):
        store = RunStore(path.parent)
        metrics = store.read_metrics()
        if store.read_status().get("state") != "finished" or metrics.empty:
            continue
        last = metrics.iloc[-1].to_dict()
        init = metrics.loc[metrics["phase"] == "init", "acc"] if "acc" in metrics else []
        last["init_acc"] = float(init.iloc[0]) if len(init) else float("nan")
        found.append((store.read_config(), last, last["time"] / 60))
    return found


def comparable(config: dict) -> dict:
    """The part of a config that decides a result: everything but bookkeeping."""
    return {k: config.get(k) for k in ("method", "data", "seed", "trainer", "params")}


def init_column(values) -> str:
    values = [v for v in values if not math.isnan(v)]
    return mean_std(values) if values else "—"


def summarise(runs: list[tuple[dict, dict, float]]) -> str:
    groups: dict[tuple[str, str, str], list] = {}
    for config, last, minutes in runs:
        key = (config["data"], config["method"], config.get("preset") or "defaults")
        groups.setdefault(key, []).append((config, last, minutes))
    rows = []
    method_order = list(REGISTRY)
    for (data, method, preset), members in sorted(groups.items(),
                                                  key=lambda g: (g[0][0], method_order.index(g[0][1]), g[0][2])):
        seeds = sorted(c["seed"] for c, _, _ in members)
        paper = get_method(method).published.get(data)
        rows.append([data, get_method(method).title, preset, len(seeds),
                     *(mean_std(last[k] for _, last, _ in members) for k in ("acc", "nmi", "ari")),
                     init_column(last["init_acc"] for _, last, _ in members),
                     f"{statistics.median(m for _, _, m in members):.1f}",
                     "—" if paper is None else f"{paper[0]:.3f} / {paper[1]:.3f}", "—" if paper is None else paper[2]])
    header = ["data", "method", "preset", "seeds", "ACC", "NMI", "ARI", "ACC at init", "median min/seed", "published ACC / NMI", "source"]
    return table(header, rows)


def epoch_curves(runs_dir: Path, every: int) -> str:
    """Mean ACC over seeds at every ``every``-th epoch of the finished runs' cluster phase, one column per group."""
    columns: dict[str, dict[int, list[float]]] = {}
    for path in sorted(runs_dir.glob("*/config.json")):
        store = RunStore(path.parent)
        if store.read_status().get("state") != "finished":
            continue
        config, metrics = store.read_config(), store.read_metrics()
        cluster = metrics[metrics["phase"] == "cluster"].dropna(subset=["acc"])
        name = f'{get_method(config["method"]).title} · {config["data"]} · {config.get("preset") or "defaults"}'
        for epoch, acc in zip(cluster["epoch"] - cluster["epoch"].iloc[0] + 1, cluster["acc"]):
            if epoch % every == 0 or epoch in (1, len(cluster)):
                columns.setdefault(name, {}).setdefault(int(epoch), []).append(acc)
    epochs = sorted({e for column in columns.values() for e in column})
    rows = [[e, *(f"{statistics.mean(c[e]):.3f}" if e in c else "" for c in columns.values())] for e in epochs]
    return table(["cluster epoch", *(f"ACC {name}" for name in columns)], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["kmeans", "ae-kmeans", "dec", "idec"])
    parser.add_argument("--data", nargs="+", default=["usps", "mnist-test"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--preset", help="a preset every listed method has (paper, fast, cpu, ...)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs-dir", type=Path, help="where runs are kept (default: a temporary folder)")
    parser.add_argument("--table-only", action="store_true", help="print the table of the runs in --runs-dir")
    parser.add_argument("--curve-every", type=int, metavar="E",
                        help="also print the mean ACC curve over seeds, every E epochs of the cluster phase")
    args = parser.parse_args()
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="clusterlab-fidelity-"))
    if not args.table_only:
        done = [comparable(config) for config, _, _ in finished_runs(runs_dir)]
        overrides = parse_overrides(args.overrides)
        for data_name in args.data:
            dataset = load_dataset(data_name)
            for seed in args.seeds:  # seed-major: a grid cut short still has whole seeds
                for method in args.methods:
                    wanted = RunConfig.build(method, data_name, seed, args.preset, overrides).to_dict()
                    if comparable(wanted) in done:
                        continue
                    store, seconds = train(method, dataset, seed, args.preset, runs_dir, args.device, **overrides)
                    last = store.read_metrics().iloc[-1]
                    print(f"{data_name} {method} seed {seed}: ACC {last['acc']:.3f} NMI {last['nmi']:.3f} "
                          f"({seconds:.0f} s, {store.read_status().get('reason')})", file=sys.stderr, flush=True)
    print(summarise(finished_runs(runs_dir)))
    print("\nFinal-epoch metrics, mean ± sd over seeds; NMI with arithmetic normalisation.")
    if args.curve_every:
        print("\n" + epoch_curves(runs_dir, args.curve_every))


if __name__ == "__main__":
    main()
