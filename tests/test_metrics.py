import numpy as np
import pytest

from core.metrics import aligned_confusion, cluster_acc, evaluate


def test_acc_is_invariant_to_label_permutation():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_acc(y, np.array([2, 2, 0, 0, 1, 1])) == 1.0


def test_acc_by_hand_with_one_error():
    # clusters (5,5,7,7,7,9): best map 5→a, 7→b, 9→c gets 5 of 6 right.
    y = np.array(["a", "a", "b", "b", "c", "c"])
    assert cluster_acc(y, np.array([5, 5, 7, 7, 7, 9])) == pytest.approx(5 / 6)


def test_acc_with_more_clusters_than_classes():
    # 2 classes, 3 clusters: cluster 2 cannot be matched, its sample counts as wrong → 3/4.
    y = np.array([0, 0, 1, 1])
    assert cluster_acc(y, np.array([0, 0, 1, 2])) == pytest.approx(3 / 4)


def test_acc_with_fewer_clusters_than_classes_and_negative_labels():
    # 3 classes (−1, 0, 5), one cluster: the best class takes 2 of 4.
    y = np.array([-1, -1, 0, 5])
    assert cluster_acc(y, np.zeros(4, int)) == pytest.approx(0.5)


def test_evaluate_perfect_and_random():
    y = np.repeat(np.arange(4), 25)
    perfect = evaluate(y, (y + 1) % 4)
    assert perfect == {"acc": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    shuffled = evaluate(y, np.random.default_rng(0).permutation(y))
    assert shuffled["nmi"] < 0.2 and abs(shuffled["ari"]) < 0.1


def test_aligned_confusion_puts_matches_on_the_diagonal():
    y = np.array([0, 0, 1, 1, 2])
    pred = np.array([7, 7, 3, 3, 5])
    table, classes, clusters = aligned_confusion(y, pred)
    assert list(clusters) == [7, 3, 5]
    np.testing.assert_array_equal(table, np.diag([2, 2, 1]))
