"""The Sweep page in a real browser: a 2 × 2 IDEC sweep on digits, started from the page; the heat map
fills as its trials finish; a reload finds the sweep again; a click on a cell opens its runs.

Uses ``test_browser``'s server, browser and helpers (its own server: module-scoped fixtures are per module).
"""
from __future__ import annotations

import re
import time

from core.sweep import SweepStore, sweep_state
from pages.sweep import LIVE_INTERVAL_S
from test_browser import (CHROMIUM, app_url, charts, page, pytestmark, screenshot,  # noqa: F401 (fixtures)
                          set_slider, wait_for_chart)

MAP_TITLE = "Mean ACC across seeds"
# The heat map's cells: how many have a mean, and each cell's text (row by row: γ, then α)
MAP_JS = """(title) => {
    const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
        .find(g => ((g.layout.title || {}).text || '').replace(/<[^>]+>/g, '') === title);
    if (!gd) return null;
    const means = gd.data[1];
    return {scored: means.z.flat().filter(v => v !== null && !Number.isNaN(v)).length, text: means.text.flat()};
}"""
# The page position of the centre of cell (column, row) of the heat map
CELL_JS = """([title, column, row]) => {
    const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
        .find(g => ((g.layout.title || {}).text || '').replace(/<[^>]+>/g, '') === title);
    const layout = gd._fullLayout, box = gd.getBoundingClientRect();
    return {x: box.left + layout._size.l + layout.xaxis.l2p(column),
            y: box.top + layout._size.t + layout.yaxis.l2p(row)};
}"""


def wait_for_map(page, scored: int, timeout_s: float) -> dict:
    """Poll until the heat map has ≥ ``scored`` cells with a mean."""
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        seen = page.evaluate(MAP_JS, MAP_TITLE)
        if seen and seen["scored"] >= scored:
            return seen
        page.wait_for_timeout(1000)
    screenshot(page, "sweep-failed")
    raise AssertionError(f"the heat map has not {scored} scored cells after {timeout_s} s; saw {seen}")


def test_sweep_idec_heat_map_fills_reload_and_open_a_cell(page, app_url):
    url, runs = app_url
    page.goto(url)
    page.get_by_text("Preview by class").wait_for()  # the app's first page: digits is the data set
    page.get_by_role("link", name="Sweep").click()
    page.get_by_text("Knobs to sweep").wait_for()

    # IDEC (the default) with the fast demo preset; α × γ instead of the first two weights (α, T)
    knobs = page.get_by_test_id("stMultiSelect")
    knobs.get_by_role("combobox").click()
    page.keyboard.press("Backspace")  # drops the last knob chosen, T
    page.get_by_role("option", name="γ — gamma").click()
    page.keyboard.press("Escape")
    page.get_by_text("γ: 0.01").wait_for()
    for count in page.get_by_test_id("stNumberInput").filter(has=page.get_by_text("n", exact=True)).all():
        count.get_by_role("spinbutton").fill("2")
        count.get_by_role("spinbutton").press("Enter")
        page.wait_for_timeout(700)
    page.get_by_text("α: 0.5, 2").wait_for()
    page.get_by_text("γ: 0.01, 1").wait_for()
    seeds = page.get_by_role("textbox", name="Seeds")
    seeds.fill("0")
    seeds.press("Enter")
    workers = page.get_by_test_id("stNumberInput").filter(has=page.get_by_text("Workers", exact=True))
    workers.get_by_role("spinbutton").fill("2")
    workers.get_by_role("spinbutton").press("Enter")
    page.wait_for_timeout(700)
    # Short trials: 5 epochs of pretraining (once, shared by the four), 1 of clustering
    page.get_by_text("Fixed settings (every trial)").click()
    set_slider(page, "epochs", "Home")
    set_slider(page, "pretrain_epochs", "Home")
    set_slider(page, "pretrain_epochs", "ArrowRight")
    page.get_by_role("button", name="Start", exact=True).click()

    page.wait_for_url(re.compile(r"/sweep\?id="), timeout=60_000)
    sweep_id = page.url.split("id=")[1].split("&")[0]
    store = SweepStore(runs.parent / "sweeps" / sweep_id)
    spec = store.read_manifest()["spec"]
    assert spec["grid"] == {"alpha": [0.5, 2.0], "gamma": [0.01, 1.0]} and spec["seeds"] == [0]
    assert spec["overrides"] == {"pretrain_epochs": 5, "epochs": 1} and spec["preset"] == "fast"
    assert spec["workers"] == 2
    first = wait_for_map(page, 0, timeout_s=30)
    assert len(first["text"]) == 4
    filled = wait_for_map(page, 4, timeout_s=400)  # generous: CI machines vary
    assert all(re.fullmatch(r"0\.\d{3} \(1\)", text) for text in filled["text"]), filled
    screenshot(page, "sweep")

    # A reload (or a second tab) finds the sweep from the URL
    page.reload()
    page.get_by_text(sweep_id).first.wait_for()
    wait_for_map(page, 4, timeout_s=60)

    # Clicking the cell α = 2, γ = 1 picks it; its run opens on the Runs page
    deadline = time.monotonic() + 60
    while sweep_state(store) != "finished" and time.monotonic() < deadline:
        time.sleep(0.5)
    page.wait_for_timeout(2 * LIVE_INTERVAL_S * 1000)  # the page's last refresh (the map is still from then on)
    position = page.evaluate(CELL_JS, [MAP_TITLE, 1, 1])
    page.mouse.click(position["x"], position["y"])
    cell = page.get_by_test_id("stSelectbox").filter(has_text="Cell").get_by_role("combobox")
    deadline = time.monotonic() + 30
    while not cell.input_value().startswith("α — alpha = 2 · γ — gamma = 1 — ") and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    assert cell.input_value().startswith("α — alpha = 2 · γ — gamma = 1 — "), cell.input_value()
    page.get_by_role("button", name="Open its runs").click()
    (trial,) = [t for t in store.read_manifest()["trials"] if t["settings"] == {"alpha": 2.0, "gamma": 1.0}]
    wait_for_chart(page, "ACC per epoch", trial["run_id"], at_least=1, timeout_s=30)
    page.get_by_text("in sweep").wait_for()
