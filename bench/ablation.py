"""A method's ablation table (its ``ablations()`` columns) beside the published row.

    CLUSTERLAB_DATA=../shared/data python bench/ablation.py --method cdc --data fashion-mnist --seeds 0 1 2
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
    parser.add_argument("--method", default="cdc")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--preset", help="one of the method's presets (paper, fast, cpu, …); default: none")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    method = get_method(args.method)
    dataset = load_dataset(args.data)
    published = getattr(method, "published_ablation", {}).get(args.data)
    rows = []
    for i, (column, overrides) in enumerate(method.ablations().items()):
        scores = []
        for seed in args.seeds:
            store, seconds = train(args.method, dataset, seed, args.preset, device=args.device,
                                   **{**parse_overrides(args.overrides), **overrides})
            last = store.read_metrics().iloc[-1]
            scores.append((last["acc"], last["nmi"]))
            print(f"{column} seed {seed}: ACC {last['acc']:.3f} ({seconds:.0f} s)", file=sys.stderr, flush=True)
        paper = "—" if published is None else f"{published[i][0]:.3f} / {published[i][1]:.3f}"
        rows.append([column, mean_std(s[0] for s in scores), mean_std(s[1] for s in scores), paper])
    print(table(["column", "ACC", "NMI", "published ACC / NMI"], rows))
    print(f"\n{method.title} on {args.data}, seeds {args.seeds}, preset {args.preset or 'default'}.")


if __name__ == "__main__":
    main()
