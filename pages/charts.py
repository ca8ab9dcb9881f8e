"""Plotly figures for the pages: pure functions from plain data to a figure, no Streamlit.

Kept apart from the pages so that tests can build every figure from a run directory and check what
it shows (points, traces, ranges) without a browser.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.embed import EpochView

# Tableau 10, then more distinct hues for K > 10.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#1f77b4", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
           "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31", "#843c39"]
PHASE_SHADES = {"pretrain": "rgba(120, 120, 120, 0.08)", "init": "rgba(0, 0, 0, 0)", "cluster": "rgba(78, 121, 167, 0.07)"}
SCORES = {"acc": "ACC", "nmi": "NMI", "ari": "ARI"}
SMOOTH_TRANSITION = {"duration": 450, "easing": "cubic-in-out"}
SVG_POINT_LIMIT = 5000  # above this, WebGL draws faster but cannot animate between frames

COLOUR_BY = {"cluster": "predicted cluster", "label": "true label", "confidence": "confidence",
             "changed": "changed since the previous frame"}


def colour(slot: int) -> str:
    return PALETTE[int(slot) % len(PALETTE)]


def _base_layout(title: str, height: int = 300, **extra) -> dict:
    layout = dict(title=dict(text=title, font=dict(size=15)), height=height, margin=dict(l=10, r=10, t=40, b=10),
                  legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
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
                                          yaxis=dict(type="log"), xaxis=dict(title=dict(text="epoch"))))


def scores_figure(metrics: pd.DataFrame) -> go.Figure:
    """ACC, NMI and ARI per epoch, and the fraction of samples whose cluster changed."""
    traces = []
    for i, (column, name) in enumerate(SCORES.items()):
        if column in metrics and metrics[column].notna().any():
            rows = metrics[metrics[column].notna()]
            traces.append(_line(rows["epoch"], rows[column], name, PALETTE[i], 2.5, markers=True))
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
    return go.Figure(traces, _base_layout("Cluster sizes", showlegend=False, shapes=shapes, annotations=labels,
                                          xaxis=dict(title=dict(text="cluster"), type="category")))


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


def _categorical(values: np.ndarray, slots: np.ndarray, names: list[str]) -> dict:
    """Marker settings for categories on one trace: a stepped colour scale and a labelled colour bar.

    One trace (not one per category) keeps every point's identity from epoch to epoch, which is
    what lets plotly animate the move and lets a selection name its samples.
    """
    n = len(names)
    scale = []
    for k in range(n):
        scale += [[k / n, colour(slots[k])], [(k + 1) / n, colour(slots[k])]]
    return dict(color=values, colorscale=scale, cmin=-0.5, cmax=n - 0.5,
                colorbar=dict(tickvals=list(range(n)), ticktext=names, thickness=12, len=0.9, title=None))


def scatter_figure(view: EpochView, colour_by: str, slots: np.ndarray, class_names: list[str],
                   ranges: tuple[list[float], list[float]] | None = None, revision: str = "") -> go.Figure:
    """The epoch's 2-D picture: one point per sample, black × per centroid.

    Parameters
    ----------
    view : the frame and its samples' labels.
    colour_by : ``cluster``, ``label``, ``confidence`` or ``changed`` (falls back to a single colour
        when that information does not exist yet, e.g. clusters during pretraining).
    slots : colour slot of each cluster (its matched class), from ``core.embed.colour_slots``.
    class_names : names of the true classes.
    ranges : fixed axis ranges (see ``frame_ranges``).
    revision : plotly ``uirevision``; zoom and selection survive while it stays the same.
    """
    xy = view.frame.xy
    n = len(xy)
    clusters = view.clusters if view.clusters is not None else np.full(n, -1)
    labels = view.true_labels if view.true_labels is not None else np.full(n, -1)
    confidence = view.confidence if view.confidence is not None else np.full(n, np.nan)
    marker = dict(size=5 if n <= 3000 else 4, opacity=0.85, line=dict(width=0))
    if colour_by == "cluster" and view.clusters is not None:
        marker.update(_categorical(clusters, slots, [f"cluster {k}" for k in range(len(slots))]))
    elif colour_by == "label" and view.true_labels is not None:
        names = [class_names[k] if k < len(class_names) else str(k) for k in range(int(labels.max()) + 1)]
        marker.update(_categorical(labels, np.arange(len(names)), names))
    elif colour_by == "confidence" and view.confidence is not None:
        marker.update(color=confidence, colorscale="Viridis", cmin=0.0, cmax=1.0,
                      colorbar=dict(title="confidence", thickness=12, len=0.9))
    elif colour_by == "changed" and view.changed is not None:
        marker.update(color=np.where(view.changed, "#e15759", "#c8c8c8"))
    else:
        marker.update(color="#4e79a7")
    trace_type = go.Scatter if n <= SVG_POINT_LIMIT else go.Scattergl
    customdata = np.stack([view.sample_index, clusters, labels, np.nan_to_num(confidence, nan=-1)], axis=1)
    figure = go.Figure(trace_type(
        x=xy[:, 0], y=xy[:, 1], mode="markers", marker=marker, customdata=customdata, name="samples",
        hovertemplate="sample %{customdata[0]}<br>cluster %{customdata[1]} · label %{customdata[2]}"
                      "<br>confidence %{customdata[3]:.2f}<extra></extra>"))
    centroids = view.frame.centroids
    # The centroid trace is always there (empty before init) so that traces keep their places.
    figure.add_trace(go.Scatter(
        x=[] if centroids is None else centroids[:, 0], y=[] if centroids is None else centroids[:, 1],
        mode="markers", name="centroids",
        marker=dict(symbol="x", size=15, color="black", line=dict(width=1.5, color="white")),
        hovertemplate="centroid of cluster %{pointNumber}<extra></extra>"))
    layout = _base_layout("", height=560, showlegend=False, dragmode="lasso", uirevision=revision,
                          transition=SMOOTH_TRANSITION, plot_bgcolor="white")
    layout["margin"] = dict(l=10, r=10, t=10, b=10)
    figure.update_layout(**layout)
    figure.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, title=None,
                        range=None if ranges is None else ranges[0])
    figure.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, title=None, scaleanchor="x",
                        range=None if ranges is None else ranges[1])
    return figure


def confusion_figure(table: np.ndarray, classes: list[str], clusters: list[int]) -> go.Figure:
    """Counts of (true class, cluster), clusters reordered to face their matched classes."""
    figure = go.Figure(go.Heatmap(z=table, x=[f"c{c}" for c in clusters], y=classes, colorscale="Blues",
                                  showscale=False, text=table, texttemplate="%{text}",
                                  hovertemplate="class %{y} · cluster %{x}: %{z}<extra></extra>"))
    figure.update_layout(**_base_layout("Confusion (Hungarian-aligned)", height=420))
    figure.update_yaxes(autorange="reversed", title="true class", type="category")
    figure.update_xaxes(title="cluster", type="category")
    return figure
