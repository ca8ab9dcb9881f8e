"""ACC / NMI / ARI of methods × data sets × seeds, beside the published numbers of the specs.

    CLUSTERLAB_DATA=../shared/data python bench/fidelity.py --methods kmeans ae-kmeans dec idec \
        --data usps mnist-test --seeds 0 1 2 --runs-dir bench-runs
    python bench/fidelity.py --runs-dir bench-runs --table-only     # the table of runs already there
    python bench/fidelity.py --runs-dir bench-runs --table-only --curve-every 5   # and the ACC curves
    python bench/fidelity.py --table     # every method and data set measured so far (bench/fidelity_results.json)

Final-epoch metrics of each run (never the best seen). The table is built from the run directories,
so a grid can be run in pieces; runs already finished with the same settings are not run again.
AE+k-means, DEC and IDEC of one seed share their pretrained autoencoder through the cache.

``--table`` prints the one table of every method and data set measured, from the recorded results in
``fidelity_results.json`` (not re-run: its rows say when each was measured), beside the published numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import mean_std, table, train  # noqa: E402
from core.config import parse_overrides  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.methods import REGISTRY, get_method  # noqa: E402
from core.runs import RunStore  # noqa: E402
from core.train import RunConfig  # noqa: E402


class FinishedRun(NamedTuple):
    config: dict
    metrics: pd.DataFrame  # one row per epoch

    @property
    def last(self) -> dict:
        return self.metrics.iloc[-1].to_dict()

    @property
    def minutes(self) -> float:
        return self.metrics["time"].iloc[-1] / 60

    @property
    def init_acc(self) -> float:
        """ACC right after the cluster initialisation: for the autoencoder methods, k-means on the run's own
        pretrained codes (NaN where the init is not scored)."""
        init = self.metrics.loc[self.metrics["phase"] == "init", "acc"] if "acc" in self.metrics else []
        return float(init.iloc[0]) if len(init) else float("nan")

    @property
    def group(self) -> tuple[str, str, str]:
        return self.config["data"], self.config["method"], self.config.get("preset") or "defaults"


def finished_runs(runs_dir: Path) -> list[FinishedRun]:
    """Every finished run in the folder, read once."""
    found = []
    for path in sorted(runs_dir.glob("*/config.json")):
        store = RunStore(path.parent)
        metrics = store.read_metrics()
        if store.read_status().get("state") == "finished" and not metrics.empty:
            found.append(FinishedRun(store.read_config(), metrics))
    return found


def comparable(config: dict) -> dict:
    """The part of a config that decides a result: everything but bookkeeping."""
    return {k: config.get(k) for k in ("method", "data", "seed", "trainer", "params")}


def init_column(values) -> str:
    values = [v for v in values if not math.isnan(v)]
    return mean_std(values) if values else "—"


def grouped(runs: list[FinishedRun]) -> dict[tuple[str, str, str], list[FinishedRun]]:
    """Runs by (data, method, preset), data sets in order, methods in registry order."""
    groups: dict[tuple[str, str, str], list[FinishedRun]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    order = list(REGISTRY)
    return dict(sorted(groups.items(), key=lambda g: (g[0][0], order.index(g[0][1]), g[0][2])))


def summarise(runs: list[FinishedRun]) -> str:
    rows = []
    for (data, method, preset), members in grouped(runs).items():
        paper = get_method(method).published.get(data)
        lasts = [run.last for run in members]
        rows.append([data, get_method(method).title, preset, len(members),
                     *(mean_std(last[k] for last in lasts) for k in ("acc", "nmi", "ari")),
                     init_column(run.init_acc for run in members),
                     f"{statistics.median(run.minutes for run in members):.1f}",
                     "—" if paper is None else f"{paper[0]:.3f} / {paper[1]:.3f}", "—" if paper is None else paper[2]])
    header = ["data", "method", "preset", "seeds", "ACC", "NMI", "ARI", "ACC at init", "median min/seed",
              "published ACC / NMI", "source"]
    return table(header, rows)


def epoch_curves(runs: list[FinishedRun], every: int) -> str:
    """Mean ACC over seeds at every ``every``-th epoch of the runs' cluster phase, one column per group."""
    columns: dict[str, dict[int, list[float]]] = {}
    for (data, method, preset), members in grouped(runs).items():
        column: dict[int, list[float]] = {}
        for run in members:
            cluster = run.metrics[run.metrics["phase"] == "cluster"].dropna(subset=["acc"])
            if cluster.empty:  # k-means on pixels has no cluster phase
                continue
            for epoch, acc in zip(cluster["epoch"] - cluster["epoch"].iloc[0] + 1, cluster["acc"]):
                if epoch % every == 0 or epoch in (1, len(cluster)):
                    column.setdefault(int(epoch), []).append(acc)
        if column:
            columns[f"{get_method(method).title} · {data} · {preset}"] = column
    epochs = sorted({e for column in columns.values() for e in column})
    rows = [[e, *(f"{statistics.mean(c[e]):.3f}" if e in c else "" for c in columns.values())] for e in epochs]
    return table(["cluster epoch", *(f"ACC {name}" for name in columns)], rows)


RECORDED = Path(__file__).with_name("fidelity_results.json")


def _score(result: dict | None) -> str:
    """``0.855 / 0.859 (3 seeds, cpu)`` from a recorded result; ``—`` when there is none or it is not measured."""
    if not result or result.get("acc") is None:
        return "—"
    nmi = "—" if result.get("nmi") is None else f"{result['nmi']:.3f}"
    seeds = f"{result['seeds']} seed{'s' if result['seeds'] > 1 else ''}"
    return f"{result['acc']:.3f} / {nmi} ({seeds}, {result.get('preset') or result.get('label')})"


def _start(result: dict | None) -> str:
    return "—" if not result or result.get("start") is None else f"{result['start']:.3f}"


def fidelity_table(path: Path = RECORDED) -> str:
    """Published ACC / NMI beside ours at the CPU budget and from a better start, each with its start's ACC."""
    rows = []
    for row in json.loads(path.read_text())["rows"]:
        method = get_method(row["method"])
        paper = method.published.get(row["data"])
        cpu, better = row.get("cpu"), row.get("better")
        when = sorted({r["measured"] for r in (cpu, better) if r})
        rows.append([row["data"], method.title, "—" if paper is None else f"{paper[0]:.3f} / {paper[1]:.3f}",
                     _score(cpu), _start(cpu), _score(better), _start(better), row["why"], ", ".join(when)])
    header = ["data", "method", "published ACC / NMI", "ours, CPU budget: ACC / NMI", "its start",
              "ours, imported or paper-budget start", "its start", "why it differs", "measured"]
    return table(header, rows)


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
    parser.add_argument("--table", nargs="?", type=Path, const=RECORDED, metavar="JSON",
                        help=f"print the fidelity table of the recorded results (default {RECORDED.name}) and stop")
    args = parser.parse_args()
    if args.table:
        print(fidelity_table(args.table))
        print("\nACC / NMI of the final epoch, mean over seeds; 'its start' is k-means on the codes the run "
              "fine-tunes. measured: 'earlier' = the README's tables from earlier sessions, not re-run here.")
        return
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="clusterlab-fidelity-"))
    if not args.table_only:
        done = [comparable(run.config) for run in finished_runs(runs_dir)]
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
    runs = finished_runs(runs_dir)
    print(summarise(runs))
    print("\nFinal-epoch metrics, mean ± sd over seeds; NMI with arithmetic normalisation.")
    if args.curve_every:
        print("\n" + epoch_curves(runs, args.curve_every))


if __name__ == "__main__":
    main()
