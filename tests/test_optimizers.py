"""Adafactor with T5X's settings, learning-rate schedules, and gradient accumulation over microbatches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from instructrec_jax import optimizers, train_state
from instructrec_jax.model import losses


def reference_adafactor(params, grads_per_step, lr, *, decay=0.8, eps1=1e-30, eps2=1e-3, clip=1.0):
    """Adafactor (Shazeer & Stern 2018) as T5X configures it, written out in numpy, one tensor."""
    p = np.asarray(params, np.float64)
    factored = p.ndim == 2 and min(p.shape) >= 128
    v_row = np.zeros(p.shape[0]) if factored else None
    v_col = np.zeros(p.shape[1]) if factored else None
    v = None if factored else np.zeros_like(p)
    for t, g in enumerate(grads_per_step, start=1):
        g = np.asarray(g, np.float64)
        beta = 1.0 - t ** -decay
        g2 = g * g + eps1
        if factored:
            v_row = beta * v_row + (1 - beta) * g2.mean(axis=1)
            v_col = beta * v_col + (1 - beta) * g2.mean(axis=0)
            v_hat = np.outer(v_row, v_col) / v_row.mean()
        else:
            v = beta * v + (1 - beta) * g2
            v_hat = v
        u = g / np.sqrt(v_hat)
        u = u / max(1.0, np.sqrt(np.mean(u * u)) / clip)
        u = u * max(eps2, np.sqrt(np.mean(p * p)))
        p = p - lr * u
    return p


@pytest.mark.parametrize("shape", [(256, 130), (64, 64), (300,)], ids=["factored", "small", "vector"])
def test_adafactor_matches_the_written_out_algorithm(shape):
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=shape) * 0.05, jnp.float32)}
    grads = [rng.normal(size=shape) * scale for scale in (1.0, 3.0, 0.01)]
    opt = optimizers.adafactor(1e-2)
    state = train_state.init_train_state(params, opt)
    current, opt_state = params, state.opt_state

    @jax.jit
    def update(current, opt_state, g, step):
        direction, opt_state = opt.transform.update({"w": g}, opt_state, current)
        return optimizers.apply_updates(current, direction, opt.learning_rate(step)), opt_state

    for step, g in enumerate(grads):
        current, opt_state = update(current, opt_state, jnp.asarray(g, jnp.float32), step)
    expected = reference_adafactor(params["w"], grads, 1e-2)
    np.testing.assert_allclose(np.asarray(current["w"]), expected, rtol=2e-5, atol=1e-7)


def test_adafactor_factors_only_matrices_with_both_dims_at_least_128():
    params = {"big": jnp.zeros((256, 512)), "narrow": jnp.zeros((512, 64)), "bias": jnp.zeros((512,))}
    factored_state = optimizers.adafactor().transform.init(params)[0]
    assert factored_state.v_row["big"].shape == (256,) and factored_state.v_col["big"].shape == (512,)
    assert factored_state.v["big"].shape == (1,)
    assert factored_state.v["narrow"].shape == (512, 64)
    assert factored_state.v["bias"].shape == (512,)


def test_adafactor_update_is_clipped_to_unit_rms_times_parameter_scale():
    params = {"w": jnp.full((4, 4), 2.0)}  # RMS(param) = 2
    opt = optimizers.adafactor(1.0)
    state = opt.transform.init(params)
    direction, _ = opt.transform.update({"w": jnp.arange(16.0).reshape(4, 4) + 1.0}, state, params)
    rms = float(jnp.sqrt(jnp.mean(direction["w"] ** 2)))
    assert rms == pytest.approx(2.0, rel=1e-5)
    assert bool(jnp.all(direction["w"] < 0))  # descent direction for positive gradients


def test_constant_schedule_is_the_fine_tuning_default():
    schedule = optimizers.learning_rate_schedule()
    assert [float(schedule(s)) for s in (0, 10, 10**6)] == pytest.approx([1e-3] * 3)


def test_rsqrt_decay_with_warmup_follows_t5x_pretraining_schedule():
    schedule = optimizers.learning_rate_schedule("constant * rsqrt_decay", base_learning_rate=1.0,
                                                 warmup_steps=10000)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(10000)) == pytest.approx(0.01)
    assert float(schedule(40000)) == pytest.approx(0.005)


def test_linear_warmup_then_linear_decay_reaches_zero_at_total_steps():
    schedule = optimizers.learning_rate_schedule("constant * linear_warmup * linear_decay",
                                                 base_learning_rate=1e-3, warmup_steps=100,
                                                 total_steps=1100)
    assert float(schedule(50)) == pytest.approx(5e-4)
    assert float(schedule(100)) == pytest.approx(1e-3)
    assert float(schedule(600)) == pytest.approx(5e-4)
    assert float(schedule(1100)) == pytest.approx(0.0)


def test_cosine_decay_halves_midway_through_the_cycle():
    schedule = optimizers.learning_rate_schedule("constant * cosine_decay", base_learning_rate=2.0,
                                                 warmup_steps=0, steps_per_cycle=1000)
    assert float(schedule(0)) == pytest.approx(2.0)
    assert float(schedule(500)) == pytest.approx(1.0, abs=1e-6)


def test_unknown_schedule_factor_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown learning-rate factor 'warmup'.*rsqrt_decay"):
        optimizers.learning_rate_schedule("constant * warmup")


def test_train_step_uses_the_learning_rate_of_the_absolute_step():
    opt = optimizers.adafactor(optimizers.learning_rate_schedule(
        "constant * rsqrt_decay", base_learning_rate=1.0, warmup_steps=100))
    params = {"w": jnp.ones((3,))}
    step_fn = train_state.make_train_step(_toy_loss, opt)
    state = train_state.init_train_state(params, opt, step=2500)
    _, metrics = step_fn(state, _toy_batch(4, np.random.default_rng(0)))
    assert float(metrics["learning_rate"]) == pytest.approx(1 / 50)


# -- gradient accumulation ------------------------------------------------------------------

VOCAB = 11


def _toy_params(rng):
    return {"embed": jnp.asarray(rng.normal(size=(VOCAB, 6)), jnp.float32),
            "out": jnp.asarray(rng.normal(size=(6, VOCAB)), jnp.float32)}


def _toy_batch(rows, rng, length=5):
    targets = rng.integers(1, VOCAB, size=(rows, length))
    targets[:, -2:] *= rng.integers(0, 2, size=(rows, 1))  # some sequences end early (padding)
    segments = np.where(targets > 0, 1 + (np.arange(length) >= 2), 0)  # two packed segments
    return {
        "encoder_input_tokens": jnp.asarray(rng.integers(1, VOCAB, size=(rows, 4))),
        "decoder_input_tokens": jnp.asarray(np.roll(targets, 1, axis=1)),
        "decoder_target_tokens": jnp.asarray(targets),
        "decoder_loss_weights": jnp.asarray((targets > 0).astype(np.float32)),
        "decoder_segment_ids": jnp.asarray(segments),
    }


def _toy_model_loss(factor_option):
    """A bag-of-words model with the real model's loss and normalising-factor semantics."""

    def loss_fn(params, batch, rng):
        del rng
        context = params["embed"][batch["encoder_input_tokens"]].mean(axis=1)
        hidden = context[:, None, :] + params["embed"][batch["decoder_input_tokens"]]
        logits = hidden @ params["out"]
        factor, weights = losses.loss_normalizing_factor_and_weights(factor_option, batch)
        loss, z, weight_sum = losses.weighted_cross_entropy(
            logits, batch["decoder_target_tokens"], weights, z_loss=1e-4,
            loss_normalizing_factor=factor)
        correct = (jnp.argmax(logits, -1) == batch["decoder_target_tokens"]) * batch["decoder_loss_weights"]
        accuracy = correct.sum() / batch["decoder_loss_weights"].sum()
        return loss, {"z_loss": z, "accuracy": accuracy, "num_tokens": batch["decoder_loss_weights"].sum()}

    return loss_fn


def _toy_loss(params, batch, rng):
    del batch, rng
    return jnp.sum(params["w"] ** 2), {}


@pytest.mark.parametrize("factor", [None, 233472.0, "NUM_REAL_TARGET_TOKENS", "AVERAGE_PER_SEQUENCE"])
def test_microbatch_accumulation_equals_one_big_batch(factor):
    rng = np.random.default_rng(1)
    params, batch = _toy_params(rng), _toy_batch(8, rng)
    loss_fn = _toy_model_loss(factor)
    full = jax.jit(lambda p, b: train_state.loss_and_grads(
        loss_fn, p, b, None, loss_normalizing_factor=factor))(params, batch)
    micro = jax.jit(lambda p, b: train_state.loss_and_grads(
        loss_fn, p, b, jax.random.PRNGKey(0), num_microbatches=4,
        loss_normalizing_factor=factor))(params, batch)
    np.testing.assert_allclose(micro[0], full[0], rtol=1e-5)
    for name in ("embed", "out"):
        np.testing.assert_allclose(micro[1][name], full[1][name], rtol=1e-4, atol=1e-7)
    for name in ("z_loss", "accuracy", "num_tokens"):
        np.testing.assert_allclose(micro[2][name], full[2][name], rtol=1e-5)


def test_microbatches_take_strided_rows_so_every_data_shard_feeds_each_one():
    batch = {"x": jnp.arange(8)}
    micro = train_state.split_microbatches(batch, 4)
    assert micro["x"].tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]]


def test_batch_not_divisible_into_microbatches_is_rejected():
    with pytest.raises(ValueError, match="6 rows cannot be split into 4 microbatches"):
        train_state.split_microbatches({"x": jnp.arange(6)}, 4)
