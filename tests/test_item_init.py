"""Item-token initialisation from next-item PPMI: counts, PPMI, factors and where they land."""

import numpy as np
import pytest

from instructrec_jax import item_init
from instructrec_jax.data.types import SplitExample


def _example(history, target):
    return SplitExample(user_id="u", history=tuple(history), target=target, position=len(history),
                        timestamp=0)


def test_next_item_counts_use_the_last_window_items_once_per_example():
    index = {"a": 0, "b": 1, "c": 2}
    train = [_example(["a", "b", "a"], "c"), _example(["c", "b"], "a"), _example(["a"], "zz")]
    counts = item_init.next_item_counts(train, index, window=2)
    expected = np.zeros((3, 3))
    expected[1, 2] = 1  # window 2 of [a, b, a] holds {b, a}
    expected[0, 2] = 1
    expected[2, 0] = 1  # [c, b] -> a
    expected[1, 0] = 1
    np.testing.assert_array_equal(counts, expected)  # unknown target "zz" contributes nothing
    with pytest.raises(ValueError, match="window"):
        item_init.next_item_counts(train, index, window=0)


def test_ppmi_matches_hand_computation():
    counts = np.array([[0.0, 3.0], [1.0, 0.0]])
    # total 4; row sums (3, 1); column sums (1, 3): PMI(0,1) = log(3*4/(3*3)), PMI(1,0) = log(1*4/(1*1))
    expected = np.array([[0.0, np.log(12 / 9)], [np.log(4.0), 0.0]])
    np.testing.assert_allclose(item_init.ppmi(counts), expected)
    assert not item_init.ppmi(np.zeros((2, 2))).any()


def test_factors_reconstruct_the_matrix_and_pad_missing_rank_with_zeros():
    rng = np.random.default_rng(0)
    matrix = rng.random((5, 3)) @ rng.random((3, 5))  # rank 3
    left, right = item_init.factorise(matrix, dim=8)
    assert left.shape == (5, 8) and right.shape == (5, 8)
    np.testing.assert_allclose(left @ right.T, matrix, atol=1e-10)
    assert np.abs(left[:, 5:]).max() == 0


def test_apply_item_factors_replaces_only_item_rows_and_columns_at_the_random_scale():
    rng = np.random.default_rng(1)
    vocab, dim = 12, 4
    params = {"token_embedder": {"embedding": rng.normal(size=(vocab, dim)).astype(np.float32)},
              "decoder": {"logits_dense": {"kernel": (0.5 * rng.normal(size=(dim, vocab))).astype(np.float32)},
                          "other": {"w": np.ones(3)}}}
    ids = [7, 3, 9]
    history = rng.normal(size=(3, dim)) * 10
    target = rng.normal(size=(3, dim)) * 10
    out = item_init.apply_item_factors(params, ids, history, target)
    emb, kernel = out["token_embedder"]["embedding"], out["decoder"]["logits_dense"]["kernel"]
    others = [i for i in range(vocab) if i not in ids]
    np.testing.assert_array_equal(emb[others], params["token_embedder"]["embedding"][others])
    np.testing.assert_array_equal(kernel[:, others], params["decoder"]["logits_dense"]["kernel"][:, others])
    # Directions are the factors' (positive rescaling), scale is that of what they replaced.
    cos = np.sum(emb[ids] * history, axis=1) / (np.linalg.norm(emb[ids], axis=1) * np.linalg.norm(history, axis=1))
    np.testing.assert_allclose(cos, 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.sqrt(np.mean(emb[ids] ** 2)),
                               np.sqrt(np.mean(params["token_embedder"]["embedding"][ids] ** 2)), rtol=1e-5)
    np.testing.assert_allclose(kernel[:, ids].T / np.linalg.norm(kernel[:, ids].T, axis=1, keepdims=True),
                               target / np.linalg.norm(target, axis=1, keepdims=True), atol=1e-5)
    assert out["decoder"]["other"] is params["decoder"]["other"]
    assert params["token_embedder"]["embedding"] is not emb  # input left untouched


def test_factors_rank_next_items_by_ppmi():
    """The point of the initialisation: history embeddings · output columns order items as PPMI does."""
    index = {x: i for i, x in enumerate("abcdef")}
    # b and c are equally popular targets; after a, b came 6 times and c twice.
    train = ([_example(["a"], "b")] * 6 + [_example(["a"], "c")] * 2 + [_example(["d"], "c")] * 4
             + [_example(["d"], "e")] * 5 + [_example(["b"], "f")] * 3 + [_example(["c"], "d")] * 2)
    matrix = item_init.ppmi(item_init.next_item_counts(train, index, window=1))
    left, right = item_init.factorise(matrix, dim=6)
    scores = left[index["a"]] @ right.T
    assert np.argmax(scores) == index["b"] and scores[index["b"]] > scores[index["c"]] > scores[index["e"]] - 1e-9


class _Pieces:
    def __init__(self, table):
        self.table = table

    def encode(self, text):
        return self.table[text]


def test_item_token_ids_require_single_pieces():
    assert item_init.item_token_ids(_Pieces({"<item_1>": [40], "<item_2>": [41]}), ["1", "2"]) == [40, 41]
    with pytest.raises(ValueError, match="--renderer id_token"):
        item_init.item_token_ids(_Pieces({"<item_1>": [5, 6, 7]}), ["1"])


@pytest.fixture(scope="module")
def prepared_ids(tmp_path_factory):
    """A small ml-100k-format dataset prepared with one vocabulary piece per item."""
    from fixture_files import prepare_id_token_ml100k

    return prepare_id_token_ml100k(tmp_path_factory, "init", extra_users=30, extra_items=40,
                                   max_train_examples=60)


def _random_t5_params(vocab: int, dim: int):
    rng = np.random.default_rng(2)
    return {"token_embedder": {"embedding": rng.normal(size=(vocab, dim)).astype(np.float32)},
            "decoder": {"logits_dense": {"kernel": rng.normal(size=(dim, vocab)).astype(np.float32)}}}


def _unit_rows(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_sasrec_init_puts_the_trained_sasrec_item_vectors_on_both_sides(prepared_ids):
    from instructrec_jax.baselines.sasrec import fit_sasrec
    from instructrec_jax.data.preprocess import load_prepared
    from instructrec_jax.vocabulary import load_vocabulary

    vocab = load_vocabulary(prepared_ids / "spiece.model")
    data = load_prepared(prepared_ids)
    items = sorted(data.items)
    token_ids = item_init.item_token_ids(vocab, items)
    params = _random_t5_params(vocab.vocab_size, 16)
    out = item_init.SASRecItemInit(dataset=str(prepared_ids), epochs=2, hidden=8, seed=3)(params)

    # the same SASRec, trained again with the same seed: its item table, zero beyond width 8
    sasrec = fit_sasrec(data.train, items, hidden=8, epochs=2, seed=3)
    table = np.asarray(sasrec.params["item_embedding"]["embedding"])[[sasrec.index[i] for i in items]]
    emb = out["token_embedder"]["embedding"]
    kernel = out["decoder"]["logits_dense"]["kernel"]
    np.testing.assert_allclose(_unit_rows(emb[token_ids][:, :8]), _unit_rows(table), atol=1e-5)
    np.testing.assert_allclose(_unit_rows(kernel[:, token_ids].T[:, :8]), _unit_rows(table), atol=1e-5)
    assert not emb[token_ids][:, 8:].any() and not kernel[8:, token_ids].any()
    others = np.setdiff1d(np.arange(vocab.vocab_size), token_ids)
    np.testing.assert_array_equal(emb[others], params["token_embedder"]["embedding"][others])
    np.testing.assert_array_equal(kernel[:, others], params["decoder"]["logits_dense"]["kernel"][:, others])
    # a different seed trains a different SASRec
    other = item_init.SASRecItemInit(dataset=str(prepared_ids), epochs=2, hidden=8, seed=4)(params)
    assert not np.allclose(other["token_embedder"]["embedding"][token_ids], emb[token_ids])


def test_sasrec_init_refuses_a_sasrec_wider_than_the_model(prepared_ids):
    with pytest.raises(ValueError, match="SASRec width 32 must be in 1..16"):
        item_init.SASRecItemInit(dataset=str(prepared_ids), epochs=1, hidden=32)(_random_t5_params(700, 16))
