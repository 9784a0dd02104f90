"""SASRec in JAX: training windows, learning a predictable sequence, determinism, unknown items."""

import numpy as np
import pytest

from baseline_fixtures import markov_splits
from instructrec_jax import baselines
from instructrec_jax.baselines import sasrec

FAST = dict(max_len=10, hidden=32, num_blocks=1, epochs=30, batch_size=32, dropout=0.1)


@pytest.fixture(scope="module")
def splits():
    return markov_splits(num_users=60, num_items=40, length=25)


@pytest.fixture(scope="module")
def trained(splits):
    return sasrec.fit_sasrec(splits.train, splits.catalogue, seed=0, **FAST)


def test_training_windows_cover_every_next_item_of_the_prefix_and_nothing_else():
    prefix = np.arange(1, 24, dtype=np.int32)  # 23 items -> 22 next-item targets
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = sasrec._training_windows([prefix], 5, rng)
        targets = set(y[y > 0].tolist())
        assert targets == set(range(2, 24))
        # each target's input at the same position is its predecessor in the prefix
        assert np.all(x[y > 0] == y[y > 0] - 1)
        # the newest window ends on the prefix's last item
        assert y[0, -1] == 23


def test_sasrec_learns_a_predictable_next_item(splits, trained):
    queries = baselines.queries_from_split(splits.test, splits.candidates[("test", 9)])
    m = baselines.evaluate_baseline(trained, queries)
    assert m["HR@1"] > 0.8
    assert trained.epochs_run == FAST["epochs"]


def test_sasrec_bce_loss_also_learns(splits):
    model = sasrec.fit_sasrec(splits.train, splits.catalogue, seed=0, loss="bce", **{**FAST, "epochs": 20})
    queries = baselines.queries_from_split(splits.valid, splits.candidates[("valid", 9)])
    assert baselines.evaluate_baseline(model, queries)["HR@1"] > 0.8


def test_sasrec_is_deterministic_for_a_seed(splits, trained):
    again = sasrec.fit_sasrec(splits.train, splits.catalogue, seed=0, **{**FAST, "epochs": 2})
    twice = sasrec.fit_sasrec(splits.train, splits.catalogue, seed=0, **{**FAST, "epochs": 2})
    h = [ex.history for ex in splits.test[:5]]
    c = [splits.candidates[("test", 9)][ex.user_id].item_ids for ex in splits.test[:5]]
    for a, b in zip(again.score(h, c), twice.score(h, c)):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_keeps_the_best_validation_parameters(splits):
    valid = baselines.queries_from_split(splits.valid, splits.candidates[("valid", 9)])
    model = sasrec.fit_sasrec(splits.train, splits.catalogue, seed=0, validation=valid, eval_every=2, patience=2,
                              **{**FAST, "epochs": 12})
    epochs = [e for e, _ in model.validation_history]
    assert epochs[:2] == [2, 4] and len(epochs) >= 2
    best_epoch, best_ndcg = max(model.validation_history, key=lambda h: (h[1], -h[0]))
    assert model.best_epoch == best_epoch
    assert baselines.evaluate_baseline(model, valid)["NDCG@5"] == pytest.approx(best_ndcg)


def test_unknown_candidates_score_minus_infinity_and_history_is_capped(trained):
    (scores,) = trained.score([("i001", "i002")], [("i003", "not-an-item")])
    assert np.isfinite(scores[0]) and scores[1] == -np.inf
    long_history = [f"i{k:03d}" for k in range(30)]
    enc = trained.encode_histories([long_history])
    assert enc.shape == (1, 10)
    assert enc[0, -1] == trained.index["i029"] and enc[0, 0] == trained.index["i020"]


def test_unknown_loss_is_refused(splits):
    with pytest.raises(ValueError, match="unknown SASRec loss"):
        sasrec.fit_sasrec(splits.train, splits.catalogue, loss="bpr")
