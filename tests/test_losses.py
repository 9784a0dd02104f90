"""T5X's loss: cross-entropy + z-loss with label smoothing, weights and normalising factors,
checked against values computed by hand with numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from instructrec_jax.model import losses

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(0, 3, (2, 4, 7)).astype(np.float32)
TARGETS = np.array([[3, 1, 6, 0], [2, 5, 0, 0]], np.int32)
WEIGHTS = (TARGETS > 0).astype(np.float32)


def _log_z(logits):
    m = logits.max(-1, keepdims=True)
    return (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]


def _numpy_token_loss(logits, targets, smoothing=0.0, z=0.0):
    vocab = logits.shape[-1]
    log_probs = logits - _log_z(logits)[..., None]
    soft = np.full(logits.shape, smoothing / (vocab - 1))
    np.put_along_axis(soft, targets[..., None], 1.0 - smoothing, axis=-1)
    entropy = 0.0
    if smoothing:
        low = smoothing / (vocab - 1)
        entropy = -((1 - smoothing) * np.log(1 - smoothing) + (vocab - 1) * low * np.log(low))
    return -(soft * log_probs).sum(-1) - entropy + z * _log_z(logits) ** 2


def test_plain_cross_entropy_is_minus_log_softmax_of_the_target():
    loss, z_loss = losses.token_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(TARGETS))
    expected = _log_z(LOGITS) - np.take_along_axis(LOGITS, TARGETS[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert np.all(np.asarray(z_loss) == 0)


def test_z_loss_adds_coefficient_times_log_z_squared():
    loss, z_loss = losses.token_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(TARGETS), z_loss=1e-4)
    np.testing.assert_allclose(z_loss, 1e-4 * _log_z(LOGITS) ** 2, rtol=1e-5)
    np.testing.assert_allclose(loss, _numpy_token_loss(LOGITS, TARGETS, z=1e-4), rtol=1e-5)


def test_label_smoothing_matches_soft_target_cross_entropy_minus_its_entropy():
    loss, _ = losses.token_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(TARGETS),
                                         label_smoothing=0.1)
    np.testing.assert_allclose(loss, _numpy_token_loss(LOGITS, TARGETS, smoothing=0.1), rtol=1e-5,
                               atol=1e-6)


def test_label_smoothed_loss_is_zero_at_the_soft_target_distribution():
    vocab, smoothing = 7, 0.2
    soft = np.full((1, vocab), smoothing / (vocab - 1))
    soft[0, 4] = 1 - smoothing
    loss, _ = losses.token_cross_entropy(jnp.asarray(np.log(soft), jnp.float32),
                                         jnp.array([4]), label_smoothing=smoothing)
    assert abs(float(loss[0])) < 1e-5


def test_weighted_sum_without_a_factor_is_not_normalised():
    total, total_z, weight_sum = losses.weighted_cross_entropy(
        jnp.asarray(LOGITS), jnp.asarray(TARGETS), jnp.asarray(WEIGHTS), z_loss=1e-4)
    per_token = _numpy_token_loss(LOGITS, TARGETS, z=1e-4)
    assert float(total) == pytest.approx(float((per_token * WEIGHTS).sum()), rel=1e-5)
    assert float(total_z) == pytest.approx(float((1e-4 * _log_z(LOGITS) ** 2 * WEIGHTS).sum()),
                                           rel=1e-5)
    assert float(weight_sum) == 5.0


def test_numeric_factor_divides_loss_and_z_loss():
    plain = losses.weighted_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(TARGETS),
                                          jnp.asarray(WEIGHTS), z_loss=1e-4)
    scaled = losses.weighted_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(TARGETS),
                                           jnp.asarray(WEIGHTS), z_loss=1e-4,
                                           loss_normalizing_factor=233472.0)
    assert float(scaled[0]) == pytest.approx(float(plain[0]) / 233472.0, rel=1e-6)
    assert float(scaled[1]) == pytest.approx(float(plain[1]) / 233472.0, rel=1e-6)


def test_num_real_target_tokens_divides_by_the_weight_sum():
    batch = {"decoder_target_tokens": TARGETS, "decoder_loss_weights": WEIGHTS}
    factor, weights = losses.loss_normalizing_factor_and_weights("NUM_REAL_TARGET_TOKENS", batch)
    assert float(factor) == 5.0
    total, _, _ = losses.weighted_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(TARGETS), weights,
                                                loss_normalizing_factor=factor)
    per_token = _numpy_token_loss(LOGITS, TARGETS)
    assert float(total) == pytest.approx(float(per_token[WEIGHTS > 0].mean()), rel=1e-5)


def test_num_real_target_tokens_without_loss_weights_counts_non_padding_targets():
    factor, weights = losses.loss_normalizing_factor_and_weights("num_real_target_tokens",
                                                                 {"decoder_target_tokens": TARGETS})
    assert float(factor) == 5.0
    np.testing.assert_array_equal(weights, WEIGHTS)


def test_num_total_target_tokens_counts_padding_too():
    factor, _ = losses.loss_normalizing_factor_and_weights(
        "NUM_TOTAL_TARGET_TOKENS", {"decoder_target_tokens": TARGETS})
    assert factor == 8.0


def test_average_per_sequence_is_the_mean_of_per_sequence_means():
    batch = {"decoder_target_tokens": TARGETS, "decoder_loss_weights": WEIGHTS}
    factor, weights = losses.loss_normalizing_factor_and_weights("AVERAGE_PER_SEQUENCE", batch)
    total, _, _ = losses.weighted_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(TARGETS), weights,
                                                loss_normalizing_factor=factor)
    per_token = _numpy_token_loss(LOGITS, TARGETS)
    expected = (per_token[0, :3].mean() + per_token[1, :2].mean()) / 2
    assert float(factor) == pytest.approx(2.0)
    assert float(total) == pytest.approx(float(expected), rel=1e-5)


def test_average_per_sequence_treats_each_packed_segment_as_a_sequence():
    targets = np.array([[3, 1, 6, 4, 2, 0]], np.int32)
    segments = np.array([[1, 1, 2, 2, 2, 0]], np.int32)
    logits = RNG.normal(0, 2, (1, 6, 7)).astype(np.float32)
    batch = {"decoder_target_tokens": targets, "decoder_segment_ids": segments,
             "decoder_loss_weights": (targets > 0).astype(np.float32)}
    factor, weights = losses.loss_normalizing_factor_and_weights("AVERAGE_PER_SEQUENCE", batch)
    np.testing.assert_allclose(weights, [[1 / 2, 1 / 2, 1 / 3, 1 / 3, 1 / 3, 0]], rtol=1e-6)
    total, _, _ = losses.weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), weights,
                                                loss_normalizing_factor=factor)
    per_token = _numpy_token_loss(logits, targets)
    expected = (per_token[0, :2].mean() + per_token[0, 2:5].mean()) / 2
    assert float(total) == pytest.approx(float(expected), rel=1e-5)


def test_unknown_factor_name_is_rejected():
    with pytest.raises(ValueError, match="NUM_REAL_TARGET_TOKENS"):
        losses.loss_normalizing_factor_and_weights("PER_TOKEN", {"decoder_target_tokens": TARGETS})


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="do not match"):
        losses.weighted_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(TARGETS[..., None]))
