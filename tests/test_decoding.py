"""Greedy, beam and sampling decoding on small Markov-chain "models" whose best outputs are known."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from instructrec_jax.model import decoding

EOS = decoding.EOS_ID


class Chain:
    """A first-order Markov chain over V tokens; token 0 is the start, 1 is EOS."""

    def __init__(self, log_probs):
        self.log_probs = np.asarray(log_probs, np.float64)
        table = jnp.asarray(self.log_probs, jnp.float32)

        def step_fn(tokens, cache):
            # the previous token comes from the cache, updated from the fed token
            previous = jnp.where(cache["fed"], tokens[:, 0], 0)
            return table[previous], {"fed": jnp.ones_like(cache["fed"]),
                                     "history": cache["history"] + previous}

        self.step_fn = step_fn

    def cache(self, n):
        return {"fed": jnp.zeros((n,), bool), "history": jnp.zeros((n,), jnp.int32)}

    def sequence_log_prob(self, tokens):
        previous, total = 0, 0.0
        for token in tokens:
            total += self.log_probs[previous, token]
            previous = token
        return total


def _normalised(rows):
    rows = np.asarray(rows, np.float64)
    with np.errstate(divide="ignore"):
        return np.log(rows / rows.sum(-1, keepdims=True))


def random_chain(seed, vocab=5, eos_bias=0.0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(vocab) * 0.7, size=vocab)
    probs[:, 0] = 0.0  # never emit the start/pad token
    probs[:, EOS] += eos_bias
    return Chain(_normalised(probs))


def test_brevity_penalty_is_t5x_length_normalisation():
    assert float(decoding.brevity_penalty(0.6, jnp.array(10))) == pytest.approx((15 / 6) ** 0.6)
    assert float(decoding.brevity_penalty(0.0, jnp.array(7))) == 1.0


def test_greedy_takes_the_argmax_and_pads_after_eos():
    # start -> 3 -> 2 -> EOS, then padding
    chain = Chain(_normalised([[0, 1, 2, 6, 1], [0, 1, 1, 1, 1], [0, 8, 1, 1, 1],
                               [0, 1, 7, 1, 1], [0, 1, 1, 1, 1]]))
    tokens, scores = decoding.greedy_search(chain.step_fn, chain.cache(2), 2, 6)
    np.testing.assert_array_equal(tokens, [[3, 2, 1, 0, 0, 0]] * 2)
    np.testing.assert_allclose(scores, [chain.sequence_log_prob([3, 2, 1])] * 2, rtol=1e-6)


def test_greedy_without_eos_runs_to_max_length():
    chain = Chain(_normalised([[0, 0, 1, 5, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 1],
                               [0, 0, 5, 1, 0], [0, 0, 1, 1, 1]]))
    tokens, scores = decoding.greedy_search(chain.step_fn, chain.cache(1), 1, 4)
    np.testing.assert_array_equal(tokens, [[3, 2, 2, 2]])  # ties go to the lowest id
    assert float(scores[0]) == pytest.approx(chain.sequence_log_prob([3, 2, 2, 2]), rel=1e-6)


def _best_finished(chain, max_length, alpha, vocab):
    """Brute force: every sequence that ends with its first EOS within max_length."""
    best = []
    for length in range(1, max_length + 1):
        for body in itertools.product(range(2, vocab), repeat=length - 1):
            tokens = list(body) + [EOS]
            log_prob = chain.sequence_log_prob(tokens)
            if log_prob > -1e6:
                best.append((log_prob / ((5 + length) / 6) ** alpha, tokens))
    return sorted(best, key=lambda item: -item[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_returns_the_best_finished_sequences(seed):
    vocab, max_length, beams, alpha = 5, 4, 27, 0.6  # 27 beams hold every 3-token prefix
    chain = random_chain(seed, vocab, eos_bias=0.3)
    cache = decoding.expand_for_beams(chain.cache(2), beams)
    tokens, scores = jax.jit(lambda c: decoding.beam_search(
        chain.step_fn, c, 2, max_length, num_beams=beams, alpha=alpha))(cache)
    expected = _best_finished(chain, max_length, alpha, vocab)
    for row in range(2):
        for rank in range(3):
            score, sequence = expected[rank]
            got = [int(t) for t in tokens[row, rank] if t != 0]
            assert got == sequence
            assert float(scores[row, rank]) == pytest.approx(score, rel=1e-5)
    assert np.all(np.diff(np.asarray(scores), axis=1) <= 0)  # best first


def test_beam_search_beats_greedy_on_a_garden_path():
    # greedy takes 2 (p=.55) and then cannot end well; beam finds 3 -> EOS (p=.45 * .95)
    chain = Chain(_normalised([[0, 0, 55, 45, 0], [0, 1, 1, 1, 1], [0, 34, 33, 33, 0],
                               [0, 95, 3, 2, 0], [0, 1, 1, 1, 1]]))
    greedy, greedy_score = decoding.greedy_search(chain.step_fn, chain.cache(1), 1, 3)
    cache = decoding.expand_for_beams(chain.cache(1), 2)
    beam, beam_scores = decoding.beam_search(chain.step_fn, cache, 1, 3, num_beams=2, alpha=0.0)
    assert greedy[0, :2].tolist() == [2, 1]
    assert beam[0, 0].tolist() == [3, 1, 0]
    assert float(beam_scores[0, 0]) == pytest.approx(math.log(0.45 * 0.95), rel=1e-5)
    assert float(beam_scores[0, 0]) > float(greedy_score[0])


def test_one_beam_without_length_penalty_is_greedy():
    chain = random_chain(7, vocab=6, eos_bias=0.2)
    greedy, greedy_scores = decoding.greedy_search(chain.step_fn, chain.cache(3), 3, 5)
    beam, beam_scores = decoding.beam_search(chain.step_fn, chain.cache(3), 3, 5, num_beams=1,
                                             alpha=0.0)
    np.testing.assert_array_equal(beam[:, 0], greedy)
    np.testing.assert_allclose(beam_scores[:, 0], greedy_scores, rtol=1e-6)


def test_beam_search_falls_back_to_live_beams_when_none_finish():
    probs = np.ones((4, 4))
    probs[:, :2] = 0.0  # neither pad nor EOS is ever possible
    chain = Chain(_normalised(probs))
    cache = decoding.expand_for_beams(chain.cache(1), 2)
    tokens, scores = decoding.beam_search(chain.step_fn, cache, 1, 3, num_beams=2, alpha=0.6)
    assert np.all(np.asarray(tokens) >= 2)
    np.testing.assert_allclose(scores, [[3 * math.log(0.5)] * 2], rtol=1e-5)


def _fast_key(seed):
    # RBG keys compile far faster than threefry on CPU; decoding takes either kind.
    return jax.random.key(seed, impl="unsafe_rbg")


def _allowed_only(allowed, vocab):
    mask = np.full(vocab, -np.inf, np.float32)
    mask[list(allowed)] = 0.0
    mask = jnp.asarray(mask)
    return lambda step, prefix, log_probs: log_probs + mask


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_logits_constraint_keeps_every_token_in_the_allowed_set(strategy):
    chain = random_chain(3, vocab=8, eos_bias=0.05)
    allowed = {1, 4, 6}
    constraint = _allowed_only(allowed, 8)
    if strategy == "greedy":
        tokens, _ = decoding.greedy_search(chain.step_fn, chain.cache(4), 4, 6,
                                           logits_constraint=constraint)
    elif strategy == "beam":
        cache = decoding.expand_for_beams(chain.cache(4), 3)
        tokens, _ = decoding.beam_search(chain.step_fn, cache, 4, 6, num_beams=3,
                                         logits_constraint=constraint)
    else:
        tokens, _ = decoding.temperature_sample(chain.step_fn, chain.cache(4), 4, 6,
                                                _fast_key(0), temperature=1.5,
                                                logits_constraint=constraint)
    assert set(np.unique(np.asarray(tokens))) <= allowed | {0}


def test_constraint_sees_the_step_and_the_generated_prefix():
    vocab = 9
    chain = random_chain(4, vocab=vocab)
    seen_steps = []

    def count_up(step, prefix, log_probs):
        # the next token is the previous one + 1 (starting at 3), EOS once it reaches 6
        previous = jnp.where(step > 0, prefix[:, jnp.maximum(step - 1, 0)], 2)
        wanted = jnp.where(previous >= 6, EOS, previous + 1)
        seen_steps.append(prefix.shape)
        return jnp.where(jnp.arange(vocab)[None] == wanted[:, None], log_probs, -jnp.inf)

    tokens, scores = decoding.greedy_search(chain.step_fn, chain.cache(2), 2, 7,
                                            logits_constraint=count_up)
    np.testing.assert_array_equal(tokens, [[3, 4, 5, 6, 1, 0, 0]] * 2)
    assert seen_steps[0] == (2, 7)  # [batch, max_length] buffer
    assert float(scores[0]) == pytest.approx(chain.sequence_log_prob([3, 4, 5, 6, 1]), rel=1e-5)


def test_two_argument_constraint_is_accepted():
    chain = random_chain(5, vocab=6, eos_bias=0.1)
    mask = jnp.asarray([-np.inf, 0, -np.inf, 0, -np.inf, -np.inf], jnp.float32)
    tokens, _ = decoding.greedy_search(chain.step_fn, chain.cache(2), 2, 5,
                                       logits_constraint=lambda prefix, lp: lp + mask)
    assert set(np.unique(np.asarray(tokens))) <= {0, 1, 3}


def test_sampling_is_reproducible_and_top_1_is_greedy():
    chain = random_chain(6, vocab=7, eos_bias=0.1)
    key = jax.random.PRNGKey(3)
    first = decoding.temperature_sample(chain.step_fn, chain.cache(5), 5, 6, key)
    again = decoding.temperature_sample(chain.step_fn, chain.cache(5), 5, 6, key)
    np.testing.assert_array_equal(first[0], again[0])
    top1 = decoding.temperature_sample(chain.step_fn, chain.cache(5), 5, 6, key, top_k=1)
    greedy = decoding.greedy_search(chain.step_fn, chain.cache(5), 5, 6)
    np.testing.assert_array_equal(top1[0], greedy[0])
    np.testing.assert_allclose(top1[1], greedy[1], rtol=1e-6)


def test_sampled_first_tokens_follow_the_tempered_distribution():
    probs = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    chain = Chain(_normalised(np.tile(probs, (5, 1))))
    n = 4000
    for temperature in (1.0, 0.5):
        tokens, _ = decoding.temperature_sample(chain.step_fn, chain.cache(n), n, 1,
                                                _fast_key(11), temperature=temperature)
        frequencies = np.bincount(np.asarray(tokens[:, 0]), minlength=5) / n
        tempered = probs ** (1 / temperature) / np.sum(probs ** (1 / temperature))
        np.testing.assert_allclose(frequencies, tempered, atol=0.03)


def test_top_k_sampling_only_draws_from_the_k_most_likely():
    probs = np.array([0.0, 0.05, 0.15, 0.35, 0.45])
    chain = Chain(_normalised(np.tile(probs, (5, 1))))
    tokens, _ = decoding.temperature_sample(chain.step_fn, chain.cache(500), 500, 1,
                                            _fast_key(2), temperature=2.0, top_k=2)
    assert set(np.unique(np.asarray(tokens))) == {3, 4}


def test_sampling_needs_an_rng():
    chain = random_chain(0)
    with pytest.raises(ValueError, match="rng"):
        decoding.temperature_sample(chain.step_fn, chain.cache(1), 1, 2, None, temperature=1.0)
