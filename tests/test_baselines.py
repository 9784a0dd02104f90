"""Popularity and item-kNN baselines: training data only, hand-computed scores, shared evaluator."""

import math

import numpy as np
import pytest

from baseline_fixtures import markov_splits, split_sequences
from instructrec_jax import baselines, metrics
from instructrec_jax.baselines.itemknn import fit_itemknn
from instructrec_jax.baselines.popularity import fit_popularity
from instructrec_jax.data.types import SplitExample


def _toy():
    # valid/test targets "V*"/"T*" occur nowhere else: any count for them is a leak
    seqs = {
        "u1": ("a", "b", "c", "a", "V1", "T1"),
        "u2": ("b", "c", "b", "V2", "T2"),
        "u3": ("a", "c", "d", "V3", "T3"),
    }
    catalogue = ["a", "b", "c", "d", "V1", "V2", "V3", "T1", "T2", "T3", "x", "y", "z", "w", "q", "r", "s", "t", "o", "p", "n", "m"]
    return split_sequences(seqs, catalogue, negatives=3)


def test_training_sequences_are_the_sequences_without_their_last_two_items():
    s = _toy()
    assert baselines.training_sequences(s.train) == {
        "u1": ("a", "b", "c", "a"),
        "u2": ("b", "c", "b"),
        "u3": ("a", "c", "d"),
    }


def test_training_sequences_survive_a_capped_history():
    seq = tuple(f"i{k}" for k in range(30))
    s = split_sequences({"u": seq}, list(seq) + [f"n{k}" for k in range(10)], max_history=5)
    assert baselines.training_sequences(s.train)["u"] == seq[:-2]


def test_popularity_counts_exclude_valid_and_test_targets():
    s = _toy()
    pop = fit_popularity(s.train, s.catalogue)
    assert pop.counts["a"] == 3 and pop.counts["b"] == 3 and pop.counts["c"] == 3 and pop.counts["d"] == 1
    for leaked in ("V1", "V2", "V3", "T1", "T2", "T3"):
        assert pop.counts[leaked] == 0
    (scores,) = pop.score([()], [("d", "a", "V1", "x")])
    np.testing.assert_array_equal(scores, [1.0, 3.0, 0.0, 0.0])


def test_itemknn_never_sees_valid_or_test_targets():
    s = _toy()
    knn = fit_itemknn(s.train, s.catalogue)
    (scores,) = knn.score([("a", "b", "c")], [("T1", "V1", "d")])
    assert scores[0] == 0.0 and scores[1] == 0.0 and scores[2] > 0.0


def test_itemknn_cosine_matches_hand_computation():
    s = _toy()
    knn = fit_itemknn(s.train, s.catalogue)
    # users holding a: {u1, u3}; c: {u1, u2, u3}; d: {u3}; b: {u1, u2}
    # sim(a, d) = 1 / sqrt(2 * 1); sim(b, d) = 0; sim(c, d) = 1 / sqrt(3 * 1)
    (scores,) = knn.score([("a", "b", "c")], [("d",)])
    assert scores[0] == pytest.approx(1 / math.sqrt(2) + 1 / math.sqrt(3))
    # an item is not its own neighbour
    (self_score,) = knn.score([("d",)], [("d",)])
    assert self_score[0] == 0.0


def test_itemknn_window_links_only_nearby_items():
    s = split_sequences({"u": ("a", "b", "c", "d", "e", "V", "T")}, list("abcdeVT") + list("mnopqrstuvw"))
    knn = fit_itemknn(s.train, s.catalogue, window=1)
    (scores,) = knn.score([("a",)], [("b", "c", "e")])
    assert scores[0] > 0 and scores[1] == 0 and scores[2] == 0


def test_baselines_go_through_the_shared_evaluator():
    s = _toy()
    pop = fit_popularity(s.train, s.catalogue)
    queries = baselines.queries_from_split(s.test, s.candidates[("test", 3)])
    got = baselines.evaluate_baseline(pop, queries)
    scores = pop.score([q.history for q in queries], [q.candidates for q in queries])
    want = metrics.evaluate_rankings(scores, [q.label_index for q in queries])
    assert got.values == want.values
    # the T* targets never occur in training: they tie at 0 with unseen negatives, and the
    # pessimistic rule puts them last, so popularity can score no hit at all here
    assert got["HR@1"] == 0.0


def test_queries_refuse_a_candidate_set_for_another_target():
    s = _toy()
    wrong = {**s.candidates[("test", 3)]}
    wrong["u1"] = s.candidates[("valid", 3)]["u1"]
    with pytest.raises(ValueError, match="true item"):
        baselines.queries_from_split(s.test, wrong)


def test_itemknn_beats_popularity_on_predictable_sequences():
    s = markov_splits()
    queries = baselines.queries_from_split(s.test, s.candidates[("test", 9)])
    knn = baselines.evaluate_baseline(fit_itemknn(s.train, s.catalogue, window=1), queries)
    pop = baselines.evaluate_baseline(fit_popularity(s.train, s.catalogue), queries)
    assert knn["NDCG@5"] > pop["NDCG@5"]
    assert knn["HR@5"] > 0.9


def test_top_items_break_ties_by_catalogue_order():
    s = _toy()
    pop = fit_popularity(s.train, s.catalogue)
    top = baselines.top_items(pop, (), ["d", "c", "b", "a", "x"], 4, exclude={"c"})
    assert [item for item, _ in top] == ["b", "a", "d", "x"]


def test_hard_negatives_are_the_retrievers_top_non_interacted_items():
    s = markov_splits()
    knn = fit_itemknn(s.train, s.catalogue, window=1)
    interacted = {u: set(seq) for u, seq in s.sequences.items()}
    sets = baselines.hard_negative_candidates(knn, s.test, s.catalogue, interacted, num_negatives=5, seed=3)
    again = baselines.hard_negative_candidates(knn, s.test, s.catalogue, interacted, num_negatives=5, seed=3)
    assert sets == again
    positions = set()
    assert len(sets) == len(s.test)
    for ex, cs in zip(s.test, sets):
        assert cs.target == ex.target and len(cs.item_ids) == 6 and len(set(cs.item_ids)) == 6
        negatives = [i for k, i in enumerate(cs.item_ids) if k != cs.label_index]
        assert not set(negatives) & interacted[ex.user_id]
        want = baselines.top_items(knn, ex.history, s.catalogue, 5, exclude=interacted[ex.user_id])
        assert negatives == [i for i, _ in want]
        positions.add(cs.label_index)
    assert len(positions) > 1  # the true item is not always at the same place


def test_fit_baseline_dispatches_by_name_and_refuses_unknown():
    s = _toy()
    assert baselines.fit_baseline("popularity", s.train, s.catalogue).name == "popularity"
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.fit_baseline("bpr", s.train, s.catalogue)
