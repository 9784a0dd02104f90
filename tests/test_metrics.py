"""HR@k / NDCG@k against values computed by hand, and the tie rules on hand-made cases."""

import math

import numpy as np
import pytest

from instructrec_jax import metrics


def test_true_item_ranked_first_scores_one_everywhere():
    m = metrics.evaluate_rankings([[0.9, 0.1, 0.5]], [0])
    assert m["HR@1"] == 1.0 and m["HR@3"] == 1.0 and m["NDCG@3"] == 1.0 and m["MRR"] == 1.0


def test_rank_three_matches_hand_computation():
    # true item (index 2) has two candidates above it -> rank 3
    scores = [5.0, 4.0, 3.0, 2.0, 1.0]
    m = metrics.evaluate_rankings([scores], [2])
    assert m["HR@1"] == 0.0
    assert m["HR@3"] == 1.0
    assert m["HR@5"] == 1.0
    assert m["NDCG@3"] == pytest.approx(1 / math.log2(4))  # 0.5
    assert m["NDCG@5"] == pytest.approx(0.5)
    assert m["MRR"] == pytest.approx(1 / 3)


def test_averages_over_examples_by_hand():
    # ranks 1, 2, 6 -> HR@1 = 1/3, HR@5 = 2/3, NDCG@5 = (1 + 1/log2(3) + 0) / 3
    rows = [[3, 2, 1, 0, -1, -2], [3, 2, 1, 0, -1, -2], [3, 2, 1, 0, -1, -2]]
    m = metrics.evaluate_rankings(rows, [0, 1, 5])
    assert m["HR@1"] == pytest.approx(1 / 3)
    assert m["HR@3"] == pytest.approx(2 / 3)
    assert m["HR@5"] == pytest.approx(2 / 3)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert m.num_examples == 3
    assert m.num_candidates == (6,)


def test_any_cutoff_can_be_asked_for():
    m = metrics.evaluate_rankings([list(range(20, 0, -1))], [9], hr_ks=(9, 10), ndcg_ks=(10, 20))
    assert m["HR@9"] == 0.0 and m["HR@10"] == 1.0
    assert m["NDCG@10"] == pytest.approx(1 / math.log2(11))
    assert m["NDCG@20"] == pytest.approx(1 / math.log2(11))


def test_pessimistic_ties_rank_true_item_below_equal_scores():
    # all equal: true item last of 10
    m = metrics.evaluate_rankings([[0.0] * 10], [3], tie_rule="pessimistic")
    assert m["HR@1"] == 0.0 and m["HR@5"] == 0.0
    assert m["MRR"] == pytest.approx(0.1)
    # one higher, two tying: ranks 4 under the pessimistic rule
    best, worst = metrics.label_rank_bounds([1.0, 2.0, 1.0, 1.0, 0.0], 0)
    assert (best, worst) == (2, 4)


def test_expected_ties_average_over_random_tie_breaks():
    m = metrics.evaluate_rankings([[0.0] * 10], [3], tie_rule="expected")
    assert m["HR@1"] == pytest.approx(0.1)
    assert m["HR@3"] == pytest.approx(0.3)
    assert m["HR@5"] == pytest.approx(0.5)
    assert m["NDCG@3"] == pytest.approx((1 + 1 / math.log2(3) + 0.5) / 10)
    # one higher, true ties with two others: rank uniform on {2, 3, 4}
    m = metrics.evaluate_rankings([[1.0, 2.0, 1.0, 1.0, 0.0]], [0], tie_rule="expected")
    assert m["HR@1"] == 0.0
    assert m["HR@3"] == pytest.approx(2 / 3)
    assert m["NDCG@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 3)
    assert m["MRR"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)


def test_optimistic_ties_rank_true_item_first_among_equals():
    m = metrics.evaluate_rankings([[0.0] * 10], [3], tie_rule="optimistic")
    assert m["HR@1"] == 1.0


def test_candidate_position_never_breaks_a_tie():
    a = metrics.evaluate_rankings([[1.0, 1.0, 0.0]], [0], tie_rule="pessimistic")
    b = metrics.evaluate_rankings([[1.0, 1.0, 0.0]], [1], tie_rule="pessimistic")
    assert a.values == b.values


def test_negative_infinity_scores_tie_with_each_other():
    s = [-np.inf, 0.0, -np.inf]
    assert metrics.label_rank_bounds(s, 0) == (2, 3)


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        metrics.evaluate_rankings([[0.0, float("nan")]], [0])


def test_bad_label_index_and_unknown_rule_are_refused():
    with pytest.raises(ValueError, match="outside"):
        metrics.evaluate_rankings([[0.0, 1.0]], [2])
    with pytest.raises(ValueError, match="tie rule"):
        metrics.evaluate_rankings([[0.0, 1.0]], [0], tie_rule="random")
    with pytest.raises(ValueError, match="label indices"):
        metrics.evaluate_rankings([[0.0, 1.0]], [0, 1])
