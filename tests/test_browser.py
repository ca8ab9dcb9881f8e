"""The app in a real browser: Data → Train (IDEC, fast demo) → live curves → reload → Explore.

Drives Debian's Chromium (``/usr/bin/chromium``) through Playwright against ``streamlit run app.py``
on a free localhost port, with runs and caches in a temporary folder. Screenshots of every step
go to ``tests/screenshots/`` (git-ignored). Skips, saying why, when Chromium or Playwright is
missing; CI installs both.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.launch import is_alive
from core.runs import RunStore
from core.sweep import SweepStore

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CLUSTERLAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
SCREENSHOTS = ROOT / "tests" / "screenshots"

REQUIRED = os.environ.get("CLUSTERLAB_REQUIRE_BROWSER") == "1"  # CI: a missing browser is a failure, not a skip

try:
    from playwright import sync_api as playwright_api
except ImportError:
    playwright_api = None
_MISSING = ("Playwright is not installed (pip install playwright)" if playwright_api is None else
            None if CHROMIUM.exists() else f"no Chromium at {CHROMIUM} (apt-get install chromium, "
                                           "or set CLUSTERLAB_CHROMIUM)")
if _MISSING and REQUIRED:
    pytest.fail(f"CLUSTERLAB_REQUIRE_BROWSER=1 but {_MISSING}", pytrace=False)
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

# JavaScript run in the page: the plotly charts Streamlit drew, as {title, traces: {name: n points}}.
# Plotly ships NumPy arrays base64-encoded; _fullData holds the decoded traces and their lengths.
CHARTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
    title: ((gd.layout && gd.layout.title && gd.layout.title.text) || '').replace(/<[^>]+>/g, ''),
    traces: Object.fromEntries((gd._fullData || []).map(t => [t.name, t._length || 0]))}))"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout} s")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """``streamlit run app.py`` on a free port; stops it, and any sweep or run it started, afterwards."""
    folder = tmp_path_factory.mktemp("browser")
    runs = folder / "runs"
    port = _free_port()
    env = {**os.environ, "CLUSTERLAB_RUNS": str(runs), "CLUSTERLAB_CACHE": str(folder / "cache"),
           "CLUSTERLAB_SWEEPS": str(folder / "sweeps"),
           # this test never shows UMAP: its numba warm-up would only compete with training for the CPU
           "CLUSTERLAB_UMAP_WARMUP": "0", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    with open(folder / "streamlit.log", "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url, runs
    finally:
        for manifest in (folder / "sweeps").glob("*/sweep.json"):  # first the schedulers, which start runs
            sweep = SweepStore(manifest.parent)
            sweep.request_stop()
            if is_alive(sweep.pid()):
                os.kill(sweep.pid(), signal.SIGTERM)
        for config in runs.glob("*/config.json"):  # training runs live on after the app: stop them here
            store = RunStore(config.parent)
            pid = store.read_status().get("pid")
            store.request_stop()
            if pid and is_alive(pid):
                os.kill(pid, signal.SIGTERM)
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def page(app_url):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1100})
        tab = context.new_page()
        tab.set_default_timeout(30_000)
        yield tab
        browser.close()


def screenshot(page, name: str) -> None:
    """The page from its top (Streamlit scrolls its main block, not the window)."""
    page.evaluate("() => document.querySelector('[data-testid=stMain]')?.scrollTo(0, 0)")
    page.wait_for_timeout(300)
    page.screenshot(path=SCREENSHOTS / f"{name}.png")


def charts(page) -> list[dict]:
    return page.evaluate(CHARTS_JS)


def wait_for_chart(page, title: str, trace: str, at_least: int, timeout_s: float) -> dict:
    """Poll the page until the chart titled ``title`` has ≥ ``at_least`` points in ``trace``."""
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        seen = charts(page)
        for chart in seen:
            if chart["title"] == title and chart["traces"].get(trace, 0) >= at_least:
                return chart
        page.wait_for_timeout(500)
    raise AssertionError(f"no chart {title!r} with {at_least} points in {trace!r} after {timeout_s} s; saw {seen}")


def set_slider(page, label: str, key: str) -> None:
    """Focus the slider labelled ``label`` and press ``key`` (Home: its minimum, End: its maximum)."""
    slider = page.get_by_test_id("stSlider").filter(has=page.get_by_text(label, exact=True))
    thumb = slider.get_by_role("slider")
    thumb.focus()
    page.keyboard.press(key)
    page.wait_for_timeout(500)


def wait_for_scatter(page, accept, timeout_s: float) -> dict:
    """Poll until a chart's traces (name → points) satisfy ``accept``."""
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        seen = charts(page)
        found = next((c for c in seen if accept(c["traces"])), None)
        if found is not None:
            return found
        page.wait_for_timeout(500)
    raise AssertionError(f"no matching scatter after {timeout_s} s; saw {seen}")


def test_train_idec_watch_curves_reload_and_explore(page, app_url):
    url, runs = app_url
    page.goto(url)

    # Data: digits, the offline default, is pre-selected; pick it explicitly anyway.
    page.get_by_text("Preview by class").wait_for()
    page.get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name="digits —").click()
    page.get_by_text("Training will use digits").wait_for()
    screenshot(page, "data")

    # Train: IDEC with the fast demo preset, then Start.
    page.get_by_role("link", name="Train").click()
    page.get_by_text("Loss weights and thresholds").wait_for()
    page.get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name="IDEC", exact=True).click()
    fast = page.get_by_role("radio", name="fast demo")
    if fast.get_attribute("aria-checked") != "true":  # clicking the selected option would deselect it
        fast.click()
    # No tolerance stop and the most epochs, so the run outlasts the reload below on a fast machine too
    set_slider(page, "tol", "Home")
    set_slider(page, "epochs", "End")
    page.get_by_role("button", name="Start").click()
    started = time.monotonic()
    wait_for_chart(page, "Loss per term", "total", at_least=1, timeout_s=60)
    timeline = {"first loss point after Start": time.monotonic() - started}
    wait_for_chart(page, "ACC · NMI · ARI", "ACC", at_least=2, timeout_s=400)  # generous: CI machines vary
    timeline["two ACC points after Start"] = time.monotonic() - started
    screenshot(page, "train")

    (run_dir,) = [p.parent for p in runs.glob("*/config.json")]
    store = RunStore(run_dir)
    config = store.read_config()
    assert config["method"] == "idec" and config["preset"] == "fast" and config["data"] == "digits"
    assert config["params"]["tol"] == 0 and config["trainer"]["epochs"] == 2000

    # Reload while training: the run goes on, and the page finds it again.
    epoch_before = int(store.read_metrics()["epoch"].max())
    page.reload()
    page.get_by_text(store.id).first.wait_for()
    wait_for_chart(page, "ACC · NMI · ARI", "ACC", at_least=2, timeout_s=30)
    assert store.read_status()["state"] in ("running", "finished")
    deadline = time.monotonic() + 60
    while int(store.read_metrics()["epoch"].max()) <= epoch_before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert int(store.read_metrics()["epoch"].max()) > epoch_before, "training did not continue after the reload"

    # A second tab without ?run= lists the run in its sidebar, but does not take it over.
    other = page.context.new_page()
    other.goto(f"{url}/train")
    other.get_by_test_id("stSidebar").get_by_text(store.id, exact=True).first.wait_for()
    screenshot(other, "second_tab")
    assert other.get_by_role("button", name="Start", exact=True).is_enabled()
    assert other.get_by_role("button", name="Stop", exact=True).is_disabled()
    other.close()

    # Explore: the background t-SNE of the run appears; PCA (immediate) shows the centroids at once.
    page.get_by_role("link", name="Explore").click()
    tsne = wait_for_scatter(page, lambda traces: traces.get("samples", 0) == 1797, timeout_s=90)
    timeline["first t-SNE frame after Start"] = time.monotonic() - started
    page.get_by_role("radio", name="PCA").click()
    scatter = wait_for_scatter(page, lambda traces: traces.get("centroids", 0) > 0, timeout_s=30)
    assert scatter["traces"]["centroids"] == 10 and scatter["traces"]["samples"] == 1797, (tsne, scatter)
    screenshot(page, "explore")
    # Centroid trails: one line per centroid through the epochs so far (the init and a cluster epoch at least)
    page.get_by_text("Centroid trails").click()
    trails = wait_for_scatter(page, lambda traces: traces.get("trail 9", 0) >= 2, timeout_s=30)
    assert all(trails["traces"][f"trail {k}"] >= 2 for k in range(10)), trails
    screenshot(page, "explore_trails")

    page.get_by_role("link", name="Runs").click()
    wait_for_chart(page, "ACC per epoch", store.id, at_least=2, timeout_s=30)
    screenshot(page, "runs")
    print("timeline (s):", {step: round(seconds, 1) for step, seconds in timeline.items()})  # shown with -s

    store.request_stop()  # what Stop does; a 2,000-epoch run must not outlive the test
    deadline = time.monotonic() + 60
    while store.read_status()["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.read_status()["state"] == "stopped"
