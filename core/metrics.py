"""Clustering metrics: ACC with the Hungarian matching, NMI and ARI from scikit-learn."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix


COLLAPSE_SHARE = 3.0  # a cluster above 3× its balanced share N/K signals a collapse (decs.md §f.8)


def largest_share(sizes) -> float:
    """The largest cluster's size over the balanced size N/K, from the (K,) cluster sizes (1: balanced)."""
    sizes = np.asarray(sizes)
    return float(sizes.max() * len(sizes) / sizes.sum())


def cluster_acc(y_true, y_pred) -> float:
    """Accuracy under the best one-to-one map of clusters to classes.

    Works for any label values and for K ≠ number of classes (unmatched clusters count as wrong).
    """
    table = contingency_matrix(y_true, y_pred)  # (classes, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(y_true))


def evaluate(y_true, y_pred) -> dict[str, float]:
    """ACC, NMI (arithmetic normalisation, sklearn's default) and ARI."""
    return {"acc": cluster_acc(y_true, y_pred),
            "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
            "ari": float(adjusted_rand_score(y_true, y_pred))}


def aligned_confusion(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confusion matrix with clusters reordered to face their Hungarian-matched classes.

    Returns ``(table, classes, clusters)``: table is (classes, clusters) with matched clusters first,
    in the order of their classes, then unmatched clusters.
    """
    classes, y_idx = np.unique(y_true, return_inverse=True)
    clusters, c_idx = np.unique(y_pred, return_inverse=True)
    table = np.zeros((len(classes), len(clusters)), dtype=np.int64)
    np.add.at(table, (y_idx, c_idx), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    order = list(cols[np.argsort(rows)]) + [c for c in range(len(clusters)) if c not in set(cols)]
    return table[:, order], classes, clusters[order]
