"""ACC / NMI / ARI of methods × data sets × seeds, beside the published numbers of the specs.

    CLUSTERLAB_DATA=../shared/data python bench/fidelity.py --methods kmeans ae-kmeans dec idec \
        --data usps mnist-test --seeds 0 1 2 --runs-dir bench-runs
    python bench/fidelity.py --runs-dir bench-runs --table-only     # the table of runs already there

Final-epoch metrics of each run (never the best seen). The table is built from the run directories,
so a grid can be run in pieces; runs already finished with the same settings are not run again.
AE+k-means, DEC and IDEC of one seed share their pretrained autoencoder through the cache.
"""
from __future__ import annotations

import argparse
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
    """(config, last metrics row, minutes) of every finished run in the folder."""
    found = []
    for path in sorted(runs_dir.glob("*/config.json")):
        store = RunStore(path.parent)
        metrics = store.read_metrics()
        if store.read_status().get("state") != "finished" or metrics.empty:
            continue
        last = metrics.iloc[-1].to_dict()
        found.append((store.read_config(), last, last["time"] / 60))
    return found


def comparable(config: dict) -> dict:
    """The part of a config that decides a result: everything but bookkeeping."""
    return {k: config.get(k) for k in ("method", "data", "seed", "trainer", "params")}


def summarise(runs: list[tuple[dict, dict, float]]) -> str:
    groups: dict[tuple[str, str], list] = {}
    for config, last, minutes in runs:
        groups.setdefault((config["data"], config["method"]), []).append((config, last, minutes))
    rows = []
    method_order = list(REGISTRY)
    for (data, method), members in sorted(groups.items(), key=lambda g: (g[0][0], method_order.index(g[0][1]))):
        seeds = sorted(c["seed"] for c, _, _ in members)
        paper = get_method(method).published.get(data)
        rows.append([data, get_method(method).title, len(seeds),
                     *(mean_std(last[k] for _, last, _ in members) for k in ("acc", "nmi", "ari")),
                     f"{statistics.median(m for _, _, m in members):.1f}",
                     "—" if paper is None else f"{paper[0]:.3f} / {paper[1]:.3f}", "—" if paper is None else paper[2]])
    header = ["data", "method", "seeds", "ACC", "NMI", "ARI", "median min/seed", "published ACC / NMI", "source"]
    return table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["kmeans", "ae-kmeans", "dec", "idec"])
    parser.add_argument("--data", nargs="+", default=["usps", "mnist-test"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--preset", choices=("paper", "fast"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs-dir", type=Path, help="where runs are kept (default: a temporary folder)")
    parser.add_argument("--table-only", action="store_true", help="print the table of the runs in --runs-dir")
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


if __name__ == "__main__":
    main()
