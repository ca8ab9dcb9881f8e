"""The app's speed budget: projector frames, UMAP's warm-up, and what watching costs training.

    python bench/app_speed.py                       # everything, 3 repeats
    python bench/app_speed.py --skip-live           # frames only (about a minute)
    python bench/app_speed.py --live reader         # live overhead without a browser

Prints Markdown tables; every time is a median of ``--repeats`` runs.

* Frames: 3,000 points in 10-D (ten Gaussian blobs, about a DEC latent space). The "next epoch"
  moves every point 10 % toward its blob's mean and adds noise of σ = 0.05, as in the research
  notes. A warm frame is what Explore computes per epoch: affinities on the new codes, then 100
  iterations from the previous frame (t-SNE), or ``init=`` the previous frame and a Procrustes
  alignment (UMAP), plus the centroids' positions.
* UMAP warm-up: ``core.embed.warm_up_umap`` in a fresh process with the projector's settings
  (one numba thread): the wait the app's start hides in the background.
* Live overhead: IDEC, fast preset (10 + 10 epochs by default), on digits, with a fresh
  autoencoder cache (so it pretrains), trained by the CLI in its own process, as the app does. Its
  training time (the trainer's own clock, without process start-up) is compared between nobody
  watching, the live panel's reads and figures at the page's refresh interval in this process
  (``reader``), and the real app in headless Chromium on the Train page (``browser``: the server,
  its projector and the browser on the same CPU as the training). Conditions are interleaved so
  drifting machine load hits them alike; the watcher's CPU time per second of training is given
  too, as it does not depend on what else the machine is doing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import median, table  # noqa: E402
from core import embed  # noqa: E402
from core.launch import run_progress, start_run  # noqa: E402
from core.runs import ACTIVE_STATES, RunStore  # noqa: E402
from core.train import RunConfig  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


# ------------------------------------------------------------------------------------------------
# Frames
# ------------------------------------------------------------------------------------------------

def epochs_of_blobs(n: int = 3000, d: int = 10, k: int = 10, seed: int = 0):
    """Latent codes of two consecutive "epochs", their blob labels and the blob centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    labels = rng.integers(0, k, n)
    first = centres[labels] + rng.normal(size=(n, d))
    second = first + 0.1 * (centres[labels] - first) + rng.normal(size=(n, d)) * 0.05
    return first.astype(np.float32), second.astype(np.float32), centres.astype(np.float32)


def time_frames(repeats: int, n: int) -> list[list]:
    from scipy.spatial import procrustes

    first, second, centres = epochs_of_blobs(n)
    rows = []
    for kind in ("pca", "tsne", "umap"):
        project = embed.PROJECTIONS[kind]
        cold_times, warm_times, disparities = [], [], []
        for _ in range(repeats):
            started = time.perf_counter()
            previous, _ = project(first, None, centres)
            cold_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            frame, _ = project(second, previous, centres)
            warm_times.append(time.perf_counter() - started)
            disparities.append(procrustes(previous, frame)[2])
        rows.append([embed.KINDS[kind], f"{n:,}", f"{median(cold_times):.2f} s", f"**{median(warm_times):.2f} s**",
                     f"{median(disparities):.4f}"])
    return rows


def time_umap_warm_up(repeats: int) -> list[float]:
    """Seconds of ``warm_up_umap`` in fresh processes, with the projector worker's thread settings."""
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    code = "from core.embed import warm_up_umap; print(warm_up_umap())"
    seconds = []
    for _ in range(repeats):
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        seconds.append(float(result.stdout.strip().splitlines()[-1]))
    return seconds


# ------------------------------------------------------------------------------------------------
# Live overhead
# ------------------------------------------------------------------------------------------------

def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> set[int]:
    """Every process below ``root`` (from /proc, Linux only)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" ", 1)
            children.setdefault(int(rest.rsplit(")", 1)[1].split()[1]), []).append(int(pid))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


class Watcher:
    """Something looking at a training run; ``cpu_seconds`` is what it cost while it looked."""

    def start(self, store: RunStore) -> None:
        """Begin watching (called as the run is launched, while its process starts up)."""
        self.cpu_seconds = 0.0

    def begin(self) -> None:
        """Training has started: count CPU from here."""

    def stop(self) -> None:
        """Training has ended: stop watching, set ``cpu_seconds``."""


class LiveReader(Watcher):
    """What the live panel does per refresh, without Streamlit and a browser: read the run, build and
    serialise the figures, at the page's own interval."""

    def start(self, store):
        self.cpu_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(store,))
        self._thread.start()

    def _loop(self, store):
        from pages.train import LIVE_INTERVAL_S, live_figures  # the page's own code and refresh interval

        started = time.thread_time()
        while not self._stop.wait(LIVE_INTERVAL_S):
            for figure in live_figures(run_progress(store), store).values():
                figure.to_json()
        self.cpu_seconds = time.thread_time() - started

    def stop(self):
        self._stop.set()
        self._thread.join()


class BrowserWatcher(Watcher):
    """``streamlit run app.py`` plus headless Chromium on /train?run=<id>, polling like a user's tab."""

    def __init__(self, runs_dir: Path, cache_dir: Path):
        from playwright.sync_api import sync_playwright

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {**os.environ, "CLUSTERLAB_RUNS": str(runs_dir), "CLUSTERLAB_CACHE": str(cache_dir),
               "CLUSTERLAB_UMAP_WARMUP": "0", "PYTHONPATH": str(ROOT)}
        self.server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
             str(self.port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait_healthy()
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(viewport={"width": 1440, "height": 1000})
        # The app's first page view imports torch & co. in the server: not part of watching a run.
        self.page.goto(f"http://127.0.0.1:{self.port}/")
        self.page.get_by_text("Preview by class").wait_for(timeout=120_000)
        self.page.goto("about:blank")

    def _wait_healthy(self) -> None:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stcore/health", timeout=2) as answer:
                    if answer.read().strip() == b"ok":
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("streamlit did not start")

    def _cpu(self, exclude: int) -> dict[int, float]:
        """CPU seconds of the server, its projector and the browser processes (all this process
        started, but the training run), by pid."""
        watchers = descendants(os.getpid()) - {exclude} - descendants(exclude)
        return {pid: process_cpu_seconds(pid) for pid in watchers}

    def start(self, store):
        self._store = store
        self.page.goto(f"http://127.0.0.1:{self.port}/train?run={store.id}")  # as a user would, once

    def begin(self):
        self._before = self._cpu(exclude=self._store.read_status().get("pid") or -1)

    def stop(self):
        after = self._cpu(exclude=self._store.read_status().get("pid") or -1)
        # processes that started meanwhile count whole; ones that ended meanwhile are lost (small)
        self.cpu_seconds = sum(cpu - self._before.get(pid, 0.0) for pid, cpu in after.items())
        self.page.goto("about:blank")

    def close(self) -> None:
        self.browser.close()
        self.playwright.stop()
        os.killpg(self.server.pid, signal.SIGTERM)
        self.server.wait(timeout=10)


def train_watched(runs_dir: Path, cache_dir: Path, watcher: Watcher, overrides: dict) -> tuple[float, float]:
    """Train IDEC (fast preset) on digits in its own process while ``watcher`` looks on.

    Returns the trainer's own training seconds and the watcher's CPU seconds in that time.
    """
    shutil.rmtree(cache_dir, ignore_errors=True)  # pretrain every time: the same work in every condition
    os.environ["CLUSTERLAB_CACHE"] = str(cache_dir)
    store = start_run(RunConfig.build("idec", "digits", preset="fast", overrides=overrides), runs_dir)
    try:
        watcher.start(store)
        while run_progress(store).state == "queued":  # the process start-up is not training
            time.sleep(0.1)
        watcher.begin()
        while run_progress(store).state in ACTIVE_STATES:
            time.sleep(0.2)
        watcher.stop()
    finally:
        store.request_stop()  # interrupted (Ctrl-C): do not leave the training process behind
    assert store.read_status()["state"] == "finished", store.read_status()
    return float(store.read_metrics()["time"].iloc[-1]), watcher.cpu_seconds


def time_live_overhead(repeats: int, modes: list[str], folder: Path, overrides: dict) -> list[list]:
    runs_dir, cache_dir = folder / "runs", folder / "cache"
    watchers: dict[str, Watcher] = {"nobody watching": Watcher()}
    if "reader" in modes:
        watchers["live panel reads (no browser)"] = LiveReader()
    if "browser" in modes:
        watchers["app in Chromium on Train"] = BrowserWatcher(runs_dir, cache_dir)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in watchers}
    try:
        for _ in range(repeats):  # interleaved, so drifting machine load hits every condition alike
            for name, watcher in watchers.items():
                results[name].append(train_watched(runs_dir, cache_dir, watcher, overrides))
    finally:
        for watcher in watchers.values():
            if isinstance(watcher, BrowserWatcher):
                watcher.close()
    base = median(seconds for seconds, _ in results["nobody watching"])
    rows = []
    for name, runs in results.items():
        seconds = median(s for s, _ in runs)
        share = median(cpu / s for s, cpu in runs)
        rows.append([name, f"{seconds:.1f} s", "—" if name == "nobody watching" else f"**{seconds / base - 1:+.1%}**",
                     "—" if name == "nobody watching" else f"{share:.1%}",
                     ", ".join(f"{s:.1f}" for s, _ in runs)])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points", type=int, default=3000)
    parser.add_argument("--live", choices=("reader", "browser", "both"), default="both")
    parser.add_argument("--skip-live", action="store_true")
    parser.add_argument("--skip-frames", action="store_true")
    parser.add_argument("--pretrain-epochs", type=int, default=10, help="of the live-overhead runs")
    parser.add_argument("--epochs", type=int, default=10, help="clustering epochs of the live-overhead runs")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU cores: {os.cpu_count()}, load average at start: {load:.2f}\n")

    if not args.skip_frames:
        print("### Frames\n")
        print(table(["projection", "points", "first frame (cold)", "warm frame", "Procrustes disparity to previous"],
                    time_frames(args.repeats, args.points)))
        warm_up = time_umap_warm_up(args.repeats)
        print(f"\nUMAP warm-up in a fresh process (numba compile, hidden at app start): "
              f"**{median(warm_up):.1f} s** (runs: {', '.join(f'{s:.1f}' for s in warm_up)})\n")

    if not args.skip_live:
        modes = ["reader", "browser"] if args.live == "both" else [args.live]
        if "browser" in modes and not Path(CHROMIUM).exists():
            modes.remove("browser")
            print(f"(no Chromium at {CHROMIUM}: browser condition skipped)\n")
        overrides = {"pretrain_epochs": args.pretrain_epochs, "epochs": args.epochs}
        print(f"### Live view overhead on training (IDEC, fast preset, digits, {args.pretrain_epochs} + "
              f"{args.epochs} epochs)\n")
        with tempfile.TemporaryDirectory(prefix="clusterlab-app-speed-") as folder:
            print(table(["condition", "training time (median)", "slower by", "watcher CPU (share of one core)",
                         "runs (s)"], time_live_overhead(args.repeats, modes, Path(folder), overrides)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
