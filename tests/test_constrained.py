"""Catalogue-constrained generation: the jit constraint equals the trie; beams never leave the catalogue."""

import jax.numpy as jnp
import numpy as np
import pytest

from instructrec_jax import constrained
from ranking_fixtures import CharTokenizer, tiny_model_and_params

CATALOGUE = {
    "m1": "The Rock",
    "m2": "The Room",
    "m3": "The Ring",
    "m4": "Heat",
    "m5": "Her",
    "m6": "Up",
    "m7": "Us",
    "m8": "Casino",
    "m9": "Heat",  # same title as m4: one sequence, two items
    "m10": "The Birds",
}


@pytest.fixture(scope="module")
def trie():
    return constrained.CatalogueTrie(CATALOGUE, CharTokenizer())


def test_trie_maps_sequences_back_to_items_including_shared_titles(trie):
    tok = CharTokenizer()
    assert trie.items_for(tok.encode("Heat") + [1, 0, 0]) == ("m4", "m9")
    assert trie.items_for(tok.encode("Up") + [1]) == ("m6",)
    assert trie.items_for(tok.encode("Upx") + [1]) == ()
    assert len(trie.sequences) == 9


def test_device_constraint_allows_exactly_the_trie_children(trie):
    tok = CharTokenizer()
    prefixes = [[], tok.encode("The R"), tok.encode("The Ro"), tok.encode("He"), tok.encode("Heat"),
                tok.encode("Hx"), tok.encode("The Birds") + [1]]
    length = 12
    rows = np.zeros((len(prefixes), length), np.int32)
    for r, p in enumerate(prefixes):
        rows[r, : len(p)] = p
    for r, p in enumerate(prefixes):
        out = trie.constraint(jnp.int32(len(p)), jnp.asarray(rows[r : r + 1]), jnp.zeros((1, 64)))
        allowed = set(np.flatnonzero(np.asarray(out[0]) > constrained.DISALLOWED / 2).tolist())
        assert allowed == trie.allowed_next(p), p
    # concrete values, so the comparison above cannot pass on two empty sets everywhere
    assert trie.allowed_next(tok.encode("The Ro")) == {tok.encode("c")[0], tok.encode("o")[0]}
    assert trie.allowed_next(tok.encode("Heat")) == {1}


def test_constrained_beam_returns_k_distinct_catalogue_items(trie):
    model, params = tiny_model_and_params()
    inputs = ["recommend a film", "something tense", "x"]
    results = constrained.generate_items(model, params, CharTokenizer(), trie, inputs, top_k=5, batch_size=4)
    assert len(results) == 3
    for found in results:
        assert len(found) == 5
        sequences = [g.text_tokens for g in found]
        assert len(set(sequences)) == 5
        for g in found:
            assert set(g.item_ids) <= set(CATALOGUE)
            assert g.text_tokens in trie.sequences
        scores = [g.beam_score for g in found]
        assert scores == sorted(scores, reverse=True)
        assert all(np.isfinite(scores)) and all(s > -1e6 for s in scores)


def test_top_k_beyond_the_catalogue_is_refused(trie):
    with pytest.raises(ValueError, match="distinct item texts"):
        constrained.generate_items(None, None, CharTokenizer(), trie, ["a"], top_k=20)
