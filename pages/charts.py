"""Plotly figures for the pages: pure functions from plain data to a figure, no Streamlit.

Kept apart from the pages so that tests can build every figure from a run directory and check what
it shows (points, traces, ranges) without a browser.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.embed import EpochView, centroid_trails
from core.methods import CurvePanel

# Tableau 10, then more distinct hues for K > 10.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#1f77b4", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
           "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31", "#843c39"]
PHASE_SHADES = {"pretrain": "rgba(120, 120, 120, 0.08)", "init": "rgba(0, 0, 0, 0)",
                "cluster": "rgba(78, 121, 167, 0.07)"}
SCORES = {"acc": "ACC", "nmi": "NMI", "ari": "ARI"}
SVG_POINT_LIMIT = 5000  # above this, WebGL draws faster but cannot animate between frames

COLOUR_BY = {"cluster": "predicted cluster", "label": "true label", "confidence": "confidence",
             "changed": "changed since the previous frame"}


def colour(slot: int) -> str:
    """The palette colour of a slot (a class, or the class a cluster is matched to)."""
    return PALETTE[int(slot) % len(PALETTE)]


def _base_layout(title: str, height: int = 300, **extra) -> dict:
    layout = dict(title=dict(text=title, font=dict(size=15)), height=height, margin=dict(l=10, r=10, t=40, b=10),
                  legend=dict(orientation="h", yanchor="top", y=-0.3, xanchor="left", x=0.0))
    layout.update(extra)
    return layout


def _phase_bands(metrics: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """Light background bands (shapes) and their labels (annotations), one per phase.

    Built as plain layout entries: ``add_vrect`` validated each one and took 10 ms, a third of a
    live figure's cost, paid again on every refresh.
    """
    if "phase" not in metrics or metrics.empty:
        return [], []
    epochs, phases = metrics["epoch"].to_numpy(), metrics["phase"].astype(str).to_numpy()
    starts = [0] + [i for i in range(1, len(phases)) if phases[i] != phases[i - 1]]
    shapes, labels = [], []
    for n, first in enumerate(starts):
        last = (starts[n + 1] if n + 1 < len(starts) else len(phases)) - 1
        x0, x1 = float(epochs[first]) - 0.5, float(epochs[last]) + 0.5
        if phases[first] == "init":  # one epoch: a line, labelled by the phases around it
            shapes.append(dict(type="line", xref="x", yref="paper", x0=x1, x1=x1, y0=0, y1=1,
                               line=dict(width=1, dash="dot", color="#999"), layer="below"))
            continue
        shapes.append(dict(type="rect", xref="x", yref="paper", x0=x0, x1=x1, y0=0, y1=1, line=dict(width=0),
                           fillcolor=PHASE_SHADES.get(phases[first], "rgba(0,0,0,0)"), layer="below"))
        labels.append(dict(x=x0, y=1, xref="x", yref="paper", text=phases[first], showarrow=False, xanchor="left",
                           yanchor="top", font=dict(size=10, color="#777")))
    return shapes, labels


def _line(x, y, name: str, colour: str, width: float, markers: bool = False, dash: str | None = None) -> dict:
    trace = dict(type="scatter", x=np.asarray(x), y=np.asarray(y, dtype=float), name=name,
                 mode="lines+markers" if markers else "lines", line=dict(width=width, color=colour))
    if markers:
        trace["marker"] = dict(size=4)
    if dash:
        trace["line"]["dash"] = dash
    return trace


def loss_figure(metrics: pd.DataFrame) -> go.Figure:
    """The total loss and each named loss term per epoch (log scale: terms differ by decades)."""
    traces = []
    if not metrics.empty and "loss" in metrics:
        traces.append(_line(metrics["epoch"], metrics["loss"], "total", "#333", 3, markers=True))
        for i, column in enumerate(c for c in metrics.columns if c.startswith("loss_")):
            traces.append(_line(metrics["epoch"], metrics[column], column[5:], PALETTE[i % len(PALETTE)], 2))
    shapes, labels = _phase_bands(metrics)
    return go.Figure(traces, _base_layout("Loss per term", shapes=shapes, annotations=labels,
                                          yaxis=dict(type="log", tickformat=".2g"),
                                          xaxis=dict(title=dict(text="epoch"))))


def scores_figure(metrics: pd.DataFrame) -> go.Figure:
    """ACC, NMI and ARI per epoch, and the fraction of samples whose cluster changed.

    A method's other readouts (``acc_<readout>``, e.g. DSCDAN's argmax P beside k-means on Y) are
    dashed, in the colour of their score.
    """
    traces = []
    for i, (column, name) in enumerate(SCORES.items()):
        if column in metrics and metrics[column].notna().any():
            rows = metrics[metrics[column].notna()]
            traces.append(_line(rows["epoch"], rows[column], name, PALETTE[i], 2.5, markers=True))
        for other in (c for c in metrics.columns if c.startswith(f"{column}_") and metrics[c].notna().any()):
            rows = metrics[metrics[other].notna()]
            traces.append(_line(rows["epoch"], rows[other], f"{name} ({other[len(column) + 1:]})", PALETTE[i], 1.5,
                                dash="dash"))
    if "changed" in metrics and metrics["changed"].notna().any():
        rows = metrics[metrics["changed"].notna()]
        traces.append(_line(rows["epoch"], rows["changed"], "labels changed", "#888", 1.5, dash="dot"))
    shapes, labels = _phase_bands(metrics)
    return go.Figure(traces, _base_layout("ACC · NMI · ARI", shapes=shapes, annotations=labels,
                                          yaxis=dict(range=[0, 1.02]), xaxis=dict(title=dict(text="epoch"))))


def sizes_figure(sizes: np.ndarray | None, slots: np.ndarray | None = None) -> go.Figure:
    """Samples per cluster at the newest epoch, with the size a perfectly balanced split would give."""
    traces, shapes, labels = [], [], []
    if sizes is not None and len(sizes):
        slots = np.arange(len(sizes)) if slots is None else slots
        traces.append(dict(type="bar", x=[str(k) for k in range(len(sizes))], y=np.asarray(sizes), name="size",
                           marker=dict(color=[colour(s) for s in slots]),
                           hovertemplate="cluster %{x}: %{y} samples<extra></extra>"))
        balanced = float(np.sum(sizes)) / len(sizes)
        shapes.append(dict(type="line", xref="paper", yref="y", x0=0, x1=1, y0=balanced, y1=balanced,
                           line=dict(dash="dot", color="#888", width=1.5)))
        labels.append(dict(x=1, y=balanced, xref="paper", yref="y", text="balanced", showarrow=False,
                           xanchor="right", yanchor="bottom", font=dict(size=10, color="#777")))
    return go.Figure(traces, _base_layout("Cluster sizes", height=240, showlegend=False, shapes=shapes,
                                          annotations=labels, xaxis=dict(title=dict(text="cluster"), type="category")))


def diagnostic_panels(metrics: pd.DataFrame, diagnostics: dict[str, tuple[str, ...]]) -> list[CurvePanel]:
    """A method's per-epoch scalars (``Method.diagnostics``: title → columns) as panels over the epochs;
    panels with nothing recorded yet are left out."""
    panels = []
    for title, columns in diagnostics.items():
        lines = {}
        for column in columns:
            if column in metrics and metrics[column].notna().any():
                rows = metrics[metrics[column].notna()]
                lines[column.replace("_", " ")] = (rows["epoch"].to_numpy(), rows[column].to_numpy(dtype=float))
        if lines:
            panels.append(CurvePanel(title, "epoch", lines))
    return panels


def panels_figure(panels: list[CurvePanel], title: str, columns: int = 3, height: int = 260) -> go.Figure:
    """Small multiples: one subplot per panel, its lines, and its marks as labelled dotted lines.

    A panel of several lines gets a legend of its own under its x axis (a figure-wide legend would sit
    far from most panels, one inside a panel would hide its lines); a single line is named by the title.
    The layout is written out as plain dicts and validated once: plotly's ``make_subplots`` and
    ``add_vline`` took 130 ms for DECS' three panels, paid again on every rerun of the Train page.
    """
    columns = max(1, min(columns, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    legend_px = 20 * max(len(p.lines) for p in panels) + 45 if any(len(p.lines) > 1 for p in panels) else 0
    total_px = rows * (height + legend_px) + 60
    gap_x, gap_y = 0.08, (legend_px + 90) / total_px if rows > 1 else 0.0
    width, tall = (1 - gap_x * (columns - 1)) / columns, (1 - gap_y * (rows - 1)) / rows
    colours = iter(PALETTE * (1 + sum(len(p.lines) for p in panels) // len(PALETTE)))  # no colour twice
    layout = _base_layout(title, height=total_px)
    layout["margin"]["b"] = legend_px + 10
    traces, shapes, annotations = [], [], []
    for n, panel in enumerate(panels):
        x_name, y_name = f"x{n + 1}" if n else "x", f"y{n + 1}" if n else "y"
        left, top = (n % columns) * (width + gap_x), 1 - (n // columns) * (tall + gap_y)
        layout[f"xaxis{n + 1 if n else ''}"] = dict(domain=[left, left + width], anchor=y_name,
                                                    title=dict(text=panel.x_label, font=dict(size=11), standoff=4))
        layout[f"yaxis{n + 1 if n else ''}"] = dict(domain=[top - tall, top], anchor=x_name)
        annotations.append(dict(text=panel.title, x=left + width / 2, y=top, xref="paper", yref="paper",
                                xanchor="center", yanchor="bottom", showarrow=False, font=dict(size=12)))
        legend = f"legend{n + 2}" if len(panel.lines) > 1 else None
        if legend:
            layout[legend] = dict(x=left, y=top - tall - 50 / total_px, xanchor="left", yanchor="top",
                                  font=dict(size=10))
        for name, (x, y) in panel.lines.items():
            traces.append(dict(type="scatter", x=np.asarray(x), y=np.asarray(y, dtype=float), name=name, mode="lines",
                               line=dict(width=2, color=next(colours)), xaxis=x_name, yaxis=y_name,
                               showlegend=legend is not None, legend=legend or "legend"))
        for label, x in panel.marks.items():
            shapes.append(dict(type="line", xref=x_name, yref=f"{y_name} domain", x0=x, x1=x, y0=0, y1=1,
                               line=dict(dash="dot", color="#888", width=1.5)))
            annotations.append(dict(text=label, x=x, y=1, xref=x_name, yref=f"{y_name} domain", xanchor="left",
                                    yanchor="top", showarrow=False, font=dict(size=10, color="#666")))
    layout.update(shapes=shapes, annotations=annotations)
    return go.Figure(traces, layout)


def overlay_figure(curves: dict[str, pd.DataFrame], column: str, title: str) -> go.Figure:
    """One line per run: ``column`` against epoch."""
    figure = go.Figure()
    for i, (name, metrics) in enumerate(curves.items()):
        if column in metrics and metrics[column].notna().any():
            rows = metrics[metrics[column].notna()]
            figure.add_trace(go.Scatter(x=rows["epoch"], y=rows[column], name=name, mode="lines",
                                        line=dict(width=2, color=PALETTE[i % len(PALETTE)])))
    figure.update_layout(**_base_layout(title, height=380, legend=dict(orientation="v")))
    if column.startswith("loss"):
        figure.update_yaxes(type="log")
    figure.update_xaxes(title="epoch")
    return figure


def frame_ranges(frames: list[np.ndarray], margin: float = 0.05) -> tuple[list[float], list[float]]:
    """Axis ranges holding every given (S, 2) frame, so the camera stays still while points move."""
    points = np.concatenate([f for f in frames if f is not None and len(f)])
    low, high = points.min(0), points.max(0)
    pad = (high - low) * margin + 1e-9
    return [float(low[0] - pad[0]), float(high[0] + pad[0])], [float(low[1] - pad[1]), float(high[1] + pad[1])]


NO_CLUSTER = "#c8c8c8"  # points before the clusters exist (pretraining frames of an animation)
REPLAY_FRAME_MS = 700


def _stepped_scale(colours: list[str]) -> list[list]:
    """A colour scale that is flat on each integer category 0 … n-1 (with cmin=-0.5, cmax=n-0.5)."""
    n = len(colours)
    scale = []
    for k, value in enumerate(colours):
        scale += [[k / n, value], [(k + 1) / n, value]]
    return scale


def colour_scheme(colour_by: str, slots: np.ndarray, class_names: list[str], views: list[EpochView]) -> dict:
    """The marker settings every frame shares for ``colour_by``, and whether it applies to these views.

    Categories are integer codes on one stepped colour scale (one trace, not one per category:
    that keeps every point's identity from epoch to epoch, which lets plotly animate the move and
    lets a selection name its samples). For clusters, code K stands for "no cluster yet".
    """
    if colour_by == "cluster" and any(v.clusters is not None for v in views):
        names = [f"cluster {k}" for k in range(len(slots))] + ["none yet"]
        colours = [colour(s) for s in slots] + [NO_CLUSTER]
    elif colour_by == "label" and views and views[0].true_labels is not None:
        n = int(views[0].true_labels.max()) + 1
        names = [class_names[k] if k < len(class_names) else str(k) for k in range(n)]
        colours = [colour(k) for k in range(n)]
    elif colour_by == "confidence" and any(v.confidence is not None for v in views):
        return dict(colorscale="Viridis", cmin=0.0, cmax=1.0, colorbar=dict(title="confidence", thickness=12, len=0.9))
    elif colour_by == "changed" and any(v.changed is not None for v in views):
        names, colours = ["same cluster", "changed"], ["#c8c8c8", "#e15759"]
    else:
        return dict(colorscale=[[0, "#4e79a7"], [1, "#4e79a7"]], cmin=0, cmax=1, showscale=False)
    n = len(names)
    return dict(colorscale=_stepped_scale(colours), cmin=-0.5, cmax=n - 0.5,
                colorbar=dict(tickvals=list(range(n)), ticktext=names, thickness=12, len=0.9, title=None))


def colour_values(view: EpochView, colour_by: str, n_clusters: int) -> np.ndarray:
    """Per-point colour codes (or confidences) of one epoch for ``colour_scheme``."""
    n = len(view.frame.xy)
    if colour_by == "cluster":
        return np.full(n, n_clusters, np.int32) if view.clusters is None else view.clusters.astype(np.int32)
    if colour_by == "label" and view.true_labels is not None:
        return view.true_labels.astype(np.int32)
    if colour_by == "confidence":
        return np.zeros(n, np.float32) if view.confidence is None else view.confidence.astype(np.float32)
    if colour_by == "changed":
        return np.zeros(n, np.int32) if view.changed is None else view.changed.astype(np.int32)
    return np.zeros(n, np.int32)


def _frame_title(view: EpochView, phases: dict[int, str]) -> dict:
    text = f"epoch {view.frame.epoch}" + (f" · {phases[view.frame.epoch]}" if view.frame.epoch in phases else "")
    return dict(text=text, x=0.01, y=0.99, xref="paper", yref="paper", xanchor="left", yanchor="top",
                showarrow=False, font=dict(size=14, color="#555"))


def _frame_traces(view: EpochView, colour_by: str, n_clusters: int) -> list[dict]:
    """What changes from epoch to epoch: positions, colours, hover text, centroids."""
    xy, centroids = view.frame.xy, view.frame.centroids
    hover = "sample %{customdata[0]} · label %{customdata[1]}"
    if view.clusters is not None:
        hover += {"cluster": "<br>cluster %{marker.color}", "confidence": "<br>confidence %{marker.color:.2f}",
                  "changed": "<br>changed since the previous frame: %{marker.color}"}.get(colour_by, "")
    samples = dict(type="scatter", x=xy[:, 0], y=xy[:, 1], hovertemplate=hover + "<extra></extra>",
                   marker=dict(color=colour_values(view, colour_by, n_clusters)))
    return [samples, dict(type="scatter", x=np.empty(0) if centroids is None else centroids[:, 0],
                          y=np.empty(0) if centroids is None else centroids[:, 1])]


TRAIL_OPACITY = 0.45


def trail_traces(views: list[EpochView], upto: int, n_clusters: int) -> list[dict]:
    """One line per centroid through its positions in ``views`` up to epoch ``upto`` (empty before init)."""
    paths = centroid_trails([v.frame for v in views], upto)
    return [dict(type="scatter", x=np.empty(0) if paths is None else paths[k, :, 0],
                 y=np.empty(0) if paths is None else paths[k, :, 1]) for k in range(n_clusters)]


def _trail_style(traces: list[dict], slots: np.ndarray) -> list[dict]:
    """The trails' fixed look: faint lines in each cluster's colour, no hover, no selection."""
    for k, trace in enumerate(traces):
        trace.update(mode="lines", name=f"trail {k}", hoverinfo="skip", opacity=TRAIL_OPACITY,
                     line=dict(color=colour(slots[k]), width=2))
    return traces


def scatter_figure(view: EpochView, colour_by: str, slots: np.ndarray, class_names: list[str],
                   ranges: tuple[list[float], list[float]] | None = None, revision: str = "",
                   animation: list[EpochView] = (), phases: dict[int, str] | None = None,
                   trails: bool = False) -> go.Figure:
    """The epoch's 2-D picture: one point per sample, black × per centroid, and a Replay of all epochs.

    Parameters
    ----------
    view : the frame and its samples' labels (what is shown at rest).
    colour_by : ``cluster``, ``label``, ``confidence`` or ``changed``; one colour when the run has
        no such information (e.g. clusters during pretraining).
    slots : colour slot of each cluster (its matched class), from ``core.embed.colour_slots``.
    class_names : names of the true classes.
    ranges : fixed axis ranges (see ``frame_ranges``), so the camera stays still during a replay.
    revision : plotly ``uirevision``; zoom survives while it stays the same.
    animation : the epochs a Replay steps through (plotly frames, played in the browser: points
        glide from epoch to epoch without a round trip to the server).
    phases : phase of each epoch, for the frame titles.
    trails : draw each centroid's path over the epochs so far (of ``animation``; in every Replay frame, the
        path up to that frame) as a faint line in its cluster's colour, after the samples and the centroids.
    """
    phases = phases or {}
    views = list(animation) or [view]
    scheme = colour_scheme(colour_by, slots, class_names, views + [view])
    n = len(view.frame.xy)
    labels = view.true_labels if view.true_labels is not None else np.full(n, -1)
    base_samples, base_centroids = _frame_traces(view, colour_by, len(slots))
    base_samples.update(
        type="scatter" if n <= SVG_POINT_LIMIT else "scattergl", mode="markers", name="samples",
        marker=dict(base_samples["marker"], size=5 if n <= 3000 else 4, opacity=0.85, line=dict(width=0), **scheme),
        customdata=np.stack([view.sample_index, labels], axis=1).astype(np.int32),
        unselected=dict(marker=dict(opacity=0.25)))
    # The centroid trace is always there (empty before init) so that traces keep their places.
    base_centroids.update(mode="markers", name="centroids", hovertemplate="centroid %{pointNumber}<extra></extra>",
                          marker=dict(symbol="x", size=15, color="black", line=dict(width=1.5, color="white")),
                          unselected=dict(marker=dict(opacity=1.0)), selected=dict(marker=dict(opacity=1.0)))
    layout = _base_layout("", height=580, showlegend=False, dragmode="lasso", uirevision=revision,
                          plot_bgcolor="white", annotations=[_frame_title(view, phases)])
    layout["margin"] = dict(l=10, r=10, t=10, b=10)
    axis = dict(showticklabels=False, showgrid=False, zeroline=False, title=None)
    layout["xaxis"] = dict(axis, range=None if ranges is None else ranges[0])
    layout["yaxis"] = dict(axis, scaleanchor="x", range=None if ranges is None else ranges[1])
    trail_data = _trail_style(trail_traces(views, view.frame.epoch, len(slots)), slots) if trails else []
    frames = []
    if len(animation) > 1:
        frames = [dict(name=str(v.frame.epoch),
                       data=_frame_traces(v, colour_by, len(slots))
                       + (trail_traces(animation, v.frame.epoch, len(slots)) if trails else []),
                       layout=dict(annotations=[_frame_title(v, phases)])) for v in animation]
        play = dict(frame=dict(duration=REPLAY_FRAME_MS, redraw=True), fromcurrent=False, mode="immediate",
                    transition=dict(duration=int(REPLAY_FRAME_MS * 0.8), easing="cubic-in-out"))
        pause = dict(frame=dict(duration=0, redraw=False), mode="immediate", transition=dict(duration=0))
        layout["updatemenus"] = [dict(type="buttons", direction="left", x=0.01, y=0.0, xanchor="left", yanchor="bottom",
                                      pad=dict(l=4, b=4), showactive=False,
                                      buttons=[dict(label="▶ Replay epochs", method="animate", args=[None, play]),
                                               dict(label="⏸", method="animate", args=[[None], pause])])]
    return go.Figure(data=[base_samples, base_centroids, *trail_data], layout=layout, frames=frames)


def confusion_figure(table: np.ndarray, classes: list[str], clusters: list[int]) -> go.Figure:
    """Counts of (true class, cluster), clusters reordered to face their matched classes."""
    figure = go.Figure(go.Heatmap(z=table, x=[f"c{c}" for c in clusters], y=classes, colorscale="Blues",
                                  showscale=False, text=table, texttemplate="%{text}",
                                  hovertemplate="class %{y} · cluster %{x}: %{z}<extra></extra>"))
    figure.update_layout(**_base_layout("Confusion (Hungarian-aligned)", height=420))
    figure.update_yaxes(autorange="reversed", title="true class", type="category")
    figure.update_xaxes(title="cluster", type="category")
    return figure


# -- sweeps ---------------------------------------------------------------------------------------
PENDING_COLOUR, FAILED_COLOUR = "#e6e6e6", "#f4c7c3"  # cells without a finished trial: waiting, or all failed


def knob_value_text(value) -> str:
    """``0.05`` → ``0.05``, ``1.0`` → ``1``, ``200`` → ``200``, ``"tanh"`` → ``tanh``."""
    return f"{value:g}" if isinstance(value, (int, float, np.integer, np.floating)) else str(value)


def sweep_cell_text(cell) -> str:
    """What a cell of the map says: ``0.812 ± 0.013 (3)`` over its finished seeds, then what is still to
    come or failed; ``pending`` or ``failed`` while it has no finished trial."""
    n, pending, failed = int(cell["n"]), int(cell["n_pending"]), int(cell["n_failed"])
    if n:
        lines = [f"{cell['mean']:.3f} ± {cell['sd']:.3f} ({n})" if cell["sd"] == cell["sd"] and n > 1
                 else f"{cell['mean']:.3f} ({n})"]
    else:
        lines = ["pending" if pending else "failed" if failed else "no score"]
    if n and pending:
        lines.append(f"{pending} pending")
    if failed and (n or pending):
        lines.append(f"{failed} failed")
    return "<br>".join(lines)


def _cell_hover(cell, knobs: list[str], labels: dict[str, str], metric: str) -> str:
    lines = [" · ".join(f"{labels.get(k, k)} = {knob_value_text(cell[k])}" for k in knobs)]
    if int(cell["n"]):
        spread = f" ± {cell['sd']:.3f}" if cell["sd"] == cell["sd"] else ""
        lines.append(f"{metric} {cell['mean']:.3f}{spread} over {int(cell['n'])} seed{'s' * (int(cell['n']) > 1)}")
    if int(cell["n_pending"]):
        lines.append(f"{int(cell['n_pending'])} trial(s) pending")
    reasons = cell.get("reasons") or ""
    if int(cell["n_failed"]):
        lines.append(f"{int(cell['n_failed'])} failed" + (f": {reasons}" if reasons else ""))
    return "<br>".join(lines)


def _sorted_values(cells: pd.DataFrame, knob: str) -> list:
    return sorted(cells[knob].unique())


def sweep_heatmap(cells: pd.DataFrame, x: str, y: str, metric: str, labels: dict[str, str] | None = None) -> go.Figure:
    """Knob ``x`` × knob ``y``; colour and text: each cell's mean score across seeds (``core.sweep.cell_summary``).

    Cells without a finished trial are grey (pending) or pink (every trial failed). A transparent
    marker sits on each cell's centre and carries its hover text (a failed trial's reason) and the
    click: heat maps cannot be selected in plotly, markers can (``customdata``: the cell's row).
    """
    labels = labels or {}
    xs, ys = _sorted_values(cells, x), _sorted_values(cells, y)
    x_text, y_text = [knob_value_text(v) for v in xs], [knob_value_text(v) for v in ys]
    where = {(cx, cy): i for i, (cx, cy) in enumerate(zip(cells[x], cells[y]))}
    shape = (len(ys), len(xs))
    mean, background, text = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, "", dtype=object)
    for row, vy in enumerate(ys):
        for column, vx in enumerate(xs):
            if (vx, vy) not in where:
                continue
            cell = cells.iloc[where[vx, vy]]
            text[row, column] = sweep_cell_text(cell)
            if int(cell["n"]):
                mean[row, column] = cell["mean"]
            else:
                background[row, column] = 0.0 if int(cell["n_pending"]) else 1.0
    grid = dict(x=x_text, y=y_text, xgap=2, ygap=2, hoverinfo="skip", texttemplate="%{text}",
                textfont=dict(size=12))
    traces = [
        dict(type="heatmap", z=background.tolist(), text=text.tolist(), name="waiting", showscale=False, zmin=0, zmax=1,
             colorscale=[[0, PENDING_COLOUR], [0.5, PENDING_COLOUR], [0.5, FAILED_COLOUR], [1, FAILED_COLOUR]],
             textfont=dict(size=12, color="#555"), **{k: v for k, v in grid.items() if k != "textfont"}),
        dict(type="heatmap", z=[[None if v != v else float(v) for v in r] for r in mean], text=text.tolist(),
             name=metric, colorscale="Viridis", colorbar=dict(title=dict(text=f"mean {metric}"), thickness=14),
             **grid),
        dict(type="scatter", x=[knob_value_text(v) for v in cells[x]], y=[knob_value_text(v) for v in cells[y]],
             mode="markers", name="cells", marker=dict(size=24, opacity=0, symbol="square"),
             customdata=list(range(len(cells))), showlegend=False,
             hovertext=[_cell_hover(cells.iloc[i], [x, y], labels, metric) for i in range(len(cells))],
             hovertemplate="%{hovertext}<extra></extra>"),
    ]
    layout = _base_layout(f"Mean {metric} across seeds", height=max(360, 70 * len(ys) + 140), showlegend=False,
                          hoverdistance=-1, clickmode="event+select", dragmode=False)
    layout["xaxis"] = dict(title=dict(text=labels.get(x, x)), type="category", categoryorder="array",
                           categoryarray=x_text, showgrid=False)
    layout["yaxis"] = dict(title=dict(text=labels.get(y, y)), type="category", categoryorder="array",
                           categoryarray=y_text, showgrid=False)
    return go.Figure(traces, layout)


def sweep_line(cells: pd.DataFrame, knob: str, metric: str, labels: dict[str, str] | None = None,
               log: bool = False) -> go.Figure:
    """One knob: the mean score per value with ± sd error bars; values still pending or all failed are
    marked at the foot of the chart. ``customdata``: each point's row in ``cells``."""
    labels = labels or {}
    order = sorted(range(len(cells)), key=lambda i: cells.iloc[i][knob])
    scored = [i for i in order if int(cells.iloc[i]["n"])]
    rows = cells.iloc[scored]
    traces = [dict(type="scatter", x=rows[knob].tolist(), y=rows["mean"].astype(float).tolist(), name=metric,
                   mode="lines+markers+text", text=[f"{m:.3f} ({int(n)})" for m, n in zip(rows["mean"], rows["n"])],
                   textposition="top center", marker=dict(size=9, color=PALETTE[0]), line=dict(color=PALETTE[0]),
                   error_y=dict(type="data", array=rows["sd"].fillna(0).astype(float).tolist(), visible=True),
                   customdata=scored, hovertext=[_cell_hover(rows.iloc[j], [knob], labels, metric)
                                                 for j in range(len(rows))],
                   hovertemplate="%{hovertext}<extra></extra>")]
    marks = [dict(x=cells.iloc[i][knob], y=0, xref="x", yref="paper", yanchor="bottom", showarrow=False,
                  text=sweep_cell_text(cells.iloc[i]), font=dict(size=11, color="#777"),
                  hovertext=_cell_hover(cells.iloc[i], [knob], labels, metric))
             for i in order if not int(cells.iloc[i]["n"])]
    layout = _base_layout(f"Mean {metric} across seeds (± sd)", height=380, showlegend=False, annotations=marks,
                          clickmode="event+select", dragmode=False)
    layout["xaxis"] = dict(title=dict(text=labels.get(knob, knob)), type="log" if log else "-")
    layout["yaxis"] = dict(title=dict(text=metric))
    return go.Figure(traces, layout)


def sweep_parallel(cells: pd.DataFrame, knobs: list[str], metric: str, labels: dict[str, str] | None = None,
                   log: frozenset[str] = frozenset()) -> go.Figure:
    """Three or more knobs: one line per cell with a finished trial through the knobs' axes to its mean
    score, coloured by it (log knobs on log10 axes, labelled with their values)."""
    labels = labels or {}
    rows = cells[cells["n"].astype(int) > 0]
    dimensions = []
    for knob in knobs:
        values = _sorted_values(cells, knob)
        if all(isinstance(v, str) for v in values):  # a choice knob: its choices as ticks 0, 1, …
            codes = {v: i for i, v in enumerate(values)}
            dimensions.append(dict(label=labels.get(knob, knob), values=[codes[v] for v in rows[knob]],
                                   tickvals=list(codes.values()), ticktext=values))
            continue
        scale = np.log10 if knob in log else (lambda v: np.asarray(v, dtype=float))
        dimensions.append(dict(label=labels.get(knob, knob), values=scale(rows[knob].astype(float)).tolist(),
                               tickvals=scale(np.asarray(values, dtype=float)).tolist(),
                               ticktext=[knob_value_text(v) for v in values]))
    mean = rows["mean"].astype(float)
    dimensions.append(dict(label=f"mean {metric}", values=mean.tolist()))
    trace = dict(type="parcoords", dimensions=dimensions,
                 line=dict(color=mean.tolist(), colorscale="Viridis", showscale=True,
                           colorbar=dict(title=dict(text=f"mean {metric}"), thickness=14)))
    pending = int((cells["n"].astype(int) == 0).sum())
    title = f"Mean {metric} across seeds" + (f" · {pending} cell(s) still without a finished trial" if pending else "")
    return go.Figure([trace], _base_layout(title, height=420, margin=dict(l=60, r=40, t=80, b=30)))
