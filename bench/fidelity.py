"""ACC / NMI / ARI of methods × data sets × seeds, beside the published numbers of the specs.

    CLUSTERLAB_DATA=../shared/data python bench/fidelity.py --methods kmeans ae-kmeans dec idec \
        --data usps mnist-test --seeds 0 1 2

Final-epoch metrics of each run (never the best seen). Runs share pretrained autoencoders through the
cache, so AE+k-means, DEC and IDEC of one seed pretrain once.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import mean_std, table, train  # noqa: E402
from core.config import parse_overrides  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.methods import get_method  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["kmeans", "ae-kmeans", "dec", "idec"])
    parser.add_argument("--data", nargs="+", default=["usps", "mnist-test"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--preset", choices=("paper", "fast"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs-dir", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()

    rows = []
    for data_name in args.data:
        dataset = load_dataset(data_name)
        for method in args.methods:
            scores, minutes = [], []
            for seed in args.seeds:
                store, seconds = train(method, dataset, seed, args.preset, args.runs_dir, args.device,
                                       **parse_overrides(args.overrides))
                last = store.read_metrics().iloc[-1]
                scores.append((last["acc"], last["nmi"], last["ari"]))
                minutes.append(seconds / 60)
                print(f"{data_name} {method} seed {seed}: ACC {last['acc']:.3f} NMI {last['nmi']:.3f} "
                      f"({seconds:.0f} s, {store.read_status().get('reason')})", file=sys.stderr, flush=True)
            paper = get_method(method).published.get(data_name)
            rows.append([data_name, get_method(method).title, *(mean_std(s[i] for s in scores) for i in range(3)),
                         f"{max(minutes):.1f}", "—" if paper is None else f"{paper[0]:.3f} / {paper[1]:.3f}",
                         "—" if paper is None else paper[2]])
    header = ["data", "method", "ACC", "NMI", "ARI", "max min/seed", "published ACC / NMI", "source"]
    print(table(header, rows))
    print(f"\n{len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}), preset {args.preset or 'default'}, "
          f"final-epoch metrics; device {args.device}.")


if __name__ == "__main__":
    main()
