"""The in-input cross-entropy: a softmax over the distinct tokens of the example's own input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from instructrec_jax.model import losses
from instructrec_jax.model.config import T5Config
from instructrec_jax.model.encoder_decoder import EncoderDecoderModel


def _brute_force(logits, targets, inputs):
    """Per (row, position): -log softmax over set(inputs) \\ {0} of the target, or None."""
    out = []
    for b in range(targets.shape[0]):
        allowed = sorted(set(int(t) for t in inputs[b]) - {0})
        row = []
        for t in range(targets.shape[1]):
            target = int(targets[b, t])
            if target == 0 or target not in allowed:
                row.append(None)
                continue
            sub = logits[b, t, allowed].astype(np.float64)
            log_z = np.log(np.sum(np.exp(sub - sub.max()))) + sub.max()
            row.append(log_z - logits[b, t, target])
        out.append(row)
    return out


def test_matches_a_brute_force_softmax_over_the_distinct_input_tokens():
    rng = np.random.default_rng(0)
    vocab = 50
    inputs = np.array([[5, 7, 7, 9, 11, 1, 0, 0],     # 7 twice: counted once
                       [3, 4, 5, 6, 8, 2, 1, 0]], np.int32)
    targets = np.array([[7, 1, 0], [8, 30, 1]], np.int32)  # 1 (EOS) is in both inputs; 30 is not
    logits = rng.normal(size=(2, 3, vocab)).astype(np.float32) * 3
    ce, member = losses.in_input_cross_entropy(jnp.asarray(logits), jnp.asarray(targets),
                                               jnp.asarray(inputs))
    expected = _brute_force(logits, targets, inputs)
    for b in range(2):
        for t in range(3):
            if expected[b][t] is None:
                assert not member[b, t] and ce[b, t] == 0.0
            else:
                assert member[b, t]
                np.testing.assert_allclose(ce[b, t], expected[b][t], rtol=1e-5)
    assert member.tolist() == [[True, True, False], [True, False, True]]


def test_packed_rows_give_each_segment_its_own_set():
    rng = np.random.default_rng(1)
    vocab = 40
    a_in, a_tg = [5, 6, 7, 1], [6, 1]
    b_in, b_tg = [8, 9, 5, 1], [9, 1]
    logits_a = rng.normal(size=(2, vocab)).astype(np.float32)
    logits_b = rng.normal(size=(2, vocab)).astype(np.float32)
    unpacked = losses.in_input_cross_entropy(
        jnp.asarray(np.stack([logits_a, logits_b])), jnp.asarray([a_tg, b_tg]),
        jnp.asarray([a_in, b_in]))
    packed = losses.in_input_cross_entropy(
        jnp.asarray(np.concatenate([logits_a, logits_b])[None]), jnp.asarray([a_tg + b_tg]),
        jnp.asarray([a_in + b_in]), jnp.asarray([[1] * 4 + [2] * 4]), jnp.asarray([[1, 1, 2, 2]]))
    np.testing.assert_allclose(np.asarray(packed[0]).reshape(2, 2), unpacked[0], rtol=1e-6)
    assert np.asarray(packed[1]).reshape(2, 2).tolist() == np.asarray(unpacked[1]).tolist()
    with pytest.raises(ValueError, match="target_segment_ids"):
        losses.in_input_cross_entropy(jnp.zeros((1, 2, vocab)), jnp.asarray([[1, 1]]),
                                      jnp.asarray([[1, 2]]), jnp.asarray([[1, 1]]))


def test_gradients_are_finite_when_no_target_is_in_its_input():
    inputs = jnp.asarray([[0, 0, 0]], jnp.int32)
    targets = jnp.asarray([[4, 0]], jnp.int32)

    def total(logits):
        ce, member = losses.in_input_cross_entropy(logits, targets, inputs)
        return jnp.sum(ce * member)

    grad = jax.grad(total)(jnp.ones((1, 2, 10)))
    assert np.all(np.isfinite(grad)) and not np.any(grad)


def _model_and_batch(weight):
    config = T5Config(vocab_size=64, d_model=16, d_ff=32, num_heads=2, d_kv=8,
                      num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)
    model = EncoderDecoderModel(config, z_loss=1e-4, in_input_loss_weight=weight)
    batch = {"encoder_input_tokens": jnp.asarray([[10, 11, 12, 13, 1, 0], [20, 21, 22, 1, 0, 0]]),
             "decoder_target_tokens": jnp.asarray([[12, 1, 0], [40, 1, 0]]),
             "decoder_input_tokens": jnp.asarray([[0, 12, 1], [0, 40, 1]]),
             "decoder_loss_weights": jnp.asarray([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])}
    return model, batch


def test_loss_fn_adds_the_weighted_term_and_reports_it():
    model, batch = _model_and_batch(0.0)
    params = model.init_params(jax.random.PRNGKey(0))
    base_loss, base_metrics = model.loss_fn(params, batch, None)
    assert "in_input_loss" not in base_metrics
    model2, _ = _model_and_batch(2.5)
    loss, metrics = model2.loss_fn(params, batch, None)
    logits = model.logits(params, batch)
    ce, member = losses.in_input_cross_entropy(logits, batch["decoder_target_tokens"],
                                               batch["encoder_input_tokens"])
    # Row 0: 12 and EOS are in the input; row 1: 40 is not, EOS is.
    assert np.asarray(member).tolist() == [[True, True, False], [False, True, False]]
    term = float(jnp.sum(ce * member * batch["decoder_loss_weights"]))
    np.testing.assert_allclose(metrics["in_input_loss"], term, rtol=1e-6)
    np.testing.assert_allclose(loss, base_loss + 2.5 * term, rtol=1e-6)
    np.testing.assert_allclose(metrics["cross_ent_loss"], base_metrics["cross_ent_loss"], rtol=1e-6)
    with pytest.raises(ValueError, match="in_input_loss_weight"):
        _model_and_batch(-1.0)
