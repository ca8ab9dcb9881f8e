"""Train page: method, preset and knobs → a run in its own process → live progress, curves and sizes.

The sliders are generated from each method's config metadata (``Config.knobs()``), never retyped.
The live panel is a fragment that re-reads the run directory; the training process does not know
it is watched, so a reload or a second tab simply reads the same files again.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import re
import time

import streamlit as st
import torch

from core.config import Knob
from core.data import DataError
from core.data.builtin import cache_dir
from core.embed import colour_slots
from core.launch import RunProgress, log_tail, run_progress, start_run, stop_run
from core.methods import REGISTRY, get_method
from core.metrics import COLLAPSE_SHARE, largest_share
from core.runs import RunStore
from core.train import RunConfig, TrainerConfig, init_weights
from pages import charts, common

# What watching costs a run training on the same CPU (bench/app_speed.py): each refresh of the panel
# costs the browser ~30 ms, and each chart it has to redraw ~50 ms more, while a chart sent again
# unchanged is not redrawn. So the panel refreshes every 3 s and the charts change at most every 6 s.
LIVE_INTERVAL_S = 3.0
CHART_INTERVAL_S = 6.0
DEMO_DATA = "digits"  # the class demo: a method's fast preset on the built-in digits, seed 0
PRESET_LABELS = {"fast": "fast demo", "cpu": "CPU budget", "": "defaults"}  # other presets show their own names
TRAINING_KNOBS = ("pretrain_epochs", "epochs", "batch_size", "lr", "pretrain_lr")
ARCHITECTURE_KNOBS = ("autoencoder", "latent_dim")  # have symbols, but are not what one tunes per run
# trainer knobs that mean nothing without a phase (None: without any trained phase)
HIDDEN_WITHOUT_PHASE = {"pretrain_epochs": "pretrain", "epochs": "cluster", "batch_size": None}


# -- ui -------------------------------------------------------------------------------------------
def method_ui(key: str = "train.method") -> str:
    """The registry name of the chosen method (IDEC first time)."""
    names = list(REGISTRY)
    return common.remember(st.selectbox, key, "idec" if "idec" in names else names[0],
                           label="Method", options=names, format_func=lambda n: REGISTRY[n].title)


def preset_ui(method: str, data: str, key: str = "train.preset") -> str | None:
    """One of the method's presets for this data set (``fast`` first time), or None: its defaults."""
    presets = REGISTRY[method].presets(data)
    usual = [name for name in ("fast", "cpu", "paper") if name in presets]
    options = [*usual, *(name for name in presets if name not in usual), ""]
    preset = common.remember(st.segmented_control, key, "fast", label="Preset", options=options,
                             format_func=lambda name: PRESET_LABELS.get(name, name),
                             help="fast demo: short, for a class on a laptop · CPU budget: the benchmarks' "
                                  "budget on 2 CPU cores · paper: the published settings")
    return preset or None  # "" and a deselected control both mean "method defaults"


def log_grid(low: float, high: float, *values: float) -> list[float]:
    """1-2-5 steps per decade between ``low`` and ``high``, plus the ``values`` themselves."""
    grid = set(values)
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for mantissa in (1, 2, 5):
            candidate = float(f"{mantissa}e{exponent}")
            if low - 1e-15 <= candidate <= high + 1e-15:
                grid.add(candidate)
    return sorted(grid)


def knob_label(knob: Knob) -> str:
    """``α — alpha``; just ``tol`` when the symbol is the name."""
    return knob.name if not knob.symbol or knob.symbol == knob.name else f"{knob.symbol} — {knob.name}"


def knob_ui(knob: Knob, value, key: str):
    """One widget for one config field: slider, log slider, select box or toggle, labelled with its symbol.

    ``value`` is the default the widget starts from. Sliders reach far enough for it and for the value
    the widget shows (a preset's or a restored run's may lie beyond the range a user is offered, e.g.
    DSCDAN's paper budget on digits: 2,849 epochs).
    """
    label, help_text = knob_label(knob), knob.help
    if knob.choices is not None:
        return common.remember(st.selectbox, key, value, label=label, options=list(knob.choices), help=help_text,
                               format_func=knob.choice_label)
    if knob.type is bool:
        return common.remember(st.toggle, key, bool(value), label=label, help=help_text)
    if knob.min is None or knob.max is None:
        return common.remember(st.number_input, key, value, label=label, help=help_text)
    shown = common.shown_value(key, value)
    if knob.log:
        return common.remember(st.select_slider, key, float(value), label=label, help=help_text,
                               options=log_grid(float(knob.min), float(knob.max), float(value), float(shown)),
                               format_func=lambda v: f"{v:g}")
    low, high = min(knob.min, value, shown), max(knob.max, value, shown)
    if knob.type is int:
        return common.remember(st.slider, key, int(value), label=label, help=help_text, min_value=int(low),
                               max_value=int(high), step=int(knob.step or 1))
    step = float(knob.step or (float(knob.max) - float(knob.min)) / 100)
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return common.remember(st.slider, key, float(value), label=label, help=help_text, min_value=float(low),
                           max_value=float(high), step=step, format=f"%.{decimals}f")


def group_knobs(method: str) -> dict[str, list[Knob]]:
    """Split the method's and trainer's knobs into what the page shows where.

    ``weights``: the method's symbols (α, γ, λ, η, β, T, tol …) — what a researcher tunes;
    ``training``: epochs, batch size, learning rates; ``advanced``: the rest.
    """
    method_cls = get_method(method)
    groups: dict[str, list[Knob]] = {"weights": [], "training": [], "advanced": []}
    for knob in TrainerConfig.knobs():
        if knob.name in HIDDEN_WITHOUT_PHASE:
            phase = HIDDEN_WITHOUT_PHASE[knob.name]
            if not method_cls.phases or (phase is not None and phase not in method_cls.phases):
                continue  # e.g. no epochs slider for k-means on pixels, which trains nothing
        groups["training" if knob.name in TRAINING_KNOBS else "advanced"].append(knob)
    for knob in method_cls.Config.knobs():
        if knob.name in TRAINING_KNOBS:
            groups["training"].append(knob)
        elif knob.symbol and knob.name not in ARCHITECTURE_KNOBS:
            groups["weights"].append(knob)
        else:
            groups["advanced"].append(knob)
    order = {name: i for i, name in enumerate(TRAINING_KNOBS)}
    groups["training"].sort(key=lambda k: order.get(k.name, len(order)))
    return groups


def knob_key(method: str, name: str) -> str:
    """The widget key of a knob. Widgets are kept per method, not per preset: choosing a preset moves the
    knobs it sets (their default moved, so ``remember`` starts them again from it) and keeps the others."""
    return f"train.{method}.{name}"


def restore_settings(config: dict) -> None:
    """Set this page's widgets and the chosen data set to a run's settings (its ``config.json``)."""
    run = RunConfig.from_dict(config)
    st.session_state[common.DATA] = run.data
    settings = {"train.method": run.method, "train.preset": run.preset or "", "train.seed": run.seed,
                "train.device": run.device, **({"train.k": run.n_clusters} if run.n_clusters else {}),
                **{knob_key(run.method, name): value
                   for name, value in {**run.trainer.to_dict(), **run.params.to_dict()}.items()}}
    for key, value in settings.items():
        common.restore(key, value)


def settings_ui(data: str, n_classes: int | None, shape: tuple[int, int, int]) -> RunConfig:
    """Every widget of the left column (for images of ``shape``); returns the run configuration they describe."""
    method = method_ui()
    st.caption(_method_blurb(method))
    preset = preset_ui(method, data)
    base = RunConfig.build(method, data, preset=preset)  # the values the widgets start from
    groups = group_knobs(method)
    overrides = {}

    def draw(knobs):
        for knob in knobs:
            source = base.trainer if knob.name in base.trainer.field_names() else base.params
            overrides[knob.name] = knob_ui(knob, getattr(source, knob.name), knob_key(method, knob.name))

    if groups["weights"]:
        st.markdown("**Loss weights and thresholds**")
        draw(groups["weights"])
    st.markdown("**Training**")
    k_default = n_classes or 10
    n_clusters = common.remember(st.slider, "train.k", k_default, label="K — clusters", min_value=2,
                                 max_value=max(50, k_default), help="number of clusters (default: the number "
                                                                    "of classes)")
    draw(groups["training"])
    seed = common.remember(st.number_input, "train.seed", 0, label="seed", min_value=0, max_value=2**31 - 1,
                           help="same seed, same data, same settings → the same run")
    device = common.remember(st.selectbox, "train.device", "auto", label="device", options=device_options(),
                             help="auto picks a CUDA GPU, then Apple's MPS, then the CPU")
    with st.expander("Advanced"):
        draw(groups["advanced"])
        config = RunConfig.build(method, data, int(seed), preset, overrides, device=device,
                                 n_clusters=int(n_clusters))
        weights = init_weights_ui(config, shape) if "pretrain" in get_method(method).phases else None
    return config if weights is None else dataclasses.replace(config, init_weights=weights)


def init_weights_ui(config: RunConfig, shape: tuple[int, int, int]) -> str | None:
    """An uploaded autoencoder state dict that replaces pretraining: its path in the user cache (kept under its
    content hash), or None. A file that does not fit the method's autoencoder is refused and nothing is written."""
    uploaded = st.file_uploader("Start from an imported autoencoder (a PyTorch state dict, .pt)", type=["pt", "pth"],
                                key=f"train.{config.method}.init_weights",
                                help="replaces pretraining: the run starts at the cluster initialisation on its "
                                     "codes. Its own names, a run's model, or a layout the method declares "
                                     "(e.g. the official DCSS MNIST autoencoder)")
    if uploaded is None:
        return None
    try:
        path, sentence = accept_weights(uploaded.name, uploaded.getvalue(), config, shape)
    except init_weights.WeightsError as err:
        st.error(f"{err} Nothing was saved; the run pretrains as usual.")
        return None
    st.caption(sentence)
    return path


def accept_weights(filename: str, content: bytes, config: RunConfig, shape: tuple[int, int, int]) -> tuple[str, str]:
    """Check uploaded weights against the configured method's autoencoder and keep them in the user cache;
    returns (their path, a sentence saying how they were read). Raises ``WeightsError``, writing nothing."""
    method = get_method(config.method)(config.params, config.n_clusters, config.seed)
    layout = init_weights.check(content, filename, method, shape)
    path = init_weights.save_upload(content, cache_dir() / "weights")
    return str(path), f"{filename}, read as {layout}: the run skips pretraining and starts from these weights."


def device_options() -> list[str]:
    """``auto``, ``cpu`` and whatever accelerators torch sees here."""
    options = ["auto", "cpu"]
    if torch.cuda.is_available():
        options += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        options.append("mps")
    return options


def _method_blurb(method: str) -> str:
    """The first line of the method module's docstring (which names the paper)."""
    method_cls = get_method(method)
    doc = (inspect.getmodule(method_cls).__doc__ or "").strip()
    first = doc.splitlines()[0] if doc else method_cls.title
    return re.sub(r",?\s*spec ``[^`]*``\.?$", "", first)  # the spec file is for developers, not users


# -- draw -----------------------------------------------------------------------------------------
def progress_text(progress: RunProgress) -> str:
    """"cluster · epoch 20/36 · batch 3/8 · ETA ≤ 0:42" (the ETA is an upper bound: methods may converge early)."""
    parts = [progress.phase, f"epoch {progress.epoch}/{progress.total_epochs or '?'}"]
    if progress.active and progress.batch is not None and progress.batches:
        parts.append(f"batch {progress.batch + 1}/{progress.batches}")
    if progress.active:
        parts.append(f"ETA ≤ {common.format_duration(progress.eta_seconds)}")
    else:
        parts.append(f"took {common.format_duration(progress.elapsed_seconds)}")
    return " · ".join(parts)


def live_figures(progress: RunProgress, store: RunStore) -> dict[str, object]:
    """The live panel's charts, built from what the run directory holds now: loss, scores, sizes, and
    the method's own diagnostics (None when it has none, or none recorded yet)."""
    slots = None
    if progress.sizes is not None:
        snapshot = store.load_snapshot(store.snapshot_epochs()[-1])
        truth = store.load_snapshot_indices().get("labels")
        slots = colour_slots(truth, snapshot.get("labels"), len(progress.sizes))
    panels = charts.diagnostic_panels(progress.metrics, get_method(store.read_config()["method"]).diagnostics)
    return {"loss": charts.loss_figure(progress.metrics), "scores": charts.scores_figure(progress.metrics),
            "sizes": charts.sizes_figure(progress.sizes, slots),
            "diagnostics": charts.panels_figure(panels, "") if panels else None}


def throttled_figures(progress: RunProgress, store: RunStore, now: float | None = None) -> dict[str, object]:
    """``live_figures``, rebuilt only when new epochs arrived and ``CHART_INTERVAL_S`` has passed.

    In between, the same figures are drawn again, which the browser does not redraw. A run that
    ended gets its final figures at once.
    """
    now = time.monotonic() if now is None else now
    key = f"live.figures.{store.id}"
    cached = st.session_state.get(key)
    rows = len(progress.metrics)
    if (cached is None or cached["state"] != progress.state
            or (cached["rows"] != rows and now - cached["built"] >= CHART_INTERVAL_S)):
        cached = {"rows": rows, "state": progress.state, "built": now, "figures": live_figures(progress, store)}
        st.session_state[key] = cached
    return cached["figures"]


def draw_scores(metrics) -> None:
    """The newest ACC, NMI, ARI (with their change since the epoch before) and the label changes."""
    columns = st.columns(4)
    last = metrics.iloc[-1] if len(metrics) else {}
    before = metrics.iloc[-2] if len(metrics) > 1 else {}
    for column, (key, name) in zip(columns, charts.SCORES.items()):
        value = last.get(key, float("nan")) if len(metrics) else float("nan")
        previous = before.get(key, float("nan")) if len(before) else float("nan")
        delta = None if not (value == value and previous == previous) else f"{value - previous:+.3f}"
        column.metric(name, "—" if value != value else f"{value:.3f}", delta)
    changed = last.get("changed", float("nan")) if len(metrics) else float("nan")
    columns[3].metric("labels changed", "—" if changed != changed else f"{changed:.1%}")


def draw_live(store: RunStore) -> RunProgress:
    """The body of the live panel: read the run, draw progress, scores and charts; returns what it read."""
    progress = run_progress(store)
    config = store.read_config()
    header, badge = st.columns([5, 1], vertical_alignment="center")
    header.markdown(f"**{get_method(config['method']).title}** on **{common.data_label(str(config.get('data')))}** "
                    f"· `{store.id}`")
    with badge:
        common.state_badge(progress.state)
    st.progress(progress.fraction, text=progress_text(progress))
    if progress.stop_requested:
        st.info("Stopping after the current batch (a checkpoint is written first)…")
    if progress.state in ("failed", "died"):
        st.error(f"The run {('failed: ' + progress.reason) if progress.state == 'failed' else 'process died'}"
                 f"{'' if progress.state == 'failed' else ': ' + progress.reason}.")
        tail = log_tail(store)
        if tail:
            with st.expander("What the training process wrote last"):
                st.code(tail, language=None)
    elif progress.state == "stopped":
        st.warning(f"Stopped at epoch {progress.epoch}: {progress.reason}. The last checkpoint is kept.")
    elif progress.state == "finished":
        st.success(f"Finished: {progress.reason}. Open **Explore** to watch the latent space evolve.")
    draw_scores(progress.metrics)
    figures = throttled_figures(progress, store)
    left, right = st.columns(2)
    left.plotly_chart(figures["loss"], key="live.loss")
    right.plotly_chart(figures["scores"], key="live.scores")
    method_cls = get_method(config["method"])
    for warning in [collapse_warning(progress.sizes, method_cls.known_collapse), *method_cls.warnings(progress.metrics)]:
        if warning:
            st.warning(warning)
    st.plotly_chart(figures["sizes"], key="live.sizes")
    if figures["diagnostics"] is not None:
        st.markdown(f"**What {get_method(config['method']).title} reports per epoch**")
        st.plotly_chart(figures["diagnostics"], key="live.diagnostics")
    return progress


def collapse_warning(sizes, known: str = "") -> str | None:
    """A sentence when clusters are emptied or one holds more than ``COLLAPSE_SHARE`` × its balanced share;
    ``known`` is what the method is known to do then (``Method.known_collapse``), said instead of general advice."""
    if sizes is None or not len(sizes) or not sizes.sum():
        return None
    share, empty = largest_share(sizes), int((sizes == 0).sum())
    parts = [f"cluster {int(sizes.argmax())} holds {share:.1f}× its balanced share"] if share > COLLAPSE_SHARE else []
    parts += [f"{empty} cluster{'s are' if empty > 1 else ' is'} empty"] if empty else []
    if not parts:
        return None
    return ("Collapse warning: " + " and ".join(parts) + ". " + (known or "A loss without a balance term can merge "
            "clusters; a better start (longer pretraining) or a smaller learning rate may help."))


def render() -> None:
    """The page: settings and Start/Stop on the left, the followed run's live panel on the right."""
    st.title("Train")
    data = common.chosen_data()
    try:
        dataset = common.load_data(data)
    except DataError as err:
        st.error(f"The chosen data set cannot be loaded: {err} Pick another one on the Data page.")
        return
    store = common.attached_run()
    settings, live = st.columns([1, 2.6], gap="large")
    with settings:
        st.markdown(f"Data: **{common.data_label(data)}** · {len(dataset):,} images "
                    f"({dataset.shape[1]}×{dataset.shape[2]})")
        actions = st.container()  # Start/Stop above the long list of sliders, filled once they are read
        try:
            config = settings_ui(data, dataset.n_classes, dataset.shape)
        except ValueError as err:
            st.error(f"These settings cannot be used: {err}")
            return
        st.session_state[common.TRAIN_CONFIG] = config.to_dict()
        running = store is not None and run_progress(store).active
        start_col, stop_col = actions.columns(2)
        if start_col.button("Start", type="primary", disabled=running, key="train.start", width="stretch",
                            help="a run is in progress: stop it first" if running else "train in a separate process"):
            new = start_run(config, common.runs_dir())
            common.attach(new.id)
            st.rerun()
        if stop_col.button("Stop", disabled=not running, key="train.stop", width="stretch",
                           help="finish the current batch, checkpoint, stop"):
            stop_run(store)
            st.rerun()
        with actions:
            draw_demo_button(config.method, running)
    with live:
        if store is None:
            st.info("Choose the settings and press **Start**. Training runs in its own process: reloading "
                    "this page or closing the browser does not stop it.")
        else:
            live_panel(store, running)
        draw_how_it_works(config, expanded=store is None or not running)


def symbol_lines(method_cls, params) -> list[str]:
    """"$\\alpha$ → slider **alpha** = 1": one entry per symbol of the objective and the slider setting it."""
    lines = []
    for symbol, name in method_cls.symbols.items():
        value = getattr(params, name)
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        lines.append(f"${symbol}$ → slider **{name}** = {shown}")
    return lines


def draw_how_it_works(config: RunConfig, expanded: bool = True) -> None:
    """The chosen method explained: its objective, which slider sets which symbol, what it does and what the
    live panels will show, and its loss-response panels, redrawn as the sliders move."""
    method_cls = get_method(config.method)
    with st.expander(f"How {method_cls.title} works", expanded=expanded):
        if method_cls.objective:
            st.latex(method_cls.objective)
        if method_cls.symbols:
            st.markdown(" · ".join(symbol_lines(method_cls, config.params)))
        if method_cls.explanation:
            st.markdown(method_cls.explanation)
        if method_cls.demo:
            st.info(method_cls.demo, icon=":material/school:")
        panels = method_cls.loss_curves(config.params)
        if panels:
            st.caption("Computed from the knobs alone, before any training: move a slider on the left and "
                       "the curves follow.")
            st.plotly_chart(charts.panels_figure(panels, ""), key="train.loss_curves")


def draw_demo_button(method: str, running: bool) -> None:
    """The class-demo button; pressing it calls ``start_demo`` before the page is drawn again."""
    title = get_method(method).title
    st.button(f"Class demo: {title}, fast, on {DEMO_DATA}", key="train.demo", disabled=running,
              icon=":material/school:", width="stretch", on_click=start_demo, args=(method,),
              help="a run is in progress: stop it first" if running else
              f"sets {title}'s fast preset on {DEMO_DATA} (seed 0), starts it, and lets Explore follow the "
              "newest epoch as it arrives, with the centroids' trails")


def start_demo(method: str) -> None:
    """Start ``method``'s fast preset on the demo data, show its settings here, and make Explore follow it
    (a button callback: it runs before the widgets whose values it sets are drawn)."""
    config = RunConfig.build(method, DEMO_DATA, 0, "fast")
    restore_settings(config.to_dict())
    run = start_run(config, common.runs_dir())
    common.attach(run.id)
    common.restore(common.FOLLOW, True)
    common.restore(common.TRAILS, True)


def live_panel(store: RunStore, active: bool) -> None:
    """Poll the run directory while the run is active; one full rerun when it ends (to re-enable Start)."""

    @st.fragment(run_every=LIVE_INTERVAL_S if active else None)
    def panel():
        progress = draw_live(store)
        if active and not progress.active:
            st.rerun()

    panel()


if __name__ == "__main__":
    common.run_page(render)
