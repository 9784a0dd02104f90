"""EncoderDecoderModel: the trainer's and evaluator's entry points on a tiny real model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from instructrec_jax.model import decoding, losses
from instructrec_jax.model.config import T5Config
from instructrec_jax.model.encoder_decoder import EncoderDecoderModel, example_batch
from instructrec_jax.model.t5 import random_params

CONFIG = T5Config(vocab_size=24, d_model=32, d_ff=48, num_heads=2, d_kv=8, num_encoder_layers=1,
                  num_decoder_layers=1, dropout_rate=0.0, dtype="float32")
VOCAB = CONFIG.vocab_size


@pytest.fixture(scope="module")
def model():
    return EncoderDecoderModel(CONFIG, z_loss=1e-4, loss_normalizing_factor="NUM_REAL_TARGET_TOKENS")


@pytest.fixture(scope="module")
def boxed(model):
    """The initialised tree's structure, shapes and axes (traced, not computed)."""
    return jax.eval_shape(lambda: model.init_params(
        jax.random.PRNGKey(0), {"encoder_input_tokens": (4, 9), "decoder_input_tokens": (4, 5)}))


@pytest.fixture(scope="module")
def params():
    # Sharpen the output layer so that decoding has clear winners.
    params = random_params(CONFIG)
    params["decoder"]["logits_dense"]["kernel"] *= 3.0
    return params


@pytest.fixture(scope="module")
def batch():
    batch = example_batch(batch_size=4, inputs_length=9, targets_length=5, vocab_size=VOCAB)
    batch["encoder_input_tokens"][2, 6:] = 0
    batch["decoder_target_tokens"][3, 3:] = [1, 0]
    batch["decoder_input_tokens"][3, 4:] = 0
    batch["decoder_loss_weights"] = (batch["decoder_target_tokens"] > 0).astype(np.float32)
    return batch


def _log_probs(logits):
    return np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1))


def test_init_params_are_boxed_with_axes_and_match_the_param_count(model, boxed):
    specs = model.logical_axes(boxed)
    assert specs["decoder"]["logits_dense"]["kernel"] == jax.sharding.PartitionSpec("embed", "vocab")
    assert sum(x.size for x in jax.tree_util.tree_leaves(nn.unbox(boxed))) == model.num_params
    assert isinstance(boxed["token_embedder"]["embedding"], nn.LogicallyPartitioned)


def test_loss_fn_matches_the_loss_computed_from_the_logits(model, params, batch):
    loss, metrics = model.loss_fn(params, batch, None)
    logits = np.asarray(model.logits(params, batch))
    targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
    log_probs = _log_probs(logits)
    log_z = np.asarray(jax.nn.logsumexp(jnp.asarray(logits), axis=-1))
    token_ce = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    expected = ((token_ce + 1e-4 * log_z**2) * weights).sum() / weights.sum()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(metrics["z_loss"]) == pytest.approx(float((1e-4 * log_z**2 * weights).sum()
                                                           / weights.sum()), rel=1e-5)
    assert float(metrics["cross_ent_loss"]) == pytest.approx(float(loss - metrics["z_loss"]))
    correct = (logits.argmax(-1) == targets) * weights
    assert float(metrics["accuracy"]) == pytest.approx(correct.sum() / weights.sum())
    assert float(metrics["num_tokens"]) == weights.sum() == 19
    assert float(metrics["num_examples"]) == 4


def test_packed_batches_count_each_segment_as_an_example(model, params):
    batch = example_batch(batch_size=1, inputs_length=8, targets_length=6, vocab_size=VOCAB)
    batch["decoder_segment_ids"] = np.array([[1, 1, 2, 2, 2, 0]], np.int32)
    batch["encoder_segment_ids"] = np.array([[1, 1, 1, 2, 2, 2, 2, 0]], np.int32)
    batch["decoder_target_tokens"][0, 5] = 0
    batch["decoder_loss_weights"] = (batch["decoder_target_tokens"] > 0).astype(np.float32)
    _, metrics = model.loss_fn(params, batch, None)
    assert float(metrics["num_examples"]) == 2 and float(metrics["num_tokens"]) == 5


def test_dropout_rng_turns_dropout_on_in_training(params, batch):
    model = EncoderDecoderModel(CONFIG.replace(dropout_rate=0.3))
    key = jax.random.key(0, impl="unsafe_rbg")
    with_dropout, _ = model.loss_fn(params, batch, key)
    without, _ = model.loss_fn(params, batch, None)
    assert float(with_dropout) != pytest.approx(float(without), rel=1e-3)


def test_score_batch_sums_target_log_probs(model, params, batch):
    scores = np.asarray(model.score_batch(params, batch))
    log_probs = _log_probs(model.logits(params, batch))
    targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
    expected = (np.take_along_axis(log_probs, targets[..., None], -1)[..., 0] * weights).sum(-1)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_scoring_candidates_against_one_encoding_equals_full_scoring(model, params, batch):
    # 3 candidate targets for instruction 0, encoder run once and repeated
    encoded = model.encode(params, batch["encoder_input_tokens"][:1])
    repeated = jnp.repeat(encoded, 3, axis=0)
    inputs = np.repeat(batch["encoder_input_tokens"][:1], 3, axis=0)
    candidates = batch["decoder_target_tokens"][:3]
    decoder_inputs = batch["decoder_input_tokens"][:3]
    shared = model.score_encoded(params, repeated, inputs, decoder_inputs, candidates)
    separate = model.score_batch(params, {"encoder_input_tokens": inputs,
                                          "decoder_input_tokens": decoder_inputs,
                                          "decoder_target_tokens": candidates})
    np.testing.assert_allclose(shared, separate, rtol=1e-5)


def _shift_right(tokens):
    return np.concatenate([np.zeros((tokens.shape[0], 1), np.int32), tokens[:, :-1]], axis=1)


def _teacher_forced(model, params, inputs, outputs):
    batch = {"encoder_input_tokens": inputs, "decoder_input_tokens": _shift_right(outputs),
             "decoder_target_tokens": outputs}
    return model.score_batch(params, batch), _log_probs(model.logits(params, batch))


def test_greedy_prediction_is_the_argmax_of_its_own_teacher_forcing(model, params, batch):
    tokens, scores = model.predict_batch(params, batch, method="greedy", max_decode_length=6)
    tokens = np.asarray(tokens)
    assert tokens.shape == (4, 6)
    teacher_scores, log_probs = _teacher_forced(model, params, batch["encoder_input_tokens"], tokens)
    for row in range(4):
        length = list(tokens[row]).index(1) + 1 if 1 in tokens[row] else 6
        assert (log_probs[row, :length].argmax(-1) == tokens[row, :length]).all()
        assert not tokens[row, length:].any()
    np.testing.assert_allclose(scores, teacher_scores, rtol=1e-5)


def test_beam_prediction_scores_are_length_normalised_log_probs(model, params, batch):
    tokens, scores = model.predict_batch(params, batch, method="beam", num_beams=3, alpha=0.6,
                                         max_decode_length=6, return_all=True)
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    assert tokens.shape == (4, 3, 6) and scores.shape == (4, 3)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    flat = tokens.reshape(12, 6)
    inputs = np.repeat(batch["encoder_input_tokens"], 3, axis=0)
    log_probs, _ = _teacher_forced(model, params, inputs, flat)
    for i, row in enumerate(flat):
        if 1 in row:  # finished beams: log p / ((5 + length) / 6) ** alpha
            length = list(row).index(1) + 1
            assert scores.flat[i] == pytest.approx(float(log_probs[i]) / ((5 + length) / 6) ** 0.6,
                                                   rel=1e-4)
    best, best_scores = model.predict_batch(params, batch, method="beam", num_beams=3, alpha=0.6,
                                            max_decode_length=6)
    np.testing.assert_array_equal(best, tokens[:, 0])
    np.testing.assert_allclose(best_scores, scores[:, 0])


def _no_padding_token(step, prefix, log_probs):
    return log_probs.at[:, 0].set(-jnp.inf)


def test_beam_search_on_the_model_finds_the_best_short_output(model, params, batch):
    # With more beams than 2-token prefixes the search is exhaustive up to length 3, so its best
    # finished outputs must be the brute-force best of every (t1, t2, EOS), (t1, EOS), (EOS).
    # Token 0 is kept out by a constraint: teacher forcing reads a 0 target as padding.
    inputs = batch["encoder_input_tokens"][:1]
    non_eos = list(range(2, VOCAB))
    candidates = [[1, 0, 0]] + [[a, 1, 0] for a in non_eos] + [[a, b, 1] for a in non_eos
                                                                for b in non_eos]
    outputs = np.array(candidates, np.int32)
    lengths = np.array([c.index(1) + 1 for c in candidates])
    weights = (np.arange(3)[None] < lengths[:, None]).astype(np.float32)
    log_probs = np.asarray(model.score_batch(params, {
        "encoder_input_tokens": np.repeat(inputs, len(outputs), axis=0),
        "decoder_input_tokens": _shift_right(outputs), "decoder_target_tokens": outputs,
        "decoder_loss_weights": weights}))
    normalised = log_probs / ((5 + lengths) / 6) ** 0.6
    order = np.argsort(-normalised)
    beams = len(non_eos) ** 2 + 1
    tokens, scores = model.predict_batch(params, {"encoder_input_tokens": inputs}, method="beam",
                                         num_beams=beams, alpha=0.6, max_decode_length=3,
                                         return_all=True, logits_constraint=_no_padding_token)
    for rank in range(3):
        np.testing.assert_array_equal(np.asarray(tokens)[0, rank], outputs[order[rank]])
        assert float(scores[0, rank]) == pytest.approx(float(normalised[order[rank]]), rel=1e-4)


def test_sampling_needs_rng_and_is_reproducible(model, params, batch):
    with pytest.raises(ValueError, match="rng"):
        model.predict_batch(params, batch, method="sample")
    key = jax.random.key(4, impl="unsafe_rbg")
    first = model.predict_batch(params, batch, key, method="sample", temperature=0.7,
                                max_decode_length=6)
    second = model.predict_batch(params, batch, key, method="sample", temperature=0.7,
                                 max_decode_length=6)
    np.testing.assert_array_equal(first[0], second[0])
    assert first[0].shape == (4, 6)


def test_unknown_method_and_factor_are_rejected(model, params, batch):
    with pytest.raises(ValueError, match="method"):
        model.predict_batch(params, batch, method="nucleus")
    with pytest.raises(ValueError, match="loss_normalizing_factor"):
        EncoderDecoderModel(CONFIG, loss_normalizing_factor="PER_TOKEN")
    assert losses.SPECIAL_FACTORS and decoding.EOS_ID == 1
