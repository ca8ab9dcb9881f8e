"""The projector: alignment, warm-started frames, the frame schedule, centroids, the background worker."""
from __future__ import annotations

import io
import json
import os
import threading
import time
from unittest import mock

import numpy as np
import pytest
from scipy.spatial import procrustes
from sklearn.manifold import trustworthiness

from core import embed
from core.embed import (BackgroundProjector, align_to, colour_slots, compute_frames, epoch_view, frame_epochs,
                        load_frame, missing_epochs, ready_epochs)


def _rotation(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


# -- alignment ------------------------------------------------------------------------------------
def test_align_to_undoes_rotation_scale_and_shift():
    fixed = np.random.default_rng(0).normal(size=(50, 2))
    moved = 3.0 * fixed @ _rotation(40) + np.array([5.0, -2.0])
    extra = fixed[:3] * 3.0 @ _rotation(40) + np.array([5.0, -2.0])
    aligned, extra_aligned = align_to(moved, fixed, scale=True, extra=extra)
    np.testing.assert_allclose(aligned, fixed, atol=1e-9)
    np.testing.assert_allclose(extra_aligned, fixed[:3], atol=1e-9)


def test_align_to_without_scale_keeps_distances():
    fixed = np.random.default_rng(1).normal(size=(40, 2))
    moved = 2.0 * fixed[:, ::-1]  # swapped axes (a reflection) at twice the size
    aligned, _ = align_to(moved, fixed, scale=False)
    np.testing.assert_allclose(np.linalg.norm(aligned[0] - aligned[1]), np.linalg.norm(moved[0] - moved[1]))
    np.testing.assert_allclose(aligned / 2.0 - aligned.mean(0) / 2.0, fixed - fixed.mean(0), atol=1e-9)


# -- single frames --------------------------------------------------------------------------------
def _blobs(n=300, d=6, k=5, seed=0, spread=0.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 5
    labels = rng.integers(0, k, n)
    return (centres[labels] + spread * rng.normal(size=(n, d))).astype(np.float32), labels, centres.astype(np.float32)


def test_pca_frame_follows_the_previous_one_through_a_sign_flip():
    z, _, centres = _blobs()
    first, _ = embed.project_pca(z, None, centres)
    flipped = z * np.array([-1, 1, 1, 1, 1, 1], dtype=np.float32)  # PCA's axes may flip between epochs
    second, centroids = embed.project_pca(flipped, first, centres)
    np.testing.assert_allclose(second, first, atol=1e-4 * np.abs(first).max())
    assert centroids.shape == (5, 2)


def test_tsne_warm_frame_moves_little_and_keeps_neighbours():
    z, labels, centres = _blobs()
    first, _ = embed.project_tsne(z, None, centres)
    moved = z + 0.05 * np.random.default_rng(2).normal(size=z.shape).astype(np.float32)
    second, centroids = embed.project_tsne(moved, first, centres)
    assert procrustes(first, second)[2] < 0.05  # a cold refit is ~0.07–1; warm frames barely move
    assert trustworthiness(moved, second, n_neighbors=10) >= 0.9
    # each centroid lands among its own cluster's points
    for k, point in enumerate(centroids):
        nearest = np.argsort(np.linalg.norm(second - point, axis=1))[:10]
        assert np.mean(labels[nearest] == k) >= 0.8


def test_tsne_warm_start_uses_the_previous_frame_without_exaggeration():
    z, _, _ = _blobs(n=120)
    previous = np.random.default_rng(3).normal(size=(120, 2)) * 10
    with mock.patch("openTSNE.TSNEEmbedding.optimize", autospec=True,
                    side_effect=lambda self, n_iter, **kw: self) as optimize:
        xy, _ = embed.project_tsne(z, previous, None)
    ((embedding, n_iter), kwargs), = [(c.args, c.kwargs) for c in optimize.call_args_list]
    assert n_iter == embed.TSNE_WARM_ITERATIONS and kwargs["exaggeration"] == 1
    np.testing.assert_allclose(np.asarray(embedding), previous)


def test_umap_gets_the_previous_frame_as_init_and_is_aligned_to_it():
    z, _, centres = _blobs(n=80)
    previous = np.random.default_rng(4).normal(size=(80, 2))
    rotated = 4.0 * previous @ _rotation(70) + 3.0  # what UMAP returns: the same layout, boxed and turned

    class FakeUMAP:
        def __init__(self, **params):
            self.params = params
            FakeUMAP.made = self

        def fit_transform(self, data):
            return rotated

        def transform(self, data):
            return 4.0 * previous[:len(data)] @ _rotation(70) + 3.0

    with mock.patch("umap.UMAP", FakeUMAP):
        xy, centroids = embed.project_umap(z, previous, centres)
    np.testing.assert_allclose(FakeUMAP.made.params["init"], previous)
    assert FakeUMAP.made.params["n_epochs"] == embed.UMAP_WARM_EPOCHS
    np.testing.assert_allclose(xy, previous, atol=1e-9)
    np.testing.assert_allclose(centroids, previous[:5], atol=1e-9)


def test_umap_frames_for_real():  # compiles umap-learn's numba code: 30–80 s on 2 cores
    z, labels, centres = _blobs(n=200)
    first, _ = embed.project_umap(z, None, centres)
    second, centroids = embed.project_umap(z + 0.01, first, centres)
    cold, _ = embed.project_umap(z + 0.01, None, centres, random_state=1)
    # A warm frame keeps the picture: its distance to the previous frame is a small part of what a cold
    # UMAP of the same codes moves (here 0.057 against 0.61, umap-learn 0.5.12).
    assert procrustes(first, second)[2] < 0.25 * procrustes(first, cold)[2]
    assert trustworthiness(z, second, n_neighbors=10) >= 0.9 and centroids.shape == (5, 2)


# -- frames of a run ------------------------------------------------------------------------------
def test_compute_frames_chains_warm_starts_and_caches(synthetic_run):
    done = compute_frames(synthetic_run, "pca")
    assert done == synthetic_run.snapshot_epochs() == ready_epochs(synthetic_run, "pca")
    frames = [load_frame(synthetic_run, "pca", e) for e in done]
    assert frames[0].previous is None and [f.previous for f in frames[1:]] == done[:-1]
    assert frames[0].centroids is None  # pretraining: no clusters yet
    assert all(f.centroids.shape == (10, 2) for f in frames[2:])
    assert compute_frames(synthetic_run, "pca") == []  # nothing left to do


def test_frame_schedule_keeps_phase_starts_and_strides_long_runs(tmp_path):
    from conftest import write_synthetic_run

    store = write_synthetic_run(tmp_path / "long", n_samples=60, pretrain_epochs=30, cluster_epochs=29)
    with mock.patch.object(embed, "MAX_FRAMES", 10):
        epochs = frame_epochs(store, max_frames=10)
    assert len(epochs) <= 10 + 3
    assert {1, 31, 32, 60} <= set(epochs)  # first, init, first cluster epoch, last
    assert epochs == sorted(epochs)


def test_newest_epoch_of_a_live_run_is_not_forced_into_the_schedule(tmp_path):
    from conftest import write_synthetic_run

    store = write_synthetic_run(tmp_path / "live", n_samples=60, pretrain_epochs=30, cluster_epochs=29,
                                state="running")
    assert 60 not in frame_epochs(store, max_frames=10)
    store.write_status("finished")
    assert 60 in frame_epochs(store, max_frames=10)


def test_missing_epochs_respects_upto(synthetic_run):
    assert missing_epochs(synthetic_run, "tsne", upto=3) == [1, 2, 3]


def test_epoch_view_marks_changed_samples_and_falls_back_to_a_ready_frame(synthetic_run):
    compute_frames(synthetic_run, "pca", upto=5)
    view = epoch_view(synthetic_run, "pca", 6)  # frame 6 not computed: the view shows 5
    assert view.epoch == 6 and view.frame.epoch == 5 and view.previous_epoch == 4
    before = synthetic_run.load_snapshot(4)["labels"]
    np.testing.assert_array_equal(view.changed, view.clusters != before)
    assert epoch_view(synthetic_run, "tsne", 6) is None  # no t-SNE frame at all yet


def test_colour_slots_give_each_cluster_its_matched_class():
    truth = np.repeat(np.arange(3), 10)
    clusters = np.array([2, 0, 1])[truth]  # class 0 is cluster 2, …
    np.testing.assert_array_equal(colour_slots(truth, clusters, 4), [1, 2, 0, 3])  # cluster 3 unmatched


# -- the background worker ------------------------------------------------------------------------
def test_worker_computes_up_to_the_requested_epoch_in_order(synthetic_run):
    read_end, write_end = os.pipe()
    requests, events = os.fdopen(read_end), io.StringIO()
    worker = threading.Thread(target=embed.serve, kwargs=dict(warm_up=False, requests=requests, events=events))
    worker.start()
    with os.fdopen(write_end, "w") as pipe:
        for runs, run in ((str(synthetic_run.path.parent), "../escaped"), ("/", str(synthetic_run.path))):
            pipe.write(json.dumps({"runs": runs, "run": run, "kind": "pca"}) + "\n")  # not run ids: ignored
        pipe.write(json.dumps({"runs": str(synthetic_run.path.parent), "run": synthetic_run.id, "kind": "pca",
                               "upto": 4}) + "\n")
        pipe.flush()
        deadline = time.monotonic() + 30
        while len(events.getvalue().splitlines()) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    worker.join(timeout=10)  # the end of the requests ends the worker
    assert not worker.is_alive()
    frames = [json.loads(line) for line in events.getvalue().splitlines()]
    assert [f["epoch"] for f in frames] == [1, 2, 3, 4] and {f["event"] for f in frames} == {"frame"}
    assert ready_epochs(synthetic_run, "pca") == [1, 2, 3, 4]


def test_background_projector_computes_requested_frames(synthetic_run):
    projector = BackgroundProjector(warm_up=False, nice=0)
    try:
        projector.request(synthetic_run.path, "pca")
        projector.request(synthetic_run.path, "no-such-kind")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(ready_epochs(synthetic_run, "pca")) < 6
                                               or projector.error(synthetic_run.path, "no-such-kind") is None):
            time.sleep(0.2)
        assert ready_epochs(synthetic_run, "pca") == synthetic_run.snapshot_epochs()
        assert "unknown projection" in projector.error(synthetic_run.path, "no-such-kind")
    finally:
        projector.close()
    assert not projector.alive
